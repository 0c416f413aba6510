use std::collections::BTreeMap;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{IntervalTrigger, Mode, Status, TrainingLength, Trigger};
use crate::reporter::{DictSummary, SummaryState};

/// A stop trigger: fires when the mean of `monitor` over each check interval
/// has not improved for `patience` checks in a row, or when `max_length`
/// (if any) is reached.
pub struct EarlyStoppingTrigger {
    monitor: String,
    mode: Mode,
    patience: u32,
    check_interval: IntervalTrigger,
    max_length: Option<IntervalTrigger>,
    summary: DictSummary,
    best: Option<f64>,
    bad_checks: u32,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    check_interval: serde_json::Value,
    max_length: serde_json::Value,
    summary: BTreeMap<String, SummaryState>,
    best: Option<f64>,
    bad_checks: u32,
}

impl EarlyStoppingTrigger {
    pub fn new(
        monitor: impl Into<String>,
        mode: Mode,
        patience: u32,
        check_interval: IntervalTrigger,
    ) -> Self {
        Self {
            monitor: monitor.into(),
            mode,
            patience,
            check_interval,
            max_length: None,
            summary: DictSummary::new(),
            best: None,
            bad_checks: 0,
        }
    }

    /// Also stop after this length at the latest.
    pub fn with_max_length(mut self, max: IntervalTrigger) -> Self {
        self.max_length = Some(max);
        self
    }

    /// Checks without improvement so far.
    pub fn bad_checks(&self) -> u32 {
        self.bad_checks
    }
}

impl Trigger for EarlyStoppingTrigger {
    fn check(&mut self, status: &Status<'_>) -> Result<bool> {
        if let Some(v) = status.observation.get(&self.monitor) {
            self.summary.add_value(&self.monitor, &v)?;
        }
        if let Some(max) = &mut self.max_length {
            if max.check(status)? {
                return Ok(true);
            }
        }
        if !self.check_interval.check(status)? {
            return Ok(false);
        }
        let means = self.summary.means()?;
        self.summary.clear();
        let Some(&value) = means.get(&self.monitor) else {
            return Ok(false);
        };
        match self.best {
            Some(best) if !self.mode.improves(value, best) => self.bad_checks += 1,
            _ => {
                self.best = Some(value);
                self.bad_checks = 0;
            }
        }
        Ok(self.bad_checks >= self.patience)
    }

    fn state(&mut self) -> Result<serde_json::Value> {
        let max_length = match &mut self.max_length {
            Some(m) => m.state()?,
            None => serde_json::Value::Null,
        };
        Ok(serde_json::to_value(Saved {
            check_interval: self.check_interval.state()?,
            max_length,
            summary: self.summary.state()?,
            best: self.best,
            bad_checks: self.bad_checks,
        })?)
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        let saved: Saved = super::load(state, "early-stopping trigger")?;
        self.check_interval.load_state(&saved.check_interval)?;
        if let Some(m) = &mut self.max_length {
            m.load_state(&saved.max_length)?;
        }
        self.summary = DictSummary::from_state(saved.summary);
        self.best = saved.best;
        self.bad_checks = saved.bad_checks;
        Ok(())
    }

    fn training_length(&self) -> Option<TrainingLength> {
        self.max_length.as_ref().and_then(|m| m.training_length())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::fire_points;
    use super::*;

    #[test]
    fn stops_after_patience_checks_without_improvement() {
        // Checked every iteration: improves at 1, 2, then never again.
        let values = [5.0, 4.0, 4.5, 4.0, 6.0, 1.0];
        let mut t = EarlyStoppingTrigger::new("val", Mode::Min, 3, IntervalTrigger::iterations(1));
        let fired = fire_points(&mut t, 1000, 10, 6, &|it| Some(values[it as usize - 1]));
        assert_eq!(fired, vec![5]);

        // An improvement resets the count.
        let values = [5.0, 6.0, 6.0, 4.0, 6.0, 6.0, 6.0];
        let mut t = EarlyStoppingTrigger::new("val", Mode::Min, 3, IntervalTrigger::iterations(1));
        let fired = fire_points(&mut t, 1000, 10, 7, &|it| Some(values[it as usize - 1]));
        assert_eq!(fired, vec![7]);
    }

    #[test]
    fn max_length_stops_regardless() {
        let mut t =
            EarlyStoppingTrigger::new("val", Mode::Max, 100, IntervalTrigger::iterations(1))
                .with_max_length(IntervalTrigger::iterations(4));
        assert_eq!(
            fire_points(&mut t, 1000, 10, 4, &|it| Some(it as f64)),
            vec![4]
        );
    }
}
