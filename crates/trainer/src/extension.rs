//! Extensions: code the trainer runs when their trigger fires — logging,
//! snapshots, sample images, evaluation.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::reporter::Observation;
use crate::state::State;
use crate::trigger::{IntervalTrigger, Status, TrainingLength, Trigger};
use crate::updater::Updater;

/// Order among the extensions firing on the same iteration: higher first.
/// Writers add values to the observation, editors change them, readers
/// consume them; snapshots run last so they capture everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Priority(pub i32);

impl Priority {
    pub const WRITER: Priority = Priority(300);
    pub const EDITOR: Priority = Priority(200);
    pub const READER: Priority = Priority(100);
    /// After every reader: snapshots.
    pub const LAST: Priority = Priority(-100);
}

/// How a run ended, as `finalize` is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The stop trigger fired.
    Completed,
    /// Ctrl-C, SIGTERM, or a stop requested through the trainer's stop handle.
    Interrupted,
    /// An update or an extension returned an error.
    Failed,
}

/// Something the trainer calls when its trigger fires.
///
/// Only `name` and `call` are required. The trainer calls `initialize` once
/// before the first iteration (also after a resume), `on_error` when the run
/// fails, and `finalize` on every exit path.
pub trait Extension: Send {
    /// A name unique among the trainer's extensions (a suffix `_1`, `_2` is
    /// added to repeats); it keys the extension's state in snapshots.
    fn name(&self) -> String;

    /// The trigger used when none is given to `Trainer::extend`. Called once.
    fn default_trigger(&mut self) -> Box<dyn Trigger> {
        Box::new(IntervalTrigger::iterations(1))
    }

    fn priority(&self) -> Priority {
        Priority::READER
    }

    /// Whether the time this extension's `call` takes counts as training
    /// time (`elapsed_time`, time limits, time triggers). An evaluation
    /// that judges the model says `false`: a run with a time limit trains
    /// as long with it as without, and curves over training time are not
    /// bent by the cost of drawing them.
    fn counts_as_training_time(&self) -> bool {
        true
    }

    fn initialize(&mut self, _ctx: &mut Context<'_>) -> Result<()> {
        Ok(())
    }

    fn call(&mut self, ctx: &mut Context<'_>) -> Result<()>;

    fn on_error(&mut self, _ctx: &mut Context<'_>, _error: &anyhow::Error) -> Result<()> {
        Ok(())
    }

    fn finalize(&mut self, _ctx: &mut Context<'_>, _ending: Ending) -> Result<()> {
        Ok(())
    }

    /// What a snapshot must keep for this extension to continue exactly.
    fn state(&mut self) -> Result<State> {
        Ok(State::new())
    }

    fn load_state(&mut self, _state: &State) -> Result<()> {
        Ok(())
    }
}

/// The trainer as an extension sees it while it runs.
pub struct Context<'a> {
    pub(crate) updater: &'a mut dyn Updater,
    pub(crate) out: &'a Path,
    pub(crate) observation: &'a Observation,
    pub(crate) elapsed: Duration,
    pub(crate) name: &'a str,
    pub(crate) training_length: Option<TrainingLength>,
    pub(crate) state_source: &'a mut StateSource<'a>,
}

/// Collects the trainer's state, with the running extension's own state if given.
pub(crate) type StateSource<'a> = dyn FnMut(&dyn Updater, Option<State>) -> Result<State> + 'a;

impl<'a> Context<'a> {
    /// The run's position and this iteration's observation.
    pub fn status(&self) -> Status<'_> {
        Status {
            iteration: self.updater.iteration(),
            epoch: self.updater.epoch(),
            epoch_detail: self.updater.epoch_detail(),
            previous_epoch_detail: self.updater.previous_epoch_detail(),
            is_new_epoch: self.updater.is_new_epoch(),
            elapsed: self.elapsed,
            observation: self.observation,
        }
    }

    pub fn iteration(&self) -> u64 {
        self.updater.iteration()
    }

    pub fn epoch(&self) -> u64 {
        self.updater.epoch()
    }

    pub fn epoch_detail(&self) -> f64 {
        self.updater.epoch_detail()
    }

    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// The trainer's output folder.
    pub fn out(&self) -> &Path {
        self.out
    }

    pub fn observation(&self) -> &Observation {
        self.observation
    }

    /// The name the running extension is registered under (unique in the trainer).
    pub fn extension_name(&self) -> &str {
        self.name
    }

    /// The planned length of the run, as the stop trigger states it.
    pub fn training_length(&self) -> Option<TrainingLength> {
        self.training_length
    }

    /// The planned length of the run in iterations, when the stop trigger
    /// states one and (for epochs) the updater knows the epoch's size.
    pub fn planned_iterations(&self) -> Option<f64> {
        let length = self.training_length?;
        match length.unit {
            crate::trigger::Unit::Iteration => Some(length.period),
            crate::trigger::Unit::Epoch => {
                Some(length.period * self.updater.iterations_per_epoch()?)
            }
        }
    }

    pub fn updater(&self) -> &dyn Updater {
        &*self.updater
    }

    pub fn updater_mut(&mut self) -> &mut dyn Updater {
        &mut *self.updater
    }

    /// The state of the whole trainer — updater, triggers, and every other
    /// extension — as a snapshot stores it, without the calling extension's
    /// own state (see [`Context::trainer_state_with`]).
    pub fn trainer_state(&mut self) -> Result<State> {
        (self.state_source)(&*self.updater, None)
    }

    /// Like [`Context::trainer_state`], with `own` stored as the calling
    /// extension's state, where `Trainer::load_state` gives it back.
    pub fn trainer_state_with(&mut self, own: State) -> Result<State> {
        (self.state_source)(&*self.updater, Some(own))
    }
}

/// An extension made from a closure (Chainer's `make_extension`).
pub struct FnExtension<F> {
    name: String,
    trigger: Option<Box<dyn Trigger>>,
    priority: Priority,
    f: F,
}

/// Builds an extension that runs `f` when `trigger` fires.
pub fn make_extension<F>(
    name: impl Into<String>,
    trigger: impl Trigger + 'static,
    priority: Priority,
    f: F,
) -> FnExtension<F>
where
    F: FnMut(&mut Context<'_>) -> Result<()> + Send,
{
    FnExtension {
        name: name.into(),
        trigger: Some(Box::new(trigger)),
        priority,
        f,
    }
}

impl<F> Extension for FnExtension<F>
where
    F: FnMut(&mut Context<'_>) -> Result<()> + Send,
{
    fn name(&self) -> String {
        self.name.clone()
    }

    fn default_trigger(&mut self) -> Box<dyn Trigger> {
        self.trigger
            .take()
            .unwrap_or_else(|| Box::new(IntervalTrigger::iterations(1)))
    }

    fn priority(&self) -> Priority {
        self.priority
    }

    fn call(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        (self.f)(ctx)
    }
}
