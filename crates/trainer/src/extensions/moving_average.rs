//! [`MovingAverage`]: an exponential moving average of a model's weights,
//! kept beside the model as it trains (Polyak averaging). GANs' averaged
//! generators usually give better samples than the live one, whose weights
//! circle around the equilibrium (Yazıcı et al. 2019, "The Unusual
//! Effectiveness of Averaging in GAN Training").

use anyhow::{bail, Context as _, Result};

use crate::extension::{Context, Extension, Priority};
use crate::params::ParamStore;
use crate::state::State;

/// After every update, sets each variable of `average` to
/// `d · average + (1 − d) · source`, where `source` is the model being trained.
///
/// The decay `d` warms up as `min(decay, (1 + n) / (10 + n))` after `n`
/// averaging steps, so the average is not stuck near the random initial
/// weights in a short run. Buffers (batch-norm running statistics) are
/// averaged like parameters. The average starts as a copy of the model; a
/// snapshot keeps it, so a resumed run continues it exactly.
///
/// It runs before every other extension of the iteration, so samples,
/// evaluations and snapshots taken then see the updated average.
#[derive(Debug, Clone)]
pub struct MovingAverage {
    source: ParamStore,
    average: ParamStore,
    decay: f64,
    steps: u64,
    started: bool,
    name: String,
}

/// Runs before the extensions that read the models: samples, evaluations, snapshots.
const BEFORE_WRITERS: Priority = Priority(Priority::WRITER.0 + 100);

impl MovingAverage {
    /// Averages `source` into `average`, a second store of the same model
    /// (the same names and shapes), with the given `decay` in [0, 1).
    pub fn new(source: ParamStore, average: ParamStore, decay: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&decay) {
            bail!("a moving-average decay must lie in [0, 1), got {decay} (0.999 is usual)");
        }
        let want: Vec<(String, Vec<usize>)> = source
            .all()
            .into_iter()
            .map(|(n, v, _)| (n, v.dims().to_vec()))
            .collect();
        let have: Vec<(String, Vec<usize>)> = average
            .all()
            .into_iter()
            .map(|(n, v, _)| (n, v.dims().to_vec()))
            .collect();
        if want != have {
            bail!("the average's store must hold the same variables as the model it averages");
        }
        Ok(Self {
            source,
            average,
            decay,
            steps: 0,
            started: false,
            name: "moving_average".into(),
        })
    }

    /// Registers under `name` (the key of its state in snapshots).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The decay used at the `steps`-th averaging step (counted from 0).
    pub fn decay_at(&self, steps: u64) -> f64 {
        let n = steps as f64;
        self.decay.min((1.0 + n) / (10.0 + n))
    }

    /// Averaging steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The store holding the averaged weights.
    pub fn average(&self) -> &ParamStore {
        &self.average
    }

    fn copy_source(&self) -> Result<()> {
        self.average
            .load_state(&self.source.state(), "the model being averaged")
    }

    fn step(&mut self) -> Result<()> {
        let d = self.decay_at(self.steps);
        let average = self.average.all();
        for ((name, source, _), (_, avg, _)) in self.source.all().iter().zip(&average) {
            let mixed = ((avg.as_tensor() * d)? + (source.as_tensor() * (1.0 - d))?)?;
            avg.set(&mixed)
                .with_context(|| format!("averaging `{name}`"))?;
        }
        self.steps += 1;
        Ok(())
    }
}

impl Extension for MovingAverage {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn priority(&self) -> Priority {
        BEFORE_WRITERS
    }

    /// Starts the average from the model, unless a snapshot restored it.
    fn initialize(&mut self, _ctx: &mut Context<'_>) -> Result<()> {
        if !self.started {
            self.copy_source()?;
            self.started = true;
        }
        Ok(())
    }

    fn call(&mut self, _ctx: &mut Context<'_>) -> Result<()> {
        self.step()
    }

    fn state(&mut self) -> Result<State> {
        let mut state = State::new();
        state.put("steps", &self.steps)?;
        state.put("decay", &self.decay)?;
        state.nest("average", self.average.state());
        Ok(state)
    }

    fn load_state(&mut self, state: &State) -> Result<()> {
        self.steps = state.get("steps")?;
        self.average
            .load_state(&state.child("average"), "the snapshot's moving average")?;
        self.started = true;
        Ok(())
    }
}
