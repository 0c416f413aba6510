//! Updaters: one call of [`Updater::update`] is one training iteration.
//!
//! Most users write only an [`UpdateCore`] — what to do with one batch — and
//! hand it to a [`StandardUpdater`], which owns the iterator, the named
//! models and the named optimizers, and counts iterations and epochs.

mod standard;

pub use standard::{StandardUpdater, UpdateContext, UpdateCore};

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::params::ParamStore;
use crate::state::State;

/// What the trainer drives once per iteration.
pub trait Updater: Send {
    /// Runs one iteration: fetch a batch, compute, step optimizers.
    fn update(&mut self) -> Result<()>;

    /// Updates done so far.
    fn iteration(&self) -> u64;
    /// Completed epochs of the main iterator.
    fn epoch(&self) -> u64;
    /// Epochs as a fraction.
    fn epoch_detail(&self) -> f64;
    /// `epoch_detail` before the last update (`None` before the first).
    fn previous_epoch_detail(&self) -> Option<f64>;
    /// Whether the last update completed an epoch.
    fn is_new_epoch(&self) -> bool;

    /// Everything needed to continue exactly: iteration, iterator, models,
    /// optimizers and any state of the update rule (noise RNG, ...).
    fn state(&self) -> Result<State>;
    fn load_state(&mut self, state: &State) -> Result<()>;

    /// The optimizers, for extensions that change their settings (such as
    /// [`crate::extensions::LinearShift`]); `None` when the updater keeps
    /// them to itself.
    fn optimizers_mut(&mut self) -> Option<&mut crate::optim::Optimizers> {
        None
    }

    /// Iterations in one epoch, for progress estimates.
    fn iterations_per_epoch(&self) -> Option<f64> {
        None
    }

    /// Called once when training ends, on every exit path.
    fn finalize(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Models by name ("gen", "dis"), as an updater owns them.
#[derive(Debug, Clone, Default)]
pub struct Models {
    map: BTreeMap<String, ParamStore>,
}

impl Models {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: impl Into<String>, params: ParamStore) {
        self.map.insert(name.into(), params);
    }

    pub fn get(&self, name: &str) -> Result<&ParamStore> {
        self.map
            .get(name)
            .with_context(|| format!("no model named `{name}` (have: {:?})", self.map.keys()))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &ParamStore)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn state(&self) -> State {
        let mut state = State::new();
        for (name, params) in &self.map {
            state.nest(name, params.state());
        }
        state
    }

    pub fn load_state(&self, state: &State) -> Result<()> {
        for (name, params) in &self.map {
            params.load_state(
                &state.child(name),
                &format!("the snapshot's model `{name}`"),
            )?;
        }
        Ok(())
    }
}
