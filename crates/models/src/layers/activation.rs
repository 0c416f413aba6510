//! Elementwise activations.

use anyhow::Result;
use candle_core::Tensor;

use crate::config::OutputActivation;
use crate::fast::activation as fused;

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

impl Activation {
    /// The activation of every value of `x` (for f32 on the CPU one fused
    /// custom op with a one-pass gradient, `fast::activation::apply`).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        if *self != Activation::Identity && crate::fast::cpu_kernels_apply(x) {
            return Ok(fused::apply(*self, x)?);
        }
        self.apply_candle_ops(x)
    }

    /// The same on candle's own ops, whatever the device (what the fused
    /// CPU op is tested against).
    pub fn apply_candle_ops(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match *self {
            Activation::Identity => x.clone(),
            Activation::Relu => x.relu()?,
            Activation::LeakyRelu(slope) => leaky_relu(x, slope)?,
            Activation::Tanh => x.tanh()?,
            Activation::Sigmoid => candle_nn::ops::sigmoid(x)?,
        })
    }
}

impl From<OutputActivation> for Activation {
    fn from(a: OutputActivation) -> Self {
        match a {
            OutputActivation::Identity => Activation::Identity,
            OutputActivation::Tanh => Activation::Tanh,
            OutputActivation::Sigmoid => Activation::Sigmoid,
        }
    }
}

/// `slope·x + (1 − slope)·relu(x)`: equal to `max(x, slope·x)` for slopes
/// below 1, with relu's gradient convention (0 at 0) for the kink.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    Ok(((x * slope)? + (x.relu()? * (1.0 - slope))?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn values_and_gradients() -> Result<()> {
        let x = Var::new(&[-2f32, -0.5, 0.5, 3.0], &Device::Cpu)?;
        let y = Activation::LeakyRelu(0.2).apply(x.as_tensor())?;
        assert_eq!(y.to_vec1::<f32>()?, vec![-0.4, -0.1, 0.5, 3.0]);
        let g = y.sum_all()?.backward()?;
        let gx = g.get(&x).unwrap().to_vec1::<f32>()?;
        for (got, want) in gx.iter().zip([0.2f32, 0.2, 1.0, 1.0]) {
            assert!((got - want).abs() < 1e-6, "{gx:?}");
        }
        let s = Activation::from(OutputActivation::Sigmoid).apply(x.as_tensor())?;
        assert!((s.to_vec1::<f32>()?[2] - 1.0 / (1.0 + (-0.5f32).exp())).abs() < 1e-6);
        let t = Activation::Tanh.apply(x.as_tensor())?;
        assert!((t.to_vec1::<f32>()?[3] - 3f32.tanh()).abs() < 1e-6);
        Ok(())
    }
}
