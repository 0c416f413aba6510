use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{Status, Trigger};

/// Fires on the first check only; with `call_on_resume` also on the first
/// check after a resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnceTrigger {
    finished: bool,
    call_on_resume: bool,
}

impl OnceTrigger {
    pub fn new(call_on_resume: bool) -> Self {
        Self {
            finished: false,
            call_on_resume,
        }
    }
}

impl Default for OnceTrigger {
    fn default() -> Self {
        Self::new(false)
    }
}

impl Trigger for OnceTrigger {
    fn check(&mut self, _status: &Status<'_>) -> Result<bool> {
        let fire = !self.finished;
        self.finished = true;
        Ok(fire)
    }

    fn state(&mut self) -> Result<serde_json::Value> {
        Ok(serde_json::json!({ "finished": self.finished }))
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        let finished = state
            .get("finished")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        self.finished = finished && !self.call_on_resume;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::fire_points;
    use super::*;

    #[test]
    fn fires_once_and_again_on_resume_only_when_asked() -> Result<()> {
        let mut t = OnceTrigger::new(false);
        assert_eq!(fire_points(&mut t, 100, 10, 5, &|_| None), vec![1]);
        let saved = t.state()?;
        let mut resumed = OnceTrigger::new(false);
        resumed.load_state(&saved)?;
        assert!(fire_points(&mut resumed, 100, 10, 3, &|_| None).is_empty());
        let mut again = OnceTrigger::new(true);
        again.load_state(&saved)?;
        assert_eq!(fire_points(&mut again, 100, 10, 3, &|_| None), vec![1]);
        Ok(())
    }
}
