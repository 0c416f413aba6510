//! [`ObserveLr`]: each optimizer's learning rate in the log (Chainer's `observe_lr`).

use anyhow::{bail, Result};

use crate::extension::{Context, Extension, Priority};
use crate::reporter::report;

/// Reports every optimizer's learning rate under `NAME/lr` (`gen/lr`,
/// `dis/lr`) each iteration, so the log shows the rate each stretch of the
/// run trained with: a decay, or new rates given on resume.
///
/// Register it before a [`super::LinearShift`]: extensions of one priority
/// run in registration order, so it then reports the rate the iteration's
/// update used.
#[derive(Debug, Clone, Default)]
pub struct ObserveLr;

impl Extension for ObserveLr {
    fn name(&self) -> String {
        "ObserveLr".into()
    }

    fn priority(&self) -> Priority {
        Priority::WRITER
    }

    fn call(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        let Some(optimizers) = ctx.updater_mut().optimizers_mut() else {
            bail!("ObserveLr needs an updater whose optimizers it can reach (such as StandardUpdater)");
        };
        for name in optimizers.names() {
            let rate = optimizers.get(&name)?.learning_rate();
            report(&format!("{name}/lr"), rate)?;
        }
        Ok(())
    }
}
