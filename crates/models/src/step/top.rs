//! The boundary between a step and its objective: D's outputs handed over
//! as leaves of a small graph of their own, and the gradients the
//! objective's losses send back to them.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor, Var};

use crate::objective::{DisOutputs, Losses, Objective};

/// D's outputs and codes on both batches, and the fake batch, as variables
/// of a graph of their own; and the real batch, a constant.
pub(super) struct Leaves {
    pub real: Var,
    pub fake: Var,
    pub real_code: Var,
    pub fake_code: Var,
    pub fake_images: Var,
    pub real_images: Tensor,
}

impl Leaves {
    /// `objective`'s losses on these leaves, checked to be scalars.
    pub fn losses(&self, objective: &dyn Objective) -> Result<Losses> {
        let outputs = DisOutputs {
            real: self.real.as_tensor().clone(),
            fake: self.fake.as_tensor().clone(),
            real_code: self.real_code.as_tensor().clone(),
            fake_code: self.fake_code.as_tensor().clone(),
            real_images: self.real_images.clone(),
            fake_images: self.fake_images.as_tensor().clone(),
        };
        let losses = objective.losses(&outputs)?;
        for (which, loss) in [("D's loss", &losses.dis), ("G's loss", &losses.gen)] {
            if loss.rank() != 0 {
                bail!(
                    "the objective `{}` gave {which} of shape {:?}; a loss must be one number \
                     (a 0-d tensor: take a mean or a sum)",
                    objective.name(),
                    loss.dims()
                );
            }
        }
        Ok(losses)
    }
}

/// The gradient of one loss with respect to each leaf (`None`: the loss
/// does not depend on it).
pub(super) struct TopGradients {
    pub real: Option<Tensor>,
    pub fake: Option<Tensor>,
    pub real_code: Option<Tensor>,
    pub fake_code: Option<Tensor>,
    pub fake_images: Option<Tensor>,
}

impl TopGradients {
    /// Back-propagates `loss` through the objective's graph to the leaves.
    pub fn of(loss: &Tensor, leaves: &Leaves) -> Result<Self> {
        let grads = loss.backward()?;
        let get = |v: &Var| grads.get(v.as_tensor()).map(Tensor::detach);
        Ok(Self {
            real: get(&leaves.real),
            fake: get(&leaves.fake),
            real_code: get(&leaves.real_code),
            fake_code: get(&leaves.fake_code),
            fake_images: get(&leaves.fake_images),
        })
    }
}

/// Whether every value of `t` is zero (a NaN is not): read in place on the
/// CPU, by candle's ops elsewhere.
pub(super) fn is_zero(t: &Tensor) -> Result<bool> {
    if crate::kernels::cpu_kernels_apply(t) {
        let t = t.contiguous()?;
        return crate::kernels::storage::read(&t, |v| v.iter().all(|x| *x == 0.0));
    }
    let sum = t
        .abs()?
        .sum_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    Ok(sum == 0.0)
}
