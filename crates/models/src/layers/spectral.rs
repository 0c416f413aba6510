//! Spectral normalization (Miyato et al. 2018): a layer uses its weight
//! divided by an estimate σ of the weight's largest singular value, so the
//! layer is (about) 1-Lipschitz; the estimate improves by one power
//! iteration per training forward pass.
//!
//! The weight is seen as a matrix `A` (`[p, q]`): a Linear's `[in, out]`
//! weight as it is; a convolution's `[out, in, k, k]` and a transposed
//! convolution's `[in, out, k, k]` as the transpose of their `[out, in·k·k]`
//! reshape (PyTorch's convention: the output channels are the rows of its
//! weight matrix). Each training pass then takes, with `u` (`[q]`) and `v`
//! (`[p]`) held constant:
//!
//! ```text
//! v ← normalize(A u),   u ← normalize(Aᵀ v),   σ = vᵀ A u,   W' = W / σ
//! ```
//!
//! σ is differentiated through `A` (not through `u` and `v`), as PyTorch and
//! Chainer do. `u` and `v` are buffers (`sn_u`, `sn_v`): snapshots keep
//! them, and evaluation uses them without iterating.

use anyhow::Result;
use candle_core::{Device, Tensor, Var};
use kusari_trainer::{ParamStore, Rng};

use crate::kernels::spectral::MIN_NORM;

/// How a layer's weight maps to the matrix `A`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// `[in, out]`: `A = W`.
    Linear,
    /// `[out, in, k, k]`: `A = W.reshape(out, in·k·k)ᵀ`.
    Conv,
    /// `[in, out, k, k]`: `A = W.permute(1, 0, 2, 3).reshape(out, in·k·k)ᵀ`.
    Deconv,
}

impl WeightLayout {
    /// `(p, q)`: the sizes of `v` and `u` for weight dims `dims`.
    fn sizes(self, dims: &[usize]) -> (usize, usize) {
        let rest: usize = dims.iter().skip(2).product();
        match self {
            WeightLayout::Linear => (dims[0], dims[1]),
            WeightLayout::Conv => (dims[1] * rest, dims[0]),
            WeightLayout::Deconv => (dims[0] * rest, dims[1]),
        }
    }

    /// `A` for the weight `w`.
    fn matrix(self, w: &Tensor) -> Result<Tensor> {
        let dims = w.dims();
        let (p, q) = self.sizes(dims);
        Ok(match self {
            WeightLayout::Linear => w.clone(),
            WeightLayout::Conv => w.reshape((q, p))?.t()?,
            WeightLayout::Deconv => w.transpose(0, 1)?.contiguous()?.reshape((q, p))?.t()?,
        })
    }
}

/// The power iteration's state for one weight.
#[derive(Clone)]
pub struct SpectralNorm {
    u: Var,
    v: Var,
    layout: WeightLayout,
}

impl SpectralNorm {
    /// Registers `sn_u` and `sn_v` (unit vectors drawn from `rng`) in
    /// `params` for a weight of dims `weight_dims`.
    pub fn new(
        params: &ParamStore,
        layout: WeightLayout,
        weight_dims: &[usize],
        rng: &mut Rng,
        device: &Device,
    ) -> Result<Self> {
        let (p, q) = layout.sizes(weight_dims);
        let unit = |n: usize, rng: &mut Rng| -> Result<Tensor> {
            normalize(&rng.normal_tensor(n, 0.0, 1.0, device)?)
        };
        Ok(Self {
            u: params.buffer("sn_u", unit(q, rng)?)?,
            v: params.buffer("sn_v", unit(p, rng)?)?,
            layout,
        })
    }

    /// Registers the vectors for `weight` (on its device).
    pub fn for_weight(
        params: &ParamStore,
        layout: WeightLayout,
        weight: &Var,
        rng: &mut Rng,
    ) -> Result<Self> {
        Self::new(params, layout, weight.dims(), rng, weight.device())
    }

    /// `u` (`[q]`) and `v` (`[p]`).
    pub fn vectors(&self) -> (&Var, &Var) {
        (&self.u, &self.v)
    }

