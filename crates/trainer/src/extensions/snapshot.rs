//! [`Snapshot`]: the whole trainer's state in `OUT/snapshot_iter_N`, so a run
//! can resume exactly; [`latest_snapshot`] finds the one to resume from.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use super::NonFiniteValue;
use crate::extension::{Context, Ending, Extension, Priority};
use crate::state::{State, JSON_FILE, TENSORS_FILE};
use crate::trigger::{IntervalTrigger, Trigger};

const PREFIX: &str = "snapshot_iter_";
const FAILURE_PREFIX: &str = "failure_snapshot_iter_";

/// Writes the trainer's state — models, optimizers, iterator, RNGs, the stop
/// trigger, every extension's trigger and state — to `OUT/snapshot_iter_N`
/// at its trigger (default: every epoch), keeping the newest `K` (default 3).
///
/// It runs last on its iteration, so the snapshot holds what every other
/// extension did then. Each folder appears complete or not at all; older
/// ones are deleted only after the new one is in place. When the run is
/// interrupted (Ctrl-C, a stop request) or completes (unless
/// [`Snapshot::on_completion`] says otherwise) it writes one for the current
/// iteration; when the run fails it writes `OUT/failure_snapshot_iter_N`
/// for inspection, which [`latest_snapshot`] never picks. A regular
/// snapshot is written only when every tensor in it is finite: weights gone
/// NaN or infinite fail the run with [`NonFiniteValue`] naming the tensor.
pub struct Snapshot {
    keep: Option<usize>,
    last_written: Option<u64>,
    on_completion: bool,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self::new()
    }
}

impl Snapshot {
    /// Snapshots every epoch (set another trigger through `Trainer::extend`), keeping 3.
    pub fn new() -> Self {
        Self {
            keep: Some(3),
            last_written: None,
            on_completion: true,
        }
    }

    /// Whether a run that completes between two snapshot points writes one
    /// more for its last iteration (default: yes, so the trained model is
    /// always there to sample from).
    pub fn on_completion(mut self, yes: bool) -> Self {
        self.on_completion = yes;
        self
    }

    /// Keeps the newest `k` snapshots (at least 1).
    pub fn keep_last(mut self, k: usize) -> Self {
        self.keep = Some(k.max(1));
        self
    }

    /// Keeps every snapshot.
    pub fn keep_all(mut self) -> Self {
        self.keep = None;
        self
    }

    /// Writes the state at this iteration into `OUT/{prefix}{iteration}`.
    fn write(
        &mut self,
        ctx: &mut Context<'_>,
        prefix: &str,
        written: Option<u64>,
    ) -> Result<PathBuf> {
        let iteration = ctx.iteration();
        let path = ctx.out().join(format!("{prefix}{iteration}"));
        let mut own = State::new();
        own.put("last_written", &written)?;
        let state = ctx
            .trainer_state_with(own)
            .context("collecting the trainer's state for a snapshot")?;
        if prefix == PREFIX {
            // A snapshot to resume from must be worth resuming.
            if let Some((key, value)) = state.first_non_finite()? {
                return Err(NonFiniteValue {
                    key,
                    iteration,
                    value,
                }
                .into());
            }
        }
        state.save(&path).with_context(|| {
            format!(
                "writing snapshot {}; check that the disk has room and the output folder is writable",
                path.display()
            )
        })?;
        Ok(path)
    }

    fn write_regular(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        let iteration = ctx.iteration();
        let path = self.write(ctx, PREFIX, Some(iteration))?;
        self.last_written = Some(iteration);
        if let Some(keep) = self.keep {
            prune(ctx.out(), keep, &path)?;
        }
        Ok(())
    }
}

impl Extension for Snapshot {
    fn name(&self) -> String {
        "snapshot".into()
    }

    fn default_trigger(&mut self) -> Box<dyn Trigger> {
        Box::new(IntervalTrigger::epochs(1.0))
    }

    fn priority(&self) -> Priority {
        Priority::LAST
    }

    fn call(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        self.write_regular(ctx)
    }

    fn on_error(&mut self, ctx: &mut Context<'_>, _error: &anyhow::Error) -> Result<()> {
        let path = self.write(ctx, FAILURE_PREFIX, self.last_written)?;
        tracing::warn!(
            "the failing run's state is in {} (for inspection)",
            path.display()
        );
        Ok(())
    }

