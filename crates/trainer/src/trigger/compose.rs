use anyhow::Result;

use super::{Status, TrainingLength, Trigger};

/// Fires when any of its triggers fires. Every trigger is checked each
/// iteration (no short-circuit), so each keeps its own state current.
pub struct AnyOf(pub Vec<Box<dyn Trigger>>);

/// Fires when all of its triggers fire on the same iteration.
pub struct AllOf(pub Vec<Box<dyn Trigger>>);

fn check_all(triggers: &mut [Box<dyn Trigger>], status: &Status<'_>) -> Result<Vec<bool>> {
    triggers.iter_mut().map(|t| t.check(status)).collect()
}

fn states(triggers: &mut [Box<dyn Trigger>]) -> Result<serde_json::Value> {
    Ok(serde_json::Value::Array(
        triggers
            .iter_mut()
            .map(|t| t.state())
            .collect::<Result<_>>()?,
    ))
}

fn load_states(triggers: &mut [Box<dyn Trigger>], state: &serde_json::Value) -> Result<()> {
    let Some(items) = state.as_array() else {
        anyhow::bail!("the snapshot's state of a composed trigger is malformed");
    };
    if items.len() != triggers.len() {
        anyhow::bail!(
            "the snapshot's composed trigger has {} parts, this one {}",
            items.len(),
            triggers.len()
        );
    }
    for (t, s) in triggers.iter_mut().zip(items) {
        t.load_state(s)?;
    }
    Ok(())
}

impl Trigger for AnyOf {
    fn check(&mut self, status: &Status<'_>) -> Result<bool> {
        Ok(check_all(&mut self.0, status)?.into_iter().any(|f| f))
    }
    fn state(&mut self) -> Result<serde_json::Value> {
        states(&mut self.0)
    }
    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        load_states(&mut self.0, state)
    }
    /// The first part that knows a length (a time limit next to an epoch count reports the epochs).
    fn training_length(&self) -> Option<TrainingLength> {
        self.0.iter().find_map(|t| t.training_length())
    }
}

impl Trigger for AllOf {
    fn check(&mut self, status: &Status<'_>) -> Result<bool> {
        let fired = check_all(&mut self.0, status)?;
        Ok(!fired.is_empty() && fired.into_iter().all(|f| f))
    }
    fn state(&mut self) -> Result<serde_json::Value> {
        states(&mut self.0)
    }
    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        load_states(&mut self.0, state)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::fire_points;
    use super::super::{IntervalTrigger, ManualScheduleTrigger, Unit};
    use super::*;

    #[test]
    fn any_and_all() {
        let mut any = AnyOf(vec![
            Box::new(IntervalTrigger::iterations(4)),
            Box::new(ManualScheduleTrigger::new(vec![3.0], Unit::Iteration)),
        ]);
        assert_eq!(fire_points(&mut any, 1000, 10, 9, &|_| None), vec![3, 4, 8]);
        let mut all = AllOf(vec![
            Box::new(IntervalTrigger::iterations(2)),
            Box::new(IntervalTrigger::iterations(3)),
        ]);
        assert_eq!(fire_points(&mut all, 1000, 10, 13, &|_| None), vec![6, 12]);
    }
}