    /// `W/σ`: in training after one power iteration (which updates `u` and
    /// `v`), in evaluation with the stored vectors.
    pub fn normalize(&self, w: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            let a = self.layout.matrix(&w.detach())?;
            let v = normalize(&a.matmul(&self.u.as_tensor().unsqueeze(1)?)?.squeeze(1)?)?;
            let u = normalize(&v.unsqueeze(0)?.matmul(&a)?.squeeze(0)?)?;
            self.v.set(&v)?;
            self.u.set(&u)?;
        }
        let a = self.layout.matrix(w)?;
        let (u, v) = (self.u.as_tensor().detach(), self.v.as_tensor().detach());
        let sigma = v
            .unsqueeze(0)?
            .matmul(&a)?
            .matmul(&u.unsqueeze(1)?)?
            .reshape(())?;
        Ok(w.broadcast_div(&sigma)?)
    }
}

/// The weight a layer computes with: `weight / σ` under spectral
/// normalization (one power iteration first in training), else `weight`.
pub fn effective_weight(
    spectral: Option<&SpectralNorm>,
    weight: &Var,
    train: bool,
) -> Result<Tensor> {
    match spectral {
        Some(sn) => sn.normalize(weight.as_tensor(), train),
        None => Ok(weight.as_tensor().clone()),
    }
}

/// `x / max(‖x‖, MIN_NORM)` for a vector.
fn normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_all()?.sqrt()?.maximum(MIN_NORM)?;
    Ok(x.broadcast_div(&norm)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// σ converges to the largest singular value for each layout, and the
    /// normalized weight's gradient agrees with finite differences.
    #[test]
    fn sigma_converges_and_the_gradient_is_right() -> Result<()> {
        let dev = Device::Cpu;
        for (layout, dims) in [
            (WeightLayout::Linear, vec![5, 3]),
            (WeightLayout::Conv, vec![3, 2, 2, 2]),
            (WeightLayout::Deconv, vec![2, 3, 2, 2]),
        ] {
            let mut rng = Rng::new(1);
            let w = Var::from_tensor(&rng.normal_tensor(dims.as_slice(), 0.0, 1.0, &dev)?)?;
            let sn = SpectralNorm::new(&ParamStore::new(), layout, &dims, &mut rng, &dev)?;
            for _ in 0..100 {
                sn.normalize(w.as_tensor(), true)?;
            }
            // The largest singular value of A: the square root of AᵀA's top
            // eigenvalue, by many plain iterations in f64.
            let a = layout.matrix(w.as_tensor())?.to_dtype(DType::F64)?;
            let ata = a.t()?.matmul(&a)?;
            let mut x = Tensor::ones((ata.dim(0)?, 1), DType::F64, &dev)?;
            for _ in 0..500 {
                let y = ata.matmul(&x)?;
                x = y.broadcast_div(&y.sqr()?.sum_all()?.sqrt()?)?;
            }
            let top = x
                .t()?
                .matmul(&ata)?
                .matmul(&x)?
                .flatten_all()?
                .to_vec1::<f64>()?[0]
                .sqrt();
            let normalized = sn.normalize(w.as_tensor(), false)?;
            let ratio = (w.as_tensor() / &normalized)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            assert!(
                ratio
                    .iter()
                    .all(|r| (f64::from(*r) - top).abs() < 1e-3 * top),
                "{layout:?}: σ {ratio:?} vs {top}"
            );

            // d/dW of Σ c ⊙ W/σ(W), u and v fixed, against central differences.
            let c = rng.normal_tensor(dims.as_slice(), 0.0, 1.0, &dev)?;
            let loss = |w: &Tensor| -> Result<f64> {
                let l = (sn.normalize(w, false)? * &c)?.sum_all()?;
                Ok(f64::from(l.to_scalar::<f32>()?))
            };
            let grad = (sn.normalize(w.as_tensor(), false)? * &c)?
                .sum_all()?
                .backward()?
                .get(&w)
                .expect("a gradient")
                .flatten_all()?
                .to_vec1::<f32>()?;
            let w0: Vec<f32> = w.flatten_all()?.to_vec1()?;
            let h = 1e-2f32;
            for i in [0, w0.len() / 2, w0.len() - 1] {
                let mut plus = w0.clone();
                plus[i] += h;
                let mut minus = w0.clone();
                minus[i] -= h;
                let at = |v: Vec<f32>| Tensor::from_vec(v, dims.as_slice(), &dev);
                let numeric = (loss(&at(plus)?)? - loss(&at(minus)?)?) / (2.0 * f64::from(h));
                assert!(
                    (numeric - f64::from(grad[i])).abs() < 2e-2 * (1.0 + numeric.abs()),
                    "{layout:?}[{i}]: {numeric} vs {}",
                    grad[i]
                );
            }
        }
        Ok(())
    }
}
