//! One run's folder, `<runs-dir>/<config>/seed<S>`: what state it is in
//! (finished, diverged, resumable, to start), its bookkeeping (`run.json`)
//! and its results, read from kusari's log.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::flags::Flags;
use super::grid::Budget;

/// kusari's log inside a run folder.
const LOG_FILE: &str = "log";
/// The experiment's own record of the run.
const RECORD_FILE: &str = "run.json";
/// Written when kusari stopped the run because it diverged.
const DIVERGED_FILE: &str = "diverged.json";
/// Written when kusari exited 0: the run reached its budget.
pub const FINISHED_FILE: &str = "finished.json";
/// Written by a SLURM task when kusari failed (its exit status).
pub const FAILED_FILE: &str = "failed.json";
/// The final judgement of a finished run (`[judge] final`).
pub const FINAL_EVAL_FILE: &str = "final_eval.json";
/// kusari names its snapshot folders `snapshot_iter_<N>`.
const SNAPSHOT_PREFIX: &str = "snapshot_iter_";
/// A complete snapshot folder holds both of these.
const SNAPSHOT_FILES: [&str; 2] = ["state.json", "state.safetensors"];

/// What to do with a run.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// Its log holds the last epoch: nothing to do.
    Finished,
    /// kusari stopped it as diverged (the message): nothing to do.
    Diverged(String),
    /// Interrupted with a snapshot: continue with `--resume`.
    Resumable,
    /// Never started, or stopped before its first snapshot: (re)start it.
    Fresh,
}

/// The experiment's bookkeeping for one run (`run.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Every `kusari train` flag but the per-run ones (out, seed, epochs).
    pub flags: Flags,
    /// Wall-clock seconds of every attempt so far, summed.
    pub wall_seconds: f64,
    /// How many times kusari was started for this run.
    pub attempts: u32,
    /// The kusari commits the attempts ran (usually one).
    pub commits: Vec<String>,
    /// When the attempt now running started (Unix seconds); still set when
    /// the experiment was killed during it.
    #[serde(default)]
    pub running_since: Option<f64>,
}

impl RunRecord {
    /// A record for a run about to start with `flags`.
    pub fn new(flags: Flags) -> Self {
        Self {
            flags,
            wall_seconds: 0.0,
            attempts: 0,
            commits: vec![],
            running_since: None,
        }
    }
}

/// Now, in Unix seconds.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One run's folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub path: PathBuf,
}

impl RunDir {
    /// `<runs_dir>/<config>/seed<seed>`.
    pub fn new(runs_dir: &Path, config: &str, seed: u64) -> Self {
        Self {
            path: runs_dir.join(config).join(format!("seed{seed}")),
        }
    }

    /// Decides what to do with the run, for its budget.
    pub fn state(&self, budget: Budget) -> Result<RunState> {
        if let Some(message) = self.diverged()? {
            return Ok(RunState::Diverged(message));
        }
        if self.path.join(FINISHED_FILE).is_file() {
            return Ok(RunState::Finished);
        }
        // Runs of older experiments, from before the marker.
        if let Some(epochs) = budget.epochs() {
            if entry_at_epoch(&self.log()?, epochs).is_some() {
                return Ok(RunState::Finished);
            }
        }
        if self.has_snapshot()? {
            return Ok(RunState::Resumable);
        }
        Ok(RunState::Fresh)
    }

