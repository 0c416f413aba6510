use std::collections::BTreeMap;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{IntervalTrigger, Status, Trigger};
use crate::reporter::{DictSummary, SummaryState};

/// Whether smaller or larger is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Min,
    Max,
}

impl Mode {
    pub fn improves(self, new: f64, best: f64) -> bool {
        match self {
            Mode::Min => new < best,
            Mode::Max => new > best,
        }
    }
}

/// Fires when the mean of `key` over each check interval is the best so far
/// (Chainer's `MinValueTrigger` / `MaxValueTrigger`).
pub struct BestValueTrigger {
    key: String,
    mode: Mode,
    interval: IntervalTrigger,
    summary: DictSummary,
    best: Option<f64>,
}

impl BestValueTrigger {
    pub fn new(key: impl Into<String>, mode: Mode, interval: IntervalTrigger) -> Self {
        Self {
            key: key.into(),
            mode,
            interval,
            summary: DictSummary::new(),
            best: None,
        }
    }

    pub fn min(key: impl Into<String>, interval: IntervalTrigger) -> Self {
        Self::new(key, Mode::Min, interval)
    }

    pub fn max(key: impl Into<String>, interval: IntervalTrigger) -> Self {
        Self::new(key, Mode::Max, interval)
    }

    pub fn best(&self) -> Option<f64> {
        self.best
    }
}

#[derive(Serialize, Deserialize)]
struct Saved {
    interval: serde_json::Value,
    summary: BTreeMap<String, SummaryState>,
    best: Option<f64>,
}

impl Trigger for BestValueTrigger {
    fn check(&mut self, status: &Status<'_>) -> Result<bool> {
        if let Some(v) = status.observation.get(&self.key) {
            self.summary.add_value(&self.key, &v)?;
        }
        if !self.interval.check(status)? {
            return Ok(false);
        }
        let means = self.summary.means()?;
        self.summary.clear();
        let Some(&value) = means.get(&self.key) else {
            return Ok(false);
        };
        let better = match self.best {
            None => true,
            Some(best) => self.mode.improves(value, best),
        };
        if better {
            self.best = Some(value);
        }
        Ok(better)
    }

    fn state(&mut self) -> Result<serde_json::Value> {
        Ok(serde_json::to_value(Saved {
            interval: self.interval.state()?,
            summary: self.summary.state()?,
            best: self.best,
        })?)
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        let saved: Saved = super::load(state, "best-value trigger")?;
        self.interval.load_state(&saved.interval)?;
        self.summary = DictSummary::from_state(saved.summary);
        self.best = saved.best;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::fire_points;
    use super::*;

    #[test]
    fn fires_only_on_improvement() {
        // Checked every 2 iterations on the mean of the two values in between.
        let values = [5.0, 5.0, 4.0, 4.0, 4.5, 4.5, 3.0, 3.0, 3.5, 3.5];
        let mut t = BestValueTrigger::min("val", IntervalTrigger::iterations(2));
        let fired = fire_points(&mut t, 1000, 10, 10, &|it| Some(values[it as usize - 1]));
        assert_eq!(fired, vec![2, 4, 8]);
        assert_eq!(t.best(), Some(3.0));

        let mut m = BestValueTrigger::max("val", IntervalTrigger::iterations(2));
        let fired = fire_points(&mut m, 1000, 10, 10, &|it| Some(values[it as usize - 1]));
        assert_eq!(fired, vec![2]);
    }
}
