//! Triggers decide when an extension runs and when training stops.
//!
//! Each is checked once per iteration, after the update, with a [`Status`]
//! of the run. They follow Chainer's semantics exactly (an interval trigger
//! of 3 iterations fires on iterations 3, 6, 9; an epoch trigger fires on the
//! iteration whose batch completes the epoch) and keep state that a snapshot
//! saves, so a resumed run fires where an uninterrupted one would.

mod best_value;
mod compose;
mod early_stopping;
mod interval;
mod manual;
mod once;
mod run_length;
mod time;

pub use best_value::{BestValueTrigger, Mode};
pub use compose::{AllOf, AnyOf};
pub use early_stopping::EarlyStoppingTrigger;
pub use interval::IntervalTrigger;
pub use manual::ManualScheduleTrigger;
pub use once::OnceTrigger;
pub use run_length::RunLength;
pub use time::TimeTrigger;

use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::reporter::Observation;

/// The unit of a trigger's period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Iteration,
    Epoch,
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unit::Iteration => "iteration",
            Unit::Epoch => "epoch",
        })
    }
}

/// Where the run stands, as triggers and extensions see it.
#[derive(Debug, Clone, Copy)]
pub struct Status<'a> {
    /// Updates done so far (1 after the first update).
    pub iteration: u64,
    pub epoch: u64,
    pub epoch_detail: f64,
    pub previous_epoch_detail: Option<f64>,
    pub is_new_epoch: bool,
    /// Training time, including the time before a resume.
    pub elapsed: Duration,
    /// What was reported during this iteration.
    pub observation: &'a Observation,
}

/// A trigger's planned length of training, for progress bars and ETAs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainingLength {
    pub period: f64,
    pub unit: Unit,
}

/// Decides, once per iteration, whether something should happen now.
pub trait Trigger: Send {
    /// Whether to fire at this iteration. Called exactly once per iteration.
    fn check(&mut self, status: &Status<'_>) -> Result<bool>;

    /// State a snapshot must keep so that a resumed run fires identically.
    fn state(&mut self) -> Result<serde_json::Value> {
        Ok(serde_json::Value::Null)
    }

    fn load_state(&mut self, _state: &serde_json::Value) -> Result<()> {
        Ok(())
    }

    /// The length of training this trigger stands for, when it is a stop trigger.
    fn training_length(&self) -> Option<TrainingLength> {
        None
    }
}

impl Trigger for Box<dyn Trigger> {
    fn check(&mut self, status: &Status<'_>) -> Result<bool> {
        (**self).check(status)
    }
    fn state(&mut self) -> Result<serde_json::Value> {
        (**self).state()
    }
    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        (**self).load_state(state)
    }
    fn training_length(&self) -> Option<TrainingLength> {
        (**self).training_length()
    }
}

/// Shorthand for `IntervalTrigger::new(period, unit)` boxed.
pub fn every(period: f64, unit: Unit) -> Box<dyn Trigger> {
    Box::new(IntervalTrigger::new(period, unit))
}

fn load<T: serde::de::DeserializeOwned>(state: &serde_json::Value, what: &str) -> Result<T> {
    serde_json::from_value(state.clone())
        .map_err(|e| anyhow::anyhow!("the snapshot's state of a {what} is malformed: {e}"))
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Drives a trigger through a simulated run of `len` examples with the
    /// given batch size (Fill policy), returning the iterations where it fired.
    pub fn fire_points(
        trigger: &mut dyn Trigger,
        len: u64,
        batch: u64,
        iterations: u64,
        values: &dyn Fn(u64) -> Option<f64>,
    ) -> Vec<u64> {
        let mut fired = vec![];
        let mut position = 0u64;
        let mut epoch = 0u64;
        for it in 1..=iterations {
            let previous = Some(epoch as f64 + position as f64 / len as f64);
            position += batch;
            let mut is_new_epoch = false;
            if position >= len {
                position -= len;
                epoch += 1;
                is_new_epoch = true;
            }
            let obs = Observation::new();
            if let Some(v) = values(it) {
                obs.insert("val", v);
            }
            let status = Status {
                iteration: it,
                epoch,
                epoch_detail: epoch as f64 + position as f64 / len as f64,
                previous_epoch_detail: previous,
                is_new_epoch,
                elapsed: Duration::from_secs(it),
                observation: &obs,
            };
            if trigger.check(&status).unwrap() {
                fired.push(it);
            }
        }
        fired
    }
}
