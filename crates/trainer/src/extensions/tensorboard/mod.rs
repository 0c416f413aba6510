//! [`TensorBoardReport`]: the run as TensorBoard event files
//! (`OUT/events.out.tfevents.*`): the log's scalars, images other extensions
//! send through a [`TensorBoardWriter`], the configuration as text and
//! hyper-parameters for TensorBoard's HParams tab.

mod proto;
mod record;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

pub use proto::{Event, HParam, SummaryKind, SummaryValue};
pub use record::{crc32c, masked_crc32c};

use super::{LogEntries, AFTER_LOG};
use crate::extension::{Context, Ending, Extension, Priority};
use crate::state::State;
use crate::trigger::{IntervalTrigger, Trigger};

/// Reads every event of a TensorBoard event file, checking each record's CRCs.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    record::records(&bytes)
        .and_then(|records| records.into_iter().map(proto::decode_event).collect())
        .with_context(|| format!("{} is not a readable event file", path.display()))
}

/// The event files in `dir`, in the order TensorBoard reads them (by name).
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("events.out.tfevents."))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[derive(Debug, Default)]
struct EventFile {
    /// The file's name inside the output folder, once chosen.
    name: Option<String>,
    file: Option<File>,
    /// Bytes written: where a snapshot says the file ends.
    offset: u64,
}

/// A handle on the run's event file, cheap to clone: extensions that draw
/// images (or anything else) write through it into the same file as the
/// [`TensorBoardReport`] it came from. Writes before the report has opened
/// the file (in its `initialize`) are errors.
#[derive(Debug, Clone, Default)]
pub struct TensorBoardWriter(Arc<Mutex<EventFile>>);

impl TensorBoardWriter {
    fn lock(&self) -> MutexGuard<'_, EventFile> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens `dir/name` (a new file when `name` is `None`), cut back to
    /// `offset` bytes when it is longer: what a resumed run wrote after its
    /// snapshot goes, so no step appears twice.
    fn open(&self, dir: &Path, name: Option<String>, offset: u64) -> Result<()> {
        let mut inner = self.lock();
        let fresh = name.is_none();
        let name = name.unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "host".into());
            format!(
                "events.out.tfevents.{}.{host}.{}.kusari",
                now() as u64,
                std::process::id()
            )
        });
        let path = dir.join(&name);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open the event file {}", path.display()))?;
        let length = file.metadata()?.len();
        if length < offset {
            bail!(
                "the event file {} holds {length} bytes, fewer than the {offset} the snapshot \
                 recorded; it was cut short or replaced (delete it to start a new one)",
                path.display()
            );
        }
        file.set_len(offset)
            .with_context(|| format!("cannot cut {} back to its snapshot", path.display()))?;
        let mut file = file;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset))?;
        inner.name = Some(name);
        inner.file = Some(file);
        inner.offset = offset;
        drop(inner);
        if fresh || offset == 0 {
            self.write(&proto::file_version_event(now()))?;
        }
        Ok(())
    }

    fn write(&self, event: &[u8]) -> Result<()> {
        let mut inner = self.lock();
        let framed = record::frame(event);
        let Some(file) = inner.file.as_mut() else {
            bail!("the TensorBoard event file is not open yet (TensorBoardReport opens it when training starts)");
        };
        file.write_all(&framed)
            .and_then(|()| file.flush())
            .context("writing the TensorBoard event file")?;
        inner.offset += framed.len() as u64;
        Ok(())
    }

    /// Whether the file is open (the report has started).
    pub fn is_open(&self) -> bool {
        self.lock().file.is_some()
    }

    /// A scalar at `step`.
    pub fn add_scalar(&self, tag: &str, step: u64, value: f64) -> Result<()> {
        self.write(&proto::summary_event(
            now(),
            step,
            proto::scalar(tag, value as f32),
        ))
    }

    /// A PNG image (`channels`: 1 gray, 3 RGB) at `step`.
    pub fn add_png(
        &self,
        tag: &str,
        step: u64,
        (width, height, channels): (u32, u32, u32),
        png: &[u8],
    ) -> Result<()> {
        let value = proto::image(tag, width, height, channels, png);
        self.write(&proto::summary_event(now(), step, value))
    }

    /// Markdown text at `step` (TensorBoard's Text tab).
    pub fn add_text(&self, tag: &str, step: u64, markdown: &str) -> Result<()> {
        self.write(&proto::summary_event(
            now(),
            step,
            proto::text(tag, markdown),
        ))
    }

    /// The run's hyper-parameters and the metric tags to show beside them
    /// (TensorBoard's HParams tab reads each metric's last scalar).
    pub fn add_hparams(&self, hparams: &[(String, HParam)], metrics: &[String]) -> Result<()> {
        self.write(&proto::summary_event(
            now(),
            0,
            proto::hparams_experiment(hparams, metrics),
        ))?;
        self.write(&proto::summary_event(
            now(),
            0,
            proto::hparams_session_start(hparams, now()),
        ))
    }

    fn end_session(&self, step: u64) -> Result<()> {
        self.write(&proto::summary_event(
            now(),
            step,
            proto::hparams_session_end(now()),
        ))
    }

    /// The file's name and length, for a snapshot.
    fn position(&self) -> (Option<String>, u64) {
        let inner = self.lock();
        (inner.name.clone(), inner.offset)
    }
}

/// Named hyper-parameters and the metric tags shown beside them.
type HParams = (Vec<(String, HParam)>, Vec<String>);