    fn finalize(&mut self, ctx: &mut Context<'_>, ending: Ending) -> Result<()> {
        let iteration = ctx.iteration();
        let wanted = match ending {
            Ending::Interrupted => true,
            Ending::Completed => self.on_completion,
            Ending::Failed => false,
        };
        if wanted && iteration > 0 && self.last_written != Some(iteration) {
            self.write_regular(ctx)?;
            tracing::info!("{ending:?}: snapshot written at iteration {iteration}");
        }
        Ok(())
    }

    fn state(&mut self) -> Result<State> {
        let mut state = State::new();
        state.put("last_written", &self.last_written)?;
        Ok(state)
    }

    fn load_state(&mut self, state: &State) -> Result<()> {
        self.last_written = state.get_opt::<Option<u64>>("last_written")?.flatten();
        Ok(())
    }
}

/// The iteration of a snapshot folder name `snapshot_iter_N`.
fn snapshot_iteration(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Every `snapshot_iter_N` folder in `out` with its N, complete or not.
fn snapshot_folders(out: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let listing = std::fs::read_dir(out)
        .with_context(|| format!("cannot list the output folder {}", out.display()))?;
    let mut found = Vec::new();
    for entry in listing {
        let entry =
            entry.with_context(|| format!("cannot list the output folder {}", out.display()))?;
        let name = entry.file_name();
        if let Some(n) = name.to_str().and_then(snapshot_iteration) {
            if entry.path().is_dir() {
                found.push((n, entry.path()));
            }
        }
    }
    found.sort();
    Ok(found)
}

fn is_complete(dir: &Path) -> bool {
    dir.join(JSON_FILE).is_file() && dir.join(TENSORS_FILE).is_file()
}

/// Deletes all but the newest `keep` snapshots, never the one just written.
fn prune(out: &Path, keep: usize, just_written: &Path) -> Result<()> {
    let folders = snapshot_folders(out)?;
    let excess = folders.len().saturating_sub(keep);
    for (_, dir) in folders.into_iter().take(excess) {
        if dir != just_written {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot delete the old snapshot {}", dir.display()))?;
        }
    }
    Ok(())
}

/// Every complete `snapshot_iter_N` folder in `out`, oldest first (none
/// when `out` does not exist).
pub fn snapshot_paths(out: &Path) -> Result<Vec<PathBuf>> {
    if !out.exists() {
        return Ok(vec![]);
    }
    Ok(snapshot_folders(out)?
        .into_iter()
        .map(|(_, dir)| dir)
        .filter(|dir| is_complete(dir))
        .collect())
}

/// The newest complete `snapshot_iter_N` folder in `out` (highest N), or
/// `None` when there is none or `out` does not exist. Temporary folders of
/// an unfinished write and failure snapshots are ignored.
pub fn latest_snapshot(out: &Path) -> Result<Option<PathBuf>> {
    if !out.exists() {
        return Ok(None);
    }
    Ok(snapshot_folders(out)?
        .into_iter()
        .rev()
        .map(|(_, dir)| dir)
        .find(|dir| is_complete(dir)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_parse_strictly() {
        assert_eq!(snapshot_iteration("snapshot_iter_120"), Some(120));
        assert_eq!(snapshot_iteration("snapshot_iter_"), None);
        assert_eq!(snapshot_iteration("snapshot_iter_12a"), None);
        assert_eq!(snapshot_iteration("snapshot_iter_+1"), None);
        assert_eq!(snapshot_iteration(".snapshot_iter_5.123.tmp"), None);
        assert_eq!(snapshot_iteration("failure_snapshot_iter_5"), None);
    }

    #[test]
    fn latest_ignores_incomplete_and_missing() -> Result<()> {
        let dir = tempfile::tempdir()?;
        assert_eq!(latest_snapshot(&dir.path().join("absent"))?, None);
        for n in [5, 20] {
            let d = dir.path().join(format!("snapshot_iter_{n}"));
            std::fs::create_dir(&d)?;
            std::fs::write(d.join(JSON_FILE), "{}")?;
            std::fs::write(d.join(TENSORS_FILE), "")?;
        }
        // Higher N but incomplete, and a failure snapshot with the highest N.
        std::fs::create_dir(dir.path().join("snapshot_iter_30"))?;
        std::fs::create_dir(dir.path().join("failure_snapshot_iter_40"))?;
        assert_eq!(
            latest_snapshot(dir.path())?,
            Some(dir.path().join("snapshot_iter_20"))
        );
        Ok(())
    }
}