    /// kusari's log entries (none when there is no log yet).
    pub fn log(&self) -> Result<Vec<Map<String, Value>>> {
        let path = self.path.join(LOG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a kusari log (a JSON array of entries); delete {} to rerun this run",
                path.display(),
                self.path.display()
            )
        })
    }

    /// Whether a complete `snapshot_iter_N` folder exists.
    pub fn has_snapshot(&self) -> Result<bool> {
        Ok(self.newest_snapshot()?.is_some())
    }

    /// The divergence message, when the run diverged.
    fn diverged(&self) -> Result<Option<String>> {
        let path = self.path.join(DIVERGED_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let value: Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is unreadable", path.display()))?;
                Ok(Some(
                    value["message"].as_str().unwrap_or("diverged").to_string(),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// The newest complete `snapshot_iter_N` folder, if any.
    pub fn newest_snapshot(&self) -> Result<Option<PathBuf>> {
        let listing = match std::fs::read_dir(&self.path) {
            Ok(listing) => listing,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot list {}", self.path.display()))
            }
        };
        let mut found = vec![];
        for entry in listing {
            let entry = entry.with_context(|| format!("cannot list {}", self.path.display()))?;
            let name = entry.file_name();
            let number = name
                .to_str()
                .and_then(|n| n.strip_prefix(SNAPSHOT_PREFIX))
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<u64>().ok());
            let complete = SNAPSHOT_FILES
                .iter()
                .all(|f| entry.path().join(f).is_file());
            if let (Some(n), true) = (number, complete) {
                found.push((n, entry.path()));
            }
        }
        Ok(found.into_iter().max().map(|(_, p)| p))
    }

    /// The final judgement (`eval/fid`, `eval/is`, `eval/min_class_share`), if made.
    pub fn final_eval(&self) -> Result<Option<Value>> {
        let path = self.path.join(FINAL_EVAL_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                    format!("{} is unreadable", path.display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Marks the run as finished (kusari exited 0).
    pub fn mark_finished(&self) -> Result<()> {
        let json = serde_json::json!({ "finished_at": unix_now() });
        let _ = std::fs::remove_file(self.path.join(FAILED_FILE));
        write_atomic(
            &self.path.join(FINISHED_FILE),
            &serde_json::to_vec_pretty(&json)?,
        )
    }

    /// The exit status a SLURM task recorded when kusari failed, if any.
    pub fn failure(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.path.join(FAILED_FILE)).ok()?;
        let value: Value = serde_json::from_str(&text).ok()?;
        Some(value["status"].to_string())
    }

    /// Marks the run as diverged, with kusari's message.
    pub fn mark_diverged(&self, message: &str) -> Result<()> {
        let json = serde_json::json!({ "message": message });
        write_atomic(
            &self.path.join(DIVERGED_FILE),
            &serde_json::to_vec_pretty(&json)?,
        )
    }

    /// The run's record, if it has one.
    pub fn record(&self) -> Result<Option<RunRecord>> {
        let path = self.path.join(RECORD_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is unreadable; delete {} to rerun this run",
                    path.display(),
                    self.path.display()
                )
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub fn write_record(&self, record: &RunRecord) -> Result<()> {
        write_atomic(
            &self.path.join(RECORD_FILE),
            &serde_json::to_vec_pretty(record)?,
        )
    }

    /// Counts an attempt the experiment could not time because it was
    /// killed: from its start to the last write of kusari's stderr (kusari
    /// outlives the experiment just long enough to save its snapshot).
    pub fn settle_killed_attempt(&self) -> Result<()> {
        let Some(mut record) = self.record()? else {
            return Ok(());
        };
        let Some(started) = record.running_since.take() else {
            return Ok(());
        };
        let ended = std::fs::metadata(self.path.join(super::runner::STDERR_FILE))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(started, |d| d.as_secs_f64());
        record.wall_seconds += (ended - started).max(0.0);
        self.write_record(&record)
    }

    /// Checks that a run with progress was made with `flags`, so one folder
    /// never mixes two configurations.
    pub fn check_flags(&self, flags: &Flags) -> Result<()> {
        if let Some(record) = self.record()? {
            if &record.flags != flags {
                bail!(
                    "{} was run with other settings ({}) than now ({}); \
                     choose another --runs-dir, or delete that folder to start over",
                    self.path.display(),
                    record.flags.command_text(),
                    flags.command_text()
                );
            }
        }
        Ok(())
    }

    /// Empties the folder for a fresh start, keeping its wall-time record.
    pub fn clear_for_restart(&self) -> Result<()> {
        if !self.path.exists() {
            return Ok(());
        }
        let listing = std::fs::read_dir(&self.path)
            .with_context(|| format!("cannot list {}", self.path.display()))?;
        for entry in listing {
            let entry = entry.with_context(|| format!("cannot list {}", self.path.display()))?;
            if entry.file_name() == RECORD_FILE {
                continue;
            }
            let path = entry.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.with_context(|| format!("cannot remove {} to restart", path.display()))?;
        }
        Ok(())
    }
}

/// The log entry that closes epoch `epochs`, if the log reached it.
pub fn entry_at_epoch(log: &[Map<String, Value>], epochs: u32) -> Option<&Map<String, Value>> {
    log.iter()
        .find(|e| e.get("epoch").and_then(Value::as_u64) == Some(u64::from(epochs)))
}

/// A run's numbers, read from its log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub config: String,
    pub seed: u64,
    /// kusari's divergence message, when the run diverged.
    pub diverged: Option<String>,
    /// The final evaluation (at the last epoch, or the latest one of a run
    /// budgeted in iterations or time).
    pub fid: Option<f64>,
    pub inception_score: Option<f64>,
    pub min_class_share: Option<f64>,
    /// `(epoch, FID)` of every evaluation up to the last epoch.
    pub fid_curve: Vec<(f64, f64)>,
    /// The training time (seconds, `elapsed_time`) of each point of `fid_curve`.
    #[serde(default)]
    pub fid_times: Vec<f64>,
    /// Training time kusari logged at the last epoch (includes evaluations).
    pub train_seconds: Option<f64>,
    /// Wall-clock time of every kusari attempt for this run, summed.
    pub wall_seconds: f64,
}

impl RunResult {
    /// The result of a finished or diverged run `config`/`seed` from its log.
    pub fn from_log(
        config: &str,
        seed: u64,
        log: &[Map<String, Value>],
        budget: Budget,
        diverged: Option<String>,
        wall_seconds: f64,
    ) -> Self {
        let number = |entry: &Map<String, Value>, key: &str| {
            entry
                .get(key)
                .and_then(Value::as_f64)
                .filter(|v| v.is_finite())
        };
        let last = match (diverged.is_some(), budget) {
            (true, _) => None,
            (false, Budget::Epochs(epochs)) => entry_at_epoch(log, epochs),
            // The entry the run ended with; its final evaluation is the
            // latest one (a time limit rarely ends on an evaluation).
            (false, _) => log.last(),
        };
        let evaluated = log.iter().rev().find(|e| number(e, "eval/fid").is_some());
        let judged = match last {
            Some(entry) if number(entry, "eval/fid").is_some() => Some(entry),
            Some(_) if budget.epochs().is_none() => evaluated,
            _ => None,
        };
        let last_epoch = budget.epochs().map_or(f64::INFINITY, f64::from);
        let judged_entries: Vec<&Map<String, Value>> = log
            .iter()
            .filter(|e| number(e, "epoch").is_some_and(|epoch| epoch <= last_epoch))
            .filter(|e| number(e, "eval/fid").is_some())
            .collect();
        let fid_curve = judged_entries
            .iter()
            .filter_map(|e| Some((number(e, "epoch")?, number(e, "eval/fid")?)))
            .collect();
        let fid_times = judged_entries
            .iter()
            .map(|e| number(e, "elapsed_time").unwrap_or(f64::NAN))
            .collect();
        Self {
            config: config.to_string(),
            seed,
            diverged,
            fid: judged.and_then(|e| number(e, "eval/fid")),
            inception_score: judged.and_then(|e| number(e, "eval/is")),
            min_class_share: judged.and_then(|e| number(e, "eval/min_class_share")),
            fid_curve,
            fid_times,
            train_seconds: last.and_then(|e| number(e, "elapsed_time")),
            wall_seconds,
        }
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so no
/// half-written file survives a crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create folder {}", parent.display()))?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(epoch: u64, fid: Option<f64>) -> Value {
        let mut e = serde_json::json!({
            "epoch": epoch, "iteration": epoch * 600, "elapsed_time": epoch as f64 * 100.0,
            "dis/loss": 1.0,
        });
        if let Some(fid) = fid {
            e["eval/fid"] = fid.into();
            e["eval/is"] = (fid / 10.0).into();
            e["eval/min_class_share"] = 0.05.into();
        }
        e
    }

    fn write_log(dir: &RunDir, entries: &[Value]) {
        std::fs::create_dir_all(&dir.path).unwrap();
        std::fs::write(
            dir.path.join(LOG_FILE),
            serde_json::to_vec(entries).unwrap(),
        )
        .unwrap();
    }

    fn write_snapshot(dir: &RunDir, iteration: u64, complete: bool) {
        let snap = dir.path.join(format!("snapshot_iter_{iteration}"));
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("state.json"), "{}").unwrap();
        if complete {
            std::fs::write(snap.join("state.safetensors"), "").unwrap();
        }
    }

    #[test]
    fn decides_finished_resumable_or_restart() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let run = RunDir::new(tmp.path(), "joint", 2);
        assert!(run.path.ends_with("joint/seed2"));
        // Nothing there yet.
        assert_eq!(run.state(Budget::Epochs(3))?, RunState::Fresh);
        // A log but no complete snapshot (killed before the first one was in place).
        write_log(&run, &[entry(1, Some(90.0))]);
        write_snapshot(&run, 600, false);
        std::fs::create_dir_all(run.path.join("snapshot_iter_x"))?;
        assert_eq!(run.state(Budget::Epochs(3))?, RunState::Fresh);
        // A complete snapshot: resume.
        write_snapshot(&run, 1200, true);
        write_log(&run, &[entry(1, Some(90.0)), entry(2, Some(60.0))]);
        assert_eq!(run.state(Budget::Epochs(3))?, RunState::Resumable);
        // The log reached the last epoch.
        write_log(
            &run,
            &[
                entry(1, Some(90.0)),
                entry(2, Some(60.0)),
                entry(3, Some(40.0)),
            ],
        );
        assert_eq!(run.state(Budget::Epochs(3))?, RunState::Finished);
        // A larger budget resumes a finished run; a smaller one is finished.
        assert_eq!(run.state(Budget::Epochs(5))?, RunState::Resumable);
        assert_eq!(run.state(Budget::Epochs(2))?, RunState::Finished);
        // A diverged run stays diverged.
        run.mark_diverged("`dis/loss` is NaN")?;
        assert_eq!(
            run.state(Budget::Epochs(3))?,
            RunState::Diverged("`dis/loss` is NaN".into())
        );
        Ok(())
    }

    #[test]
    fn restart_clears_all_but_the_record() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let run = RunDir::new(tmp.path(), "tanh", 1);
        write_log(&run, &[entry(1, Some(90.0))]);
        write_snapshot(&run, 600, false);
        let record = RunRecord {
            flags: Flags::from_pairs([("units-g", "64")]),
            wall_seconds: 12.5,
            attempts: 1,
            commits: vec!["abc".into()],
            running_since: None,
        };
        run.write_record(&record)?;
        run.clear_for_restart()?;
        let left: Vec<_> = std::fs::read_dir(&run.path)?
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from(RECORD_FILE)]);
        assert_eq!(run.record()?, Some(record));
        Ok(())
    }

    #[test]
    fn other_settings_in_the_same_folder_are_an_error() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let run = RunDir::new(tmp.path(), "m2", 1);
        let flags = Flags::from_pairs([("units-g", "64"), ("margin", "2")]);
        run.check_flags(&flags)?; // no record yet
        run.write_record(&RunRecord::new(flags.clone()))?;
        run.check_flags(&flags)?;
        let other = flags.with(&Flags::from_pairs([("units-g", "128")]));
        let err = run.check_flags(&other).unwrap_err().to_string();
        assert!(err.contains("other settings"), "{err}");
        Ok(())
    }

    #[test]
    fn a_killed_attempt_counts_until_kusaris_last_words() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let run = RunDir::new(tmp.path(), "joint", 1);
        std::fs::create_dir_all(&run.path)?;
        std::fs::write(
            run.path.join(crate::experiment::runner::STDERR_FILE),
            "stopped",
        )?;
        let mut record = RunRecord::new(Flags::default());
        record.wall_seconds = 100.0;
        record.running_since = Some(unix_now() - 30.0);
        run.write_record(&record)?;
        run.settle_killed_attempt()?;
        let settled = run.record()?.unwrap();
        assert_eq!(settled.running_since, None);
        assert!(
            (settled.wall_seconds - 130.0).abs() < 5.0,
            "{}",
            settled.wall_seconds
        );
        // Settling again changes nothing.
        run.settle_killed_attempt()?;
        assert_eq!(run.record()?.unwrap(), settled);
        Ok(())
    }

    #[test]
    fn results_come_from_the_last_epoch() -> Result<()> {
        let log: Vec<Map<String, Value>> = serde_json::from_value(serde_json::json!([
            entry(1, Some(90.0)),
            entry(2, None),
            entry(3, Some(40.0)),
            entry(4, Some(30.0)),
        ]))?;
        let r = RunResult::from_log("joint", 1, &log, Budget::Epochs(3), None, 321.0);
        assert_eq!(r.fid, Some(40.0));
        assert_eq!(r.inception_score, Some(4.0));
        assert_eq!(r.min_class_share, Some(0.05));
        assert_eq!(r.train_seconds, Some(300.0));
        assert_eq!(r.fid_curve, vec![(1.0, 90.0), (3.0, 40.0)]);
        assert_eq!(r.wall_seconds, 321.0);

        let diverged = RunResult::from_log(
            "joint",
            2,
            &log[..1],
            Budget::Epochs(3),
            Some("NaN".into()),
            5.0,
        );
        assert_eq!(diverged.fid, None);
        assert_eq!(diverged.fid_curve, vec![(1.0, 90.0)]);
        Ok(())
    }

    #[test]
    fn a_damaged_log_is_an_error_that_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::new(tmp.path(), "joint", 1);
        std::fs::create_dir_all(&run.path).unwrap();
        std::fs::write(run.path.join(LOG_FILE), "[{").unwrap();
        let err = format!("{:#}", run.state(Budget::Epochs(3)).unwrap_err());
        assert!(err.contains("is not a kusari log"), "{err}");
    }
}
