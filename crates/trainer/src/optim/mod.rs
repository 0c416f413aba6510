//! Optimizers whose state can be saved and restored.
//!
//! candle-nn's optimizers keep their moments private, so a run could never
//! resume exactly; kusari's own implement [`Optimizer`], whose `state` and
//! `load_state` round-trip through a snapshot.

mod adam;
mod collection;
mod host;
mod rmsprop;
mod sgd;

pub use adam::{Adam, AdamConfig, AdamStep};
pub use collection::Optimizers;
pub use host::{ElementState, ElementStep, HostOptimizer};
pub use rmsprop::{RmsProp, RmsPropConfig, RmsPropStep};
pub use sgd::Sgd;

use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::Tensor;

use crate::state::State;

/// Updates a fixed set of variables from their gradients, counting its own steps.
pub trait Optimizer: Send {
    /// Applies one update from `grads`; variables without a gradient are left unchanged.
    fn step(&mut self, grads: &GradStore) -> Result<()>;

    /// Back-propagates `loss` and applies one update.
    fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    /// Number of updates applied so far (each optimizer counts its own).
    fn steps(&self) -> u64;

    fn learning_rate(&self) -> f64;

    fn set_learning_rate(&mut self, lr: f64);

    /// The optimizer as [`std::any::Any`], so an update rule can recognize a
    /// concrete optimizer (e.g. [`Adam`]) and use its specialized API;
    /// `None` (the default) opts out.
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }

    /// The optimizer as a [`HostOptimizer`] whose element-wise update a
    /// kernel can apply itself, when it is one and its state lives in host
    /// memory; `None` (the default) otherwise.
    fn as_host(&mut self) -> Option<&mut dyn HostOptimizer> {
        None
    }

    /// Everything needed to continue exactly: step count, moments, hyper-parameters.
    fn state(&self) -> Result<State>;

    fn load_state(&mut self, state: &State) -> Result<()>;
}

/// A boxed optimizer (as a configuration chooses one) is an optimizer.
impl Optimizer for Box<dyn Optimizer> {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        (**self).step(grads)
    }

    fn steps(&self) -> u64 {
        (**self).steps()
    }

    fn learning_rate(&self) -> f64 {
        (**self).learning_rate()
    }

    fn set_learning_rate(&mut self, lr: f64) {
        (**self).set_learning_rate(lr)
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        (**self).as_any_mut()
    }

    fn as_host(&mut self) -> Option<&mut dyn HostOptimizer> {
        (**self).as_host()
    }

    fn state(&self) -> Result<State> {
        (**self).state()
    }

    fn load_state(&mut self, state: &State) -> Result<()> {
        (**self).load_state(state)
    }
}

/// Whether `mine` and `theirs` are the same variables (by identity), in any order.
fn same_variables<'a>(
    mine: impl Iterator<Item = &'a candle_core::Var>,
    theirs: impl Iterator<Item = &'a candle_core::Var>,
) -> bool {
    use std::collections::HashSet;
    let a: Vec<_> = mine.map(|v| v.as_tensor().id()).collect();
    let b: Vec<_> = theirs.map(|v| v.as_tensor().id()).collect();
    let set: HashSet<_> = a.iter().collect();
    a.len() == b.len() && set.len() == a.len() && b.iter().all(|id| set.contains(id))
}
