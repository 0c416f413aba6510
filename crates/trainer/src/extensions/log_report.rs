//! [`LogReport`]: the run's log, `OUT/log`, in Chainer's format.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context as _, Result};
use serde_json::{Map, Value};

use crate::extension::{Context, Ending, Extension};
use crate::fsutil::write_atomic;
use crate::reporter::{DictSummary, SummaryState};
use crate::state::State;
use crate::trigger::{IntervalTrigger, Trigger};

/// One line of the log: `epoch`, `iteration`, `elapsed_time` and the mean
/// of each reported key over the interval (`null` where the mean is not finite).
pub type LogEntry = Map<String, Value>;

/// A shared, cheap-to-clone view of a [`LogReport`]'s entries, for
/// extensions that print or plot the log.
#[derive(Debug, Clone, Default)]
pub struct LogEntries(Arc<Mutex<Vec<LogEntry>>>);

impl LogEntries {
    fn lock(&self) -> MutexGuard<'_, Vec<LogEntry>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of entries written so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// A copy of every entry.
    pub fn to_vec(&self) -> Vec<LogEntry> {
        self.lock().clone()
    }

    /// A copy of the entries from index `start` on (empty if there are none).
    pub fn since(&self, start: usize) -> Vec<LogEntry> {
        let entries = self.lock();
        entries.get(start..).map(<[_]>::to_vec).unwrap_or_default()
    }

    /// The newest entry.
    pub fn last(&self) -> Option<LogEntry> {
        self.lock().last().cloned()
    }

    fn push(&self, entry: LogEntry) {
        self.lock().push(entry);
    }

    fn replace(&self, entries: Vec<LogEntry>) {
        *self.lock() = entries;
    }

    /// The entries as the log file holds them: a JSON array, indented by 4.
    fn to_json(&self) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut serializer = serde_json::Serializer::with_formatter(&mut bytes, formatter);
        serde::Serialize::serialize(&*self.lock(), &mut serializer)?;
        bytes.push(b'\n');
        Ok(bytes)
    }
}

/// Averages the reported values over an interval and appends one entry per
/// interval to `OUT/log`, a JSON array that Chainer's tools and
/// `pandas.read_json` read (format: `docs/log-format.md`).
///
/// The extension must see every iteration to average over it, so register it
/// with its default trigger and give the logging interval with
/// [`LogReport::trigger`] (default: every epoch). The file is rewritten
/// atomically at each interval. Entries and the partial interval go into
/// snapshots, so a resumed run's log continues seamlessly. When the run
/// completes in the middle of an interval, the partial interval becomes a
/// last entry.
pub struct LogReport {
    keys: Option<Vec<String>>,
    trigger: Box<dyn Trigger>,
    file_name: Option<String>,
    entries: LogEntries,
    summary: DictSummary,
}

impl Default for LogReport {
    fn default() -> Self {
        Self::new()
    }
}

impl LogReport {
    /// Logs the mean of every reported key once an epoch, to `OUT/log`.
    pub fn new() -> Self {
        Self {
            keys: None,
            trigger: Box::new(IntervalTrigger::epochs(1.0)),
            file_name: Some("log".to_string()),
            entries: LogEntries::default(),
            summary: DictSummary::new(),
        }
    }

    /// When to close an interval and write an entry.
    pub fn trigger(mut self, trigger: impl Trigger + 'static) -> Self {
        self.trigger = Box::new(trigger);
        self
    }

    /// Logs only these keys (besides `epoch`, `iteration`, `elapsed_time`).
    pub fn keys<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.keys = Some(keys.into_iter().map(Into::into).collect());
        self
    }

    /// The log's file name inside the output folder (default `log`).
    pub fn file_name(mut self, name: impl Into<String>) -> Self {
        self.file_name = Some(name.into());
        self
    }

    /// Keeps the log in memory only (other extensions still see it).
    pub fn without_file(mut self) -> Self {
        self.file_name = None;
        self
    }

    /// A handle on the entries, shared with this extension.
    pub fn entries(&self) -> LogEntries {
        self.entries.clone()
    }

    fn write_file(&self, ctx: &Context<'_>) -> Result<()> {
        let Some(name) = &self.file_name else {
            return Ok(());
        };
        let path = ctx.out().join(name);
        write_atomic(&path, &self.entries.to_json()?).context("writing the training log")
    }

    fn close_interval(&mut self, ctx: &Context<'_>) -> Result<()> {
        let mut entry = LogEntry::new();
        for (key, mean) in self.summary.means()? {
            entry.insert(key, Value::from(mean));
        }
        entry.insert("epoch".into(), Value::from(ctx.epoch()));
        entry.insert("iteration".into(), Value::from(ctx.iteration()));
        entry.insert(
            "elapsed_time".into(),
            Value::from(ctx.elapsed().as_secs_f64()),
        );
        self.entries.push(entry);
        self.summary.clear();
        self.write_file(ctx)
    }
}

impl Extension for LogReport {
    fn name(&self) -> String {
        "log_report".into()
    }

    fn initialize(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        // After a resume the file may hold entries past the snapshot; make it
        // match the restored log at once.
        if !self.entries.is_empty() {
            self.write_file(ctx)?;
        }
        Ok(())
    }

    fn call(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        self.summary.add(ctx.observation(), self.keys.as_deref())?;
        let fire = self.trigger.check(&ctx.status())?;
        if fire {
            self.close_interval(ctx)?;
        }
        Ok(())
    }

    /// A run that completes between two intervals (an iteration count or a
    /// time limit that is not a whole number of epochs) still logs its last
    /// stretch. Interrupted runs do not, so that a resumed log equals an
    /// uninterrupted one.
    fn finalize(&mut self, ctx: &mut Context<'_>, ending: Ending) -> Result<()> {
        if ending == Ending::Completed && !self.summary.is_empty() {
            self.close_interval(ctx)?;
        }
        Ok(())
    }

    fn state(&mut self) -> Result<State> {
        let mut state = State::new();
        state.put("entries", &self.entries.to_vec())?;
        state.put("summary", &self.summary.state()?)?;
        state.put("trigger", &self.trigger.state()?)?;
        Ok(state)
    }

    fn load_state(&mut self, state: &State) -> Result<()> {
        let entries: Vec<LogEntry> = state.get("entries")?;
        let summary: BTreeMap<String, SummaryState> = state.get("summary")?;
        self.trigger.load_state(&state.get::<Value>("trigger")?)?;
        self.summary = DictSummary::from_state(summary);
        self.entries.replace(entries);
        Ok(())
    }
}

/// The value of `key` in `entry` as a number, if it is one.
pub(crate) fn entry_number(entry: &LogEntry, key: &str) -> Option<f64> {
    entry.get(key).and_then(Value::as_f64)
}
