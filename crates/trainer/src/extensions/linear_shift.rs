//! [`LinearShift`]: moves the optimizers' learning rate in a straight line
//! over the run, as Chainer's `LinearShift` does for an optimizer attribute.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::extension::{Context, Extension, Priority};
use crate::state::State;

/// What the shift is spread over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ShiftSpan {
    /// The first `n` iterations.
    Iterations(u64),
    /// The first stretch of training time (time before a resume included),
    /// for runs stopped by a time limit.
    Time(Duration),
}

/// Sets the learning rate of the named optimizers (all of them when none
/// are named) to `start · (1 − t) + end · t` before every iteration, where
/// `t` runs from 0 to 1 over the [`ShiftSpan`] and then stays at 1. The
/// rate follows from the run's position, so a resumed run continues the
/// line where it stopped (snapshots keep the base rates).
///
/// Rates are multiplied into each optimizer's own rate at the start of the
/// run (`start = 1.0, end = 0.0` decays every optimizer to zero), so G and D
/// keep their ratio.
#[derive(Debug, Clone)]
pub struct LinearShift {
    optimizers: Vec<String>,
    start: f64,
    end: f64,
    span: ShiftSpan,
    base: Vec<(String, f64)>,
    /// Bases given by the caller win over the ones a snapshot stored.
    fixed_base: bool,
}

impl LinearShift {
    /// Scales each optimizer's rate from `start` times its initial value to
    /// `end` times it over `span`.
    pub fn new(start: f64, end: f64, span: ShiftSpan) -> Result<Self> {
        if !(start.is_finite() && end.is_finite() && start >= 0.0 && end >= 0.0) {
            bail!("a learning-rate shift needs finite, non-negative factors, got {start} → {end}");
        }
        match span {
            ShiftSpan::Iterations(0) => bail!("a learning-rate shift needs at least one iteration"),
            ShiftSpan::Time(d) if d.is_zero() => {
                bail!("a learning-rate shift needs a time span above zero")
            }
            _ => {}
        }
        Ok(Self {
            optimizers: vec![],
            start,
            end,
            span,
            base: vec![],
            fixed_base: false,
        })
    }

    /// Shifts only these optimizers.
    pub fn optimizers<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.optimizers = names.into_iter().map(Into::into).collect();
        self
    }

    /// The rates the factors multiply, per optimizer, instead of the rates
    /// the optimizers hold when the run starts. They also override the ones
    /// a snapshot stored, so a resumed run can go on from other rates.
    pub fn bases<I, S>(mut self, bases: I) -> Self
    where
        I: IntoIterator<Item = (S, f64)>,
        S: Into<String>,
    {
        self.base = bases.into_iter().map(|(n, r)| (n.into(), r)).collect();
        self.fixed_base = true;
        self
    }

    /// What the shift is spread over.
    pub fn span(&self) -> ShiftSpan {
        self.span
    }

    /// The factor at `iteration` updates done after `elapsed` of training.
    pub fn factor(&self, iteration: u64, elapsed: Duration) -> f64 {
        let t = match self.span {
            ShiftSpan::Iterations(n) => iteration as f64 / n as f64,
            ShiftSpan::Time(d) => elapsed.as_secs_f64() / d.as_secs_f64(),
        };
        let t = t.clamp(0.0, 1.0);
        self.start * (1.0 - t) + self.end * t
    }

    fn apply(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        let factor = self.factor(ctx.iteration(), ctx.elapsed());
        let Some(optimizers) = ctx.updater_mut().optimizers_mut() else {
            bail!("LinearShift needs an updater whose optimizers it can reach (such as StandardUpdater)");
        };
        for (name, base) in &self.base {
            optimizers.get_mut(name)?.set_learning_rate(base * factor);
        }
        Ok(())
    }
}

impl Extension for LinearShift {
    fn name(&self) -> String {
        "LinearShift".into()
    }

    /// Before the readers, so a log written at this iteration is already
    /// about the new rate's run.
    fn priority(&self) -> Priority {
        Priority::WRITER
    }

    /// Reads each optimizer's rate as its base, unless a snapshot restored the bases.
    fn initialize(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        if self.base.is_empty() {
            let Some(optimizers) = ctx.updater_mut().optimizers_mut() else {
                bail!("LinearShift needs an updater whose optimizers it can reach (such as StandardUpdater)");
            };
            let names = if self.optimizers.is_empty() {
                optimizers.names()
            } else {
                self.optimizers.clone()
            };
            for name in names {
                let rate = optimizers.get(&name)?.learning_rate();
                self.base.push((name, rate));
            }
        }
        self.apply(ctx)
    }

    /// The base rates: after a resume the optimizers hold shifted ones.
    fn state(&mut self) -> Result<State> {
        let mut state = State::new();
        state.put("base", &self.base)?;
        Ok(state)
    }

    fn load_state(&mut self, state: &State) -> Result<()> {
        if !self.fixed_base {
            self.base = state.get("base")?;
        }
        Ok(())
    }

    fn call(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        self.apply(ctx)
    }
}