/// Writes the run as TensorBoard event files into the output folder: every
/// entry of a [`super::LogReport`] (the same means, under the same keys, at
/// step = the entry's iteration) as it is written, and optionally every
/// iteration's reported values under `iteration/KEY`. The file is flushed at
/// each write, so a TensorBoard watching the folder updates live.
///
/// Snapshots keep the file's name and length: a resumed run cuts the file
/// back to that length and appends, so the series goes on with no step
/// missing or written twice. Images and text go through
/// [`TensorBoardReport::writer`]; [`TensorBoardReport::hparams`] adds
/// TensorBoard's HParams, whose metrics are scalar tags of the log.
pub struct TensorBoardReport {
    entries: LogEntries,
    writer: TensorBoardWriter,
    written: usize,
    every_iteration: bool,
    hparams: Option<HParams>,
    texts: Vec<(String, String)>,
    restore: Option<(Option<String>, u64)>,
}

impl TensorBoardReport {
    /// Writes the entries of the log whose handle is `entries`.
    pub fn new(entries: LogEntries) -> Self {
        Self::with_writer(entries, TensorBoardWriter::default())
    }

    /// Like [`TensorBoardReport::new`], writing through `writer` (made
    /// beforehand, so that extensions added earlier can hold it).
    pub fn with_writer(entries: LogEntries, writer: TensorBoardWriter) -> Self {
        Self {
            entries,
            writer,
            written: 0,
            every_iteration: false,
            hparams: None,
            texts: vec![],
            restore: None,
        }
    }

    /// Also writes every iteration's reported scalars, as `iteration/KEY`.
    pub fn every_iteration(mut self, yes: bool) -> Self {
        self.every_iteration = yes;
        self
    }

    /// Hyper-parameters of the run and the log keys that measure it (for
    /// the HParams tab), written when the run starts.
    pub fn hparams(mut self, hparams: Vec<(String, HParam)>, metrics: Vec<String>) -> Self {
        self.hparams = Some((hparams, metrics));
        self
    }

    /// Markdown written under `tag` when the run starts (and again at the
    /// step a resumed run starts from).
    pub fn text(mut self, tag: impl Into<String>, markdown: impl Into<String>) -> Self {
        self.texts.push((tag.into(), markdown.into()));
        self
    }

    /// The handle other extensions write images through.
    pub fn writer(&self) -> TensorBoardWriter {
        self.writer.clone()
    }

    fn write_new_entries(&mut self) -> Result<()> {
        let new = self.entries.since(self.written);
        for entry in &new {
            let step = entry.get("iteration").and_then(Value::as_u64).unwrap_or(0);
            for (key, value) in entry {
                if key == "iteration" {
                    continue;
                }
                // A non-finite mean is `null` in the log; TensorBoard shows NaN.
                let v = match value {
                    Value::Number(n) => n.as_f64(),
                    Value::Null => Some(f64::NAN),
                    _ => None,
                };
                if let Some(v) = v {
                    self.writer.add_scalar(key, step, v)?;
                }
            }
        }
        self.written += new.len();
        Ok(())
    }
}

impl Extension for TensorBoardReport {
    fn name(&self) -> String {
        "tensorboard".into()
    }

    fn default_trigger(&mut self) -> Box<dyn Trigger> {
        Box::new(IntervalTrigger::iterations(1))
    }

    /// After the log has written this iteration's entry.
    fn priority(&self) -> Priority {
        AFTER_LOG
    }

    fn initialize(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        let (name, offset) = self.restore.take().unwrap_or((None, 0));
        let fresh = name.is_none();
        self.writer.open(ctx.out(), name, offset)?;
        let step = ctx.iteration();
        if fresh {
            if let Some((hparams, metrics)) = &self.hparams {
                self.writer.add_hparams(hparams, metrics)?;
            }
        }
        for (tag, markdown) in &self.texts {
            self.writer.add_text(tag, step, markdown)?;
        }
        self.write_new_entries()
    }

    fn call(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        if self.every_iteration {
            let step = ctx.iteration();
            let mut values: Vec<(String, f64)> = vec![];
            for key in ctx.observation().keys() {
                if let Ok(Some(v)) = ctx.observation().scalar(&key) {
                    values.push((key, v));
                }
            }
            for (key, v) in values {
                self.writer
                    .add_scalar(&format!("iteration/{key}"), step, v)?;
            }
        }
        self.write_new_entries()
    }

    /// The log's last entry, and the end of the HParams session when the run completed.
    fn finalize(&mut self, ctx: &mut Context<'_>, ending: Ending) -> Result<()> {
        if !self.writer.is_open() {
            return Ok(());
        }
        self.write_new_entries()?;
        if ending == Ending::Completed && self.hparams.is_some() {
            self.writer.end_session(ctx.iteration())?;
        }
        Ok(())
    }

    fn state(&mut self) -> Result<State> {
        let (name, offset) = self.writer.position();
        let mut state = State::new();
        state.put("written", &self.written)?;
        state.put("file", &name)?;
        state.put("offset", &offset)?;
        Ok(state)
    }

    fn load_state(&mut self, state: &State) -> Result<()> {
        self.written = state.get("written")?;
        let name: Option<String> = state.get("file")?;
        if let Some(name) = &name {
            if name.contains('/')
                || name.contains('\\')
                || !name.starts_with("events.out.tfevents.")
            {
                bail!("the snapshot names the event file `{name}`, which is not one");
            }
        }
        self.restore = Some((name, state.get("offset")?));
        Ok(())
    }
}
