use std::time::Duration;

use anyhow::{bail, Result};

use super::{Status, TrainingLength, Trigger, Unit};

/// Stops a run once it reaches any of its limits: a number of iterations, of
/// epochs, or of training time (which counts the time before a resume).
///
/// It keeps no state, so a resumed run may be given other limits than the
/// ones it started with (a longer run, a time limit added or lifted), and a
/// run that already reached its limits stops before its next update. Chainer's
/// stop trigger is an interval trigger; this one fires on the same iteration
/// (`iteration ≥ N`, `epoch_detail ≥ E`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RunLength {
    pub iterations: Option<u64>,
    pub epochs: Option<f64>,
    pub time: Option<Duration>,
}

impl RunLength {
    /// Checks that at least one limit is set and each is positive.
    pub fn checked(self) -> Result<Self> {
        if self.iterations.is_none() && self.epochs.is_none() && self.time.is_none() {
            bail!("a run needs a length: a number of iterations, epochs or a time limit");
        }
        if self.iterations == Some(0) {
            bail!("a run length of 0 iterations stops before it starts");
        }
        if let Some(e) = self.epochs {
            if !(e.is_finite() && e > 0.0) {
                bail!("a run length in epochs must be a positive number, got {e}");
            }
        }
        Ok(self)
    }

    /// Whether the run described by `status` has reached a limit.
    pub fn reached(&self, status: &Status<'_>) -> bool {
        self.reached_at(status.iteration, status.epoch_detail, status.elapsed)
    }

    /// Whether a run at this iteration, epoch and training time has reached a limit.
    pub fn reached_at(&self, iteration: u64, epoch_detail: f64, elapsed: Duration) -> bool {
        self.iterations.is_some_and(|n| iteration >= n)
            || self.epochs.is_some_and(|e| epoch_detail >= e)
            || self.time.is_some_and(|t| elapsed >= t)
    }
}

impl Trigger for RunLength {
    fn check(&mut self, status: &Status<'_>) -> Result<bool> {
        Ok(self.reached(status))
    }

    /// Nothing to keep: whatever an older snapshot stored for its stop
    /// trigger is ignored.
    fn load_state(&mut self, _state: &serde_json::Value) -> Result<()> {
        Ok(())
    }

    /// Iterations when given (exact), else epochs; a time limit alone has no
    /// length in updates.
    fn training_length(&self) -> Option<TrainingLength> {
        match (self.iterations, self.epochs) {
            (Some(n), _) => Some(TrainingLength {
                period: n as f64,
                unit: Unit::Iteration,
            }),
            (None, Some(e)) => Some(TrainingLength {
                period: e,
                unit: Unit::Epoch,
            }),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::fire_points;
    use super::super::IntervalTrigger;
    use super::*;

    #[test]
    fn stops_where_an_interval_stop_trigger_would() {
        for (len, batch) in [(1000, 300), (1000, 100), (60, 7)] {
            let mut chainer = IntervalTrigger::epochs(2.5);
            let mut ours = RunLength {
                epochs: Some(2.5),
                ..RunLength::default()
            };
            let first = |t: &mut dyn Trigger| fire_points(t, len, batch, 100, &|_| None)[0];
            assert_eq!(first(&mut chainer), first(&mut ours));
        }
        let mut both = RunLength {
            iterations: Some(7),
            epochs: Some(100.0),
            ..RunLength::default()
        };
        assert_eq!(
            fire_points(&mut both, 1000, 10, 9, &|_| None),
            vec![7, 8, 9]
        );
        // One simulated second per iteration.
        let mut timed = RunLength {
            time: Some(Duration::from_secs(4)),
            ..RunLength::default()
        };
        assert_eq!(fire_points(&mut timed, 1000, 10, 5, &|_| None), vec![4, 5]);
    }

    #[test]
    fn any_old_state_loads_and_limits_are_checked() {
        let mut t = RunLength {
            time: Some(Duration::from_secs(1)),
            ..RunLength::default()
        };
        for old in [
            serde_json::json!([{"next_seconds": 4.0}, {"period": 3.0}]),
            serde_json::json!({"period": 100.0, "unit": "epoch"}),
            serde_json::Value::Null,
        ] {
            assert!(t.load_state(&old).is_ok());
        }
        assert!(RunLength::default().checked().is_err());
        let zero = RunLength {
            iterations: Some(0),
            ..RunLength::default()
        };
        assert!(zero.checked().is_err());
        assert!(t.checked().is_ok());
    }
}
