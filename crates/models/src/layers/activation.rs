//! Elementwise activations on tensors.

use anyhow::Result;
use candle_core::Tensor;

use crate::config::OutputActivation;
use crate::kernels::activation as fused;
pub use crate::kernels::Activation;

impl Activation {
    /// The activation of every value of `x` (for f32 on the CPU one fused
    /// custom op with a one-pass gradient, `kernels::activation::apply`).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        if *self != Activation::Identity && crate::kernels::cpu_kernels_apply(x) {
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

    use crate::kernels::testing::assert_close;

    /// The CPU kernel's slices and its custom op against candle's own ops:
    /// values and gradients.
    #[test]
    fn the_cpu_kernel_matches_candle_ops() -> Result<()> {
        let xs: Vec<f32> = (0..41)
            .map(|i| (i as f32 - 20.0) * 0.37)
            .chain([0.0])
            .collect();
        let upstream: Vec<f32> = (0..xs.len()).map(|i| ((i * 7) % 5) as f32 - 1.7).collect();
        for act in [
            Activation::Identity,
            Activation::Relu,
            Activation::LeakyRelu(0.2),
            Activation::Tanh,
            Activation::Sigmoid,
        ] {
            let x = Var::new(xs.as_slice(), &Device::Cpu)?;
            let y = act.apply_candle_ops(x.as_tensor())?;
            let u = Tensor::new(upstream.as_slice(), &Device::Cpu)?;
            let grads = (&y * &u)?.sum_all()?.backward()?;
            let want_y: Vec<f32> = y.to_vec1()?;
            let want_g: Vec<f32> = match grads.get(&x) {
                Some(g) => g.to_vec1()?,
                None => upstream.clone(),
            };
            let mut got_y = vec![0f32; xs.len()];
            fused::forward_slice(act, &xs, &mut got_y);
            let mut got_g = upstream.clone();
            fused::backward_slice(act, &mut got_g, &xs, &got_y);
            assert_close(&got_y, &want_y, 1e-5, &format!("{act:?} values"));
            assert_close(&got_g, &want_g, 1e-5, &format!("{act:?} gradients"));

            let op = fused::apply(act, x.as_tensor())?;
            let op_g = (&op * &u)?.sum_all()?.backward()?;
            let op_g: Vec<f32> = op_g.get(&x).expect("a gradient").to_vec1()?;
            assert_close(&op.to_vec1()?, &want_y, 1e-5, &format!("{act:?} op values"));
            assert_close(&op_g, &want_g, 1e-5, &format!("{act:?} op gradients"));
        }
        Ok(())
    }

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
