//! 2-D convolution and transposed convolution on `[N, C, H, W]`, initialized
//! as Chainer's `Convolution2D` / `Deconvolution2D` (fan-in `C_in·kh·kw`).
//!
//! For f32 on the CPU both run on kusari's patch-product kernels
//! ([`crate::kernels::conv`]), whose forward and gradients the tests below
//! check against candle's; elsewhere (f64, CUDA) on candle's own, which
//! the tests check against finite differences.

use anyhow::Result;
use candle_core::{Device, Tensor, Var};
use kusari_trainer::{ParamStore, Rng};

use super::init;
use super::spectral::{effective_weight, SpectralNorm, WeightLayout};
use crate::config::Init;
use crate::kernels::conv as cpu_conv;

/// Kernel size, stride and padding of a square convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Side of the square kernel.
    pub kernel: usize,
    /// Step between kernel positions.
    pub stride: usize,
    /// Zeros added on each side (conv) or cropped from each side (deconv).
    pub padding: usize,
}

impl ConvGeometry {
    /// 4×4, stride 2, padding 1: halves (conv) or doubles (deconv) the size.
    pub const HALVE_OR_DOUBLE: ConvGeometry = ConvGeometry {
        kernel: 4,
        stride: 2,
        padding: 1,
    };
}

/// Convolution with weight `[C_out, C_in, k, k]` and bias `[C_out]`.
#[derive(Clone)]
pub struct Conv2d {
    weight: Var,
    bias: Var,
    geometry: ConvGeometry,
    spectral: Option<SpectralNorm>,
}

impl Conv2d {
    /// Registers `weight` and `bias` in `params`, the weight drawn from `init` with fan-in `inputs·k²`.
    pub fn new(
        params: &ParamStore,
        inputs: usize,
        outputs: usize,
        geometry: ConvGeometry,
        init: &Init,
        rng: &mut Rng,
        device: &Device,
    ) -> Result<Self> {
        let k = geometry.kernel;
        let fan_in = inputs * k * k;
        let weight = params.parameter(
            "weight",
            init::weight((outputs, inputs, k, k), fan_in, init, rng, device)?,
        )?;
        let bias = params.parameter("bias", init::zeros(outputs, device)?)?;
        Ok(Self {
            weight,
            bias,
            geometry,
            spectral: None,
        })
    }

    /// The same layer with its weight spectrally normalized, the power
    /// iteration's vectors registered in `params` and drawn from `rng`.
    pub fn with_spectral_norm(mut self, params: &ParamStore, rng: &mut Rng) -> Result<Self> {
        let layout = WeightLayout::Conv;
        self.spectral = Some(SpectralNorm::for_weight(params, layout, &self.weight, rng)?);
        Ok(self)
    }

    /// `[N, C_in, H, W]` → `[N, C_out, H', W']` (in evaluation mode, if
    /// spectrally normalized).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self
            .forward_group(std::slice::from_ref(x), false)?
            .remove(0))
    }

    /// Every batch of `xs` through the layer, with one weight for them all
    /// (one power iteration in training under spectral normalization).
    pub fn forward_group(&self, xs: &[Tensor], train: bool) -> Result<Vec<Tensor>> {
        let w = effective_weight(self.spectral.as_ref(), &self.weight, train)?;
        xs.iter()
            .map(|x| conv2d(x, &w, self.bias.as_tensor(), self.geometry))
            .collect()
    }
}

/// Transposed convolution with weight `[C_in, C_out, k, k]` and bias `[C_out]`.
#[derive(Clone)]
pub struct Deconv2d {
    weight: Var,
    bias: Var,
    geometry: ConvGeometry,
    spectral: Option<SpectralNorm>,
}

impl Deconv2d {
    /// Registers `weight` and `bias` in `params`, the weight drawn from `init` with fan-in `inputs·k²`.
    pub fn new(
        params: &ParamStore,
        inputs: usize,
        outputs: usize,
        geometry: ConvGeometry,
        init: &Init,
        rng: &mut Rng,
        device: &Device,
    ) -> Result<Self> {
        let k = geometry.kernel;
        let fan_in = inputs * k * k;
        let weight = params.parameter(
            "weight",
            init::weight((inputs, outputs, k, k), fan_in, init, rng, device)?,
        )?;
        let bias = params.parameter("bias", init::zeros(outputs, device)?)?;
        Ok(Self {
            weight,
            bias,
            geometry,
            spectral: None,
        })
    }

    /// The same layer with its weight spectrally normalized, the power
    /// iteration's vectors registered in `params` and drawn from `rng`.
    pub fn with_spectral_norm(mut self, params: &ParamStore, rng: &mut Rng) -> Result<Self> {
        let layout = WeightLayout::Deconv;
        self.spectral = Some(SpectralNorm::for_weight(params, layout, &self.weight, rng)?);
        Ok(self)
    }

    /// `[N, C_in, H, W]` → `[N, C_out, H', W']` (in evaluation mode, if
    /// spectrally normalized).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self
            .forward_group(std::slice::from_ref(x), false)?
            .remove(0))
    }

    /// Every batch of `xs` through the layer, with one weight for them all
    /// (one power iteration in training under spectral normalization).
    pub fn forward_group(&self, xs: &[Tensor], train: bool) -> Result<Vec<Tensor>> {
        let w = effective_weight(self.spectral.as_ref(), &self.weight, train)?;
        xs.iter()
            .map(|x| deconv2d(x, &w, self.bias.as_tensor(), self.geometry))
            .collect()
    }
}

