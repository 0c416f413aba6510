use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{Status, Trigger, Unit};

/// Fires at given points only: on the iteration that reaches or passes each point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManualScheduleTrigger {
    points: Vec<f64>,
    unit: Unit,
    finished: bool,
    previous_iteration: u64,
    previous_epoch_detail: f64,
}

impl ManualScheduleTrigger {
    pub fn new(points: Vec<f64>, unit: Unit) -> Self {
        Self {
            points,
            unit,
            finished: false,
            previous_iteration: 0,
            previous_epoch_detail: 0.0,
        }
    }

    /// Whether every point has passed.
    pub fn finished(&self) -> bool {
        self.finished
    }
}

impl Trigger for ManualScheduleTrigger {
    fn check(&mut self, status: &Status<'_>) -> Result<bool> {
        let (previous, current) = match self.unit {
            Unit::Epoch => (self.previous_epoch_detail, status.epoch_detail),
            Unit::Iteration => (self.previous_iteration as f64, status.iteration as f64),
        };
        let fire = self.points.iter().any(|&p| previous < p && p <= current);
        let last = self
            .points
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        if fire && current >= last {
            self.finished = true;
        }
        self.previous_iteration = status.iteration;
        self.previous_epoch_detail = status.epoch_detail;
        Ok(fire)
    }

    fn state(&mut self) -> Result<serde_json::Value> {
        Ok(serde_json::to_value(&*self)?)
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        let saved: Self = super::load(state, "manual schedule trigger")?;
        self.finished = saved.finished;
        self.previous_iteration = saved.previous_iteration;
        self.previous_epoch_detail = saved.previous_epoch_detail;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::fire_points;
    use super::*;

    #[test]
    fn fires_on_its_points_only() {
        let mut t = ManualScheduleTrigger::new(vec![2.0, 5.0, 7.0], Unit::Iteration);
        assert_eq!(fire_points(&mut t, 1000, 10, 10, &|_| None), vec![2, 5, 7]);
        assert!(t.finished());
        // Epoch points: 1000 examples, batch 300 -> 0.3 0.6 0.9 1.2 1.5 1.8 2.1
        let mut e = ManualScheduleTrigger::new(vec![0.5, 1.0, 2.0], Unit::Epoch);
        assert_eq!(fire_points(&mut e, 1000, 300, 8, &|_| None), vec![2, 4, 7]);
    }
}
