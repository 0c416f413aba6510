//! Optimizers whose state can be saved and restored.
//!
//! candle-nn's optimizers keep their moments private, so a run could never
//! resume exactly; kusari's own implement [`Optimizer`], whose `state` and
//! `load_state` round-trip through a snapshot.

mod adam;
mod collection;
mod sgd;

pub use adam::{Adam, AdamConfig, AdamStep};
pub use collection::Optimizers;
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

    /// Everything needed to continue exactly: step count, moments, hyper-parameters.
    fn state(&self) -> Result<State>;

    fn load_state(&mut self, state: &State) -> Result<()>;
}