fn add_channel_bias(y: Tensor, bias: &Tensor) -> Result<Tensor> {
    if crate::kernels::cpu_kernels_apply(&y) {
        return Ok(cpu_conv::add_channel_bias(&y, bias)?);
    }
    let c = bias.dim(0)?;
    Ok(y.broadcast_add(&bias.reshape((1, c, 1, 1))?)?)
}

impl ConvGeometry {
    fn window(self) -> cpu_conv::Window {
        cpu_conv::Window {
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
        }
    }
}

/// Convolution plus per-channel bias (kusari's patch-product kernels for
/// f32 on the CPU, candle's convolution elsewhere).
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: &Tensor, g: ConvGeometry) -> Result<Tensor> {
    let y = if crate::kernels::cpu_kernels_apply(x) {
        cpu_conv::conv2d(x, weight, g.window())?
    } else {
        x.conv2d(weight, g.padding, g.stride, 1, 1)?
    };
    add_channel_bias(y, bias)
}

/// Transposed convolution plus per-channel bias (as [`conv2d`] chooses).
pub fn deconv2d(x: &Tensor, weight: &Tensor, bias: &Tensor, g: ConvGeometry) -> Result<Tensor> {
    let y = if crate::kernels::cpu_kernels_apply(x) {
        cpu_conv::deconv2d(x, weight, g.window())?
    } else {
        x.conv_transpose2d(weight, g.padding, 0, g.stride, 1)?
    };
    add_channel_bias(y, bias)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    type Op = fn(&Tensor, &Tensor, &Tensor, ConvGeometry) -> Result<Tensor>;

    /// Checks d(sum(op(x, w, b) · r))/d{x, w, b} against central differences, in f64.
    fn check_gradients(
        op: Op,
        x_shape: (usize, usize, usize, usize),
        w_shape: (usize, usize, usize, usize),
        c_out: usize,
    ) -> Result<()> {
        let dev = Device::Cpu;
        let g = ConvGeometry::HALVE_OR_DOUBLE;
        let mut rng = Rng::new(5);
        let x = Var::from_tensor(
            &rng.normal_tensor(x_shape, 0.0, 1.0, &dev)?
                .to_dtype(DType::F64)?,
        )?;
        let w = Var::from_tensor(
            &rng.normal_tensor(w_shape, 0.0, 1.0, &dev)?
                .to_dtype(DType::F64)?,
        )?;
        let b = Var::from_tensor(
            &rng.normal_tensor(c_out, 0.0, 1.0, &dev)?
                .to_dtype(DType::F64)?,
        )?;
        let out_shape = op(x.as_tensor(), w.as_tensor(), b.as_tensor(), g)?
            .shape()
            .clone();
        let r = rng
            .normal_tensor(out_shape, 0.0, 1.0, &dev)?
            .to_dtype(DType::F64)?;
        let loss = |x: &Tensor, w: &Tensor, b: &Tensor| -> Result<f64> {
            Ok((op(x, w, b, g)? * &r)?.sum_all()?.to_scalar::<f64>()?)
        };
        let grads = (op(x.as_tensor(), w.as_tensor(), b.as_tensor(), g)? * &r)?
            .sum_all()?
            .backward()?;
        let h = 1e-5;
        for (which, var) in [("x", &x), ("w", &w), ("b", &b)] {
            let analytic: Vec<f64> = grads.get(var).expect("gradient").flatten_all()?.to_vec1()?;
            let base: Vec<f64> = var.flatten_all()?.to_vec1()?;
            for i in 0..base.len() {
                let shifted = |d: f64| -> Result<Tensor> {
                    let mut v = base.clone();
                    v[i] += d;
                    Ok(Tensor::from_vec(v, var.shape(), &dev)?)
                };
                let f = |t: Tensor| -> Result<f64> {
                    match which {
                        "x" => loss(&t, w.as_tensor(), b.as_tensor()),
                        "w" => loss(x.as_tensor(), &t, b.as_tensor()),
                        _ => loss(x.as_tensor(), w.as_tensor(), &t),
                    }
                };
                let numeric = (f(shifted(h)?)? - f(shifted(-h)?)?) / (2.0 * h);
                assert!(
                    (numeric - analytic[i]).abs() <= 1e-6 * (1.0 + numeric.abs()),
                    "d/d{which}[{i}]: numeric {numeric} analytic {}",
                    analytic[i]
                );
            }
        }
        Ok(())
    }

    #[test]
    fn deconv_gradients_match_finite_differences() -> Result<()> {
        // [2, 3, 3, 3] → [2, 2, 6, 6]
        check_gradients(deconv2d, (2, 3, 3, 3), (3, 2, 4, 4), 2)
    }

    #[test]
    fn conv_gradients_match_finite_differences() -> Result<()> {
        // [2, 2, 6, 6] → [2, 3, 3, 3]
        check_gradients(conv2d, (2, 2, 6, 6), (3, 2, 4, 4), 3)
    }

    #[test]
    fn shapes_halve_and_double() -> Result<()> {
        let dev = Device::Cpu;
        let params = ParamStore::new();
        let mut rng = Rng::new(0);
        let init = Init::Normal { std: 0.02 };
        let g = ConvGeometry::HALVE_OR_DOUBLE;
        let conv = Conv2d::new(&params.sub("c"), 1, 4, g, &init, &mut rng, &dev)?;
        let deconv = Deconv2d::new(&params.sub("d"), 4, 1, g, &init, &mut rng, &dev)?;
        let x = Tensor::zeros((2, 1, 28, 28), DType::F32, &dev)?;
        let h = conv.forward(&x)?;
        assert_eq!(h.dims(), &[2, 4, 14, 14]);
        assert_eq!(deconv.forward(&h)?.dims(), &[2, 1, 28, 28]);
        Ok(())
    }
}
