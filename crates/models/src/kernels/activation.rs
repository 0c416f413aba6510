//! Elementwise activations and their derivatives, computed exactly as
//! candle's ops compute them (the layers' tests check it), and a candle
//! custom op with a one-pass gradient.

/// An elementwise nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// `x`.
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `x` for `x > 0`, `slope·x` otherwise.
    LeakyRelu(f64),
    /// Into (−1, 1).
    Tanh,
    /// `1 / (1 + e^−x)`, into (0, 1).
    Sigmoid,
}

/// `act(x)` for one value, with the same f32 operations as the candle layer.
#[inline(always)]
pub fn forward(act: Activation, x: f32) -> f32 {
    match act {
        Activation::Identity => x,
        Activation::Relu => x.max(0.0),
        Activation::LeakyRelu(slope) => {
            // slope·x + (1 − slope)·relu(x), as `layers::activation::leaky_relu`.
            x * slope as f32 + x.max(0.0) * (1.0 - slope) as f32
        }
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
    }
}

/// `d act / dx` at input `x` with output `y = act(x)` (candle's conventions:
/// relu's derivative is 1 at 0).
#[inline(always)]
pub fn derivative(act: Activation, x: f32, y: f32) -> f32 {
    match act {
        Activation::Identity => 1.0,
        Activation::Relu => {
            if x >= 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Activation::LeakyRelu(slope) => {
            let relu = if x >= 0.0 { (1.0 - slope) as f32 } else { 0.0 };
            slope as f32 + relu
        }
        Activation::Tanh => 1.0 - y * y,
        Activation::Sigmoid => y * (1.0 - y),
    }
}

/// `out[j] = act(x[j])`, one tight loop per activation.
#[inline(always)]
pub fn forward_slice(act: Activation, x: &[f32], out: &mut [f32]) {
    let out = &mut out[..x.len()];
    match act {
        Activation::LeakyRelu(slope) => {
            let (a, b) = (slope as f32, (1.0 - slope) as f32);
            for (o, v) in out.iter_mut().zip(x) {
                *o = *v * a + v.max(0.0) * b;
            }
        }
        Activation::Relu => {
            for (o, v) in out.iter_mut().zip(x) {
                *o = v.max(0.0);
            }
        }
        _ => {
            for (o, v) in out.iter_mut().zip(x) {
                *o = forward(act, *v);
            }
        }
    }
}

/// `d[j] *= act'(x[j])` given outputs `y = act(x)`, one tight loop per activation.
#[inline(always)]
pub fn backward_slice(act: Activation, d: &mut [f32], x: &[f32], y: &[f32]) {
    let (x, y) = (&x[..d.len()], &y[..d.len()]);
    match act {
        Activation::Identity => {}
        Activation::LeakyRelu(slope) => {
            let (a, b) = (slope as f32, (1.0 - slope) as f32);
            for (g, v) in d.iter_mut().zip(x) {
                *g *= a + if *v >= 0.0 { b } else { 0.0 };
            }
        }
        Activation::Relu => {
            for (g, v) in d.iter_mut().zip(x) {
                *g *= if *v >= 0.0 { 1.0 } else { 0.0 };
            }
        }
        _ => {
            for j in 0..d.len() {
                d[j] *= derivative(act, x[j], y[j]);
            }
        }
    }
}

/// Elements per parallel task of [`apply`]: small tensors run in one.
const CHUNK: usize = 16 * 1024;

/// `act` as one candle custom op on f32 CPU tensors: one pass forward, one
/// for the gradient (candle's own leaky ReLU is four passes forward and
/// about ten backward).
struct Fused(Activation);

/// The gradient of [`Fused`] on `(grad, x, y)`.
struct FusedGrad(Activation);

fn f32_slice<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
) -> candle_core::Result<&'a [f32]> {
    super::storage::operand(storage, layout, "activation")
}

impl candle_core::CustomOp1 for Fused {
    fn name(&self) -> &'static str {
        "kusari-activation"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let x = f32_slice(s, l)?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(y, x)| forward_slice(self.0, x, y));
        Ok((candle_core::CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(
        &self,
        x: &candle_core::Tensor,
        y: &candle_core::Tensor,
        grad: &candle_core::Tensor,
    ) -> candle_core::Result<Option<candle_core::Tensor>> {
        let grad = grad.contiguous()?;
        Ok(Some(super::gradient_op3(&grad, x, y, FusedGrad(self.0))?))
    }
}

impl candle_core::CustomOp3 for FusedGrad {
    fn name(&self) -> &'static str {
        "kusari-activation-grad"
    }

    refuse_second_order!(3);

    fn cpu_fwd(
        &self,
        gs: &candle_core::CpuStorage,
        gl: &candle_core::Layout,
        xs: &candle_core::CpuStorage,
        xl: &candle_core::Layout,
        ys: &candle_core::CpuStorage,
        yl: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let (g, x, y) = (f32_slice(gs, gl)?, f32_slice(xs, xl)?, f32_slice(ys, yl)?);
        if g.len() != x.len() || y.len() != x.len() {
            candle_core::bail!("activation gradient: mismatched operands");
        }
        let mut d = g.to_vec();
        d.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(y.par_chunks(CHUNK)))
            .for_each(|(d, (x, y))| backward_slice(self.0, d, x, y));
        Ok((candle_core::CpuStorage::F32(d), gl.shape().clone()))
    }
}

/// `act(x)` for an f32 CPU tensor as one fused, differentiable op; the
/// values and gradients of the candle layer (same f32 operations).
pub fn apply(act: Activation, x: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
    x.contiguous()?.apply_op1(Fused(act))
}
