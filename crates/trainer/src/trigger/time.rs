use std::time::Duration;

use anyhow::Result;

use super::{Status, Trigger};

/// Fires once each time another `period` of training time has elapsed.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeTrigger {
    period: Duration,
    next: Duration,
}

impl TimeTrigger {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            next: period,
        }
    }

    pub fn period(&self) -> Duration {
        self.period
    }
}

impl Trigger for TimeTrigger {
    fn check(&mut self, status: &Status<'_>) -> Result<bool> {
        if status.elapsed >= self.next {
            self.next += self.period;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn state(&mut self) -> Result<serde_json::Value> {
        Ok(serde_json::json!({ "next_seconds": self.next.as_secs_f64() }))
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        if let Some(next) = state.get("next_seconds").and_then(|v| v.as_f64()) {
            self.next = Duration::from_secs_f64(next.max(0.0));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::fire_points;
    use super::*;

    #[test]
    fn fires_each_period_of_elapsed_time() {
        // The simulated run's elapsed time is one second per iteration.
        let mut t = TimeTrigger::new(Duration::from_secs(3));
        assert_eq!(fire_points(&mut t, 1000, 10, 10, &|_| None), vec![3, 6, 9]);
    }
}
