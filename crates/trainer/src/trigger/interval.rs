use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::{Status, TrainingLength, Trigger, Unit};

/// Fires every `period` iterations or epochs: on the iteration where
/// `iteration / period` (or `epoch_detail / period`) passes an integer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntervalTrigger {
    period: f64,
    unit: Unit,
    previous_iteration: u64,
    previous_epoch_detail: f64,
}

impl IntervalTrigger {
    /// `period` may be fractional for epochs; for iterations it is rounded.
    pub fn new(period: f64, unit: Unit) -> Self {
        let period = match unit {
            Unit::Iteration => period.round().max(1.0),
            Unit::Epoch => period,
        };
        Self {
            period,
            unit,
            previous_iteration: 0,
            previous_epoch_detail: 0.0,
        }
    }

    pub fn iterations(n: u64) -> Self {
        Self::new(n as f64, Unit::Iteration)
    }

    pub fn epochs(n: f64) -> Self {
        Self::new(n, Unit::Epoch)
    }

    /// Checks the period, for building one from user input.
    pub fn checked(period: f64, unit: Unit) -> Result<Self> {
        if !(period.is_finite() && period > 0.0) {
            bail!("an interval must be a positive number of {unit}s, got {period}");
        }
        Ok(Self::new(period, unit))
    }

    pub fn period(&self) -> f64 {
        self.period
    }

    pub fn unit(&self) -> Unit {
        self.unit
    }
}

impl Trigger for IntervalTrigger {
    fn check(&mut self, status: &Status<'_>) -> Result<bool> {
        let fire = match self.unit {
            Unit::Epoch => {
                (self.previous_epoch_detail / self.period).floor()
                    != (status.epoch_detail / self.period).floor()
            }
            Unit::Iteration => {
                let p = self.period as u64;
                self.previous_iteration / p != status.iteration / p
            }
        };
        self.previous_iteration = status.iteration;
        self.previous_epoch_detail = status.epoch_detail;
        Ok(fire)
    }

    fn state(&mut self) -> Result<serde_json::Value> {
        Ok(serde_json::to_value(&*self)?)
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        let saved: Self = super::load(state, "interval trigger")?;
        self.previous_iteration = saved.previous_iteration;
        self.previous_epoch_detail = saved.previous_epoch_detail;
        Ok(())
    }

    fn training_length(&self) -> Option<TrainingLength> {
        Some(TrainingLength {
            period: self.period,
            unit: self.unit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::fire_points;
    use super::*;

    #[test]
    fn every_three_iterations() {
        let mut t = IntervalTrigger::iterations(3);
        assert_eq!(fire_points(&mut t, 1000, 10, 10, &|_| None), vec![3, 6, 9]);
    }

    #[test]
    fn every_epoch_fires_where_the_epoch_rolls_over() {
        // 1000 examples, batch 300: epoch_detail 0.3 0.6 0.9 1.2 1.5 1.8 2.1 ...
        let mut t = IntervalTrigger::epochs(1.0);
        assert_eq!(
            fire_points(&mut t, 1000, 300, 10, &|_| None),
            vec![4, 7, 10]
        );
        let mut half = IntervalTrigger::epochs(0.5);
        assert_eq!(
            fire_points(&mut half, 1000, 300, 7, &|_| None),
            vec![2, 4, 5, 7]
        );
    }

    #[test]
    fn state_round_trip_resumes_firing() -> Result<()> {
        let mut a = IntervalTrigger::iterations(3);
        let obs = crate::reporter::Observation::new();
        let status = |it| Status {
            iteration: it,
            epoch: 0,
            epoch_detail: it as f64 / 100.0,
            previous_epoch_detail: None,
            is_new_epoch: false,
            elapsed: std::time::Duration::ZERO,
            observation: &obs,
        };
        for it in 1..=4 {
            a.check(&status(it))?;
        }
        let mut b = IntervalTrigger::iterations(3);
        b.load_state(&a.state()?)?;
        let fired: Vec<u64> = (5..=9)
            .filter(|&it| b.check(&status(it)).unwrap())
            .collect();
        assert_eq!(fired, vec![6, 9]);
        assert!(IntervalTrigger::checked(0.0, Unit::Epoch).is_err());
        Ok(())
    }
}
