//! [`Trainer`]: runs an updater until a stop trigger fires, calling
//! extensions in priority order when their triggers fire.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use candle_core::Device;

use crate::extension::{Context, Ending, Extension, Priority};
use crate::fsutil::ensure_writable_dir;
use crate::interrupt::{self, StopHandle};
use crate::reporter::{self, Observation};
use crate::state::State;
use crate::trigger::{Status, Trigger};
use crate::updater::Updater;

struct Entry {
    name: String,
    priority: Priority,
    trigger: Box<dyn Trigger>,
    /// Taken out while the extension runs, so it can see the rest of the trainer.
    extension: Option<Box<dyn Extension>>,
}

/// The training loop (Chainer's `Trainer`).
///
/// Each iteration: check the stop trigger, open a reporter scope, run one
/// update, then call each extension whose trigger fires, highest priority
/// first. On every exit path — completion, Ctrl-C, an error — each extension's
/// `finalize` runs, and an error reaches the caller.
pub struct Trainer<U: Updater> {
    updater: U,
    stop_trigger: Box<dyn Trigger>,
    out: PathBuf,
    entries: Vec<Entry>,
    elapsed_before: Duration,
    started: Option<Instant>,
    /// Time since `started` spent in extensions that do not count as training.
    excluded: Duration,
    observation: Observation,
    stop: StopHandle,
    handle_signals: bool,
    metadata: serde_json::Map<String, serde_json::Value>,
}

/// Adjusts how an extension was registered: `trainer.extend(e).trigger(t)`.
pub struct ExtendHandle<'a> {
    entry: &'a mut Entry,
    names_taken: Vec<String>,
}

impl ExtendHandle<'_> {
    pub fn trigger(self, trigger: impl Trigger + 'static) -> Self {
        self.entry.trigger = Box::new(trigger);
        self
    }

    pub fn priority(self, priority: Priority) -> Self {
        self.entry.priority = priority;
        self
    }

    /// Renames the extension (made unique with a suffix if needed).
    pub fn name(self, name: &str) -> Self {
        self.entry.name = unique_name(name, &self.names_taken);
        self
    }
}

fn unique_name(name: &str, taken: &[String]) -> String {
    let mut candidate = name.to_string();
    let mut ordinal = 0;
    while taken.contains(&candidate) {
        ordinal += 1;
        candidate = format!("{name}_{ordinal}");
    }
    candidate
}

/// The snapshot format's identifier and version.
pub const SNAPSHOT_FORMAT: &str = "kusari-snapshot";
pub const SNAPSHOT_VERSION: u32 = 1;

fn status_of<'a>(
    updater: &dyn Updater,
    elapsed: Duration,
    observation: &'a Observation,
) -> Status<'a> {
    Status {
        iteration: updater.iteration(),
        epoch: updater.epoch(),
        epoch_detail: updater.epoch_detail(),
        previous_epoch_detail: updater.previous_epoch_detail(),
        is_new_epoch: updater.is_new_epoch(),
        elapsed,
        observation,
    }
}

fn collect_state(
    updater: &dyn Updater,
    stop_trigger: &mut dyn Trigger,
    entries: &mut [Entry],
    elapsed: Duration,
    metadata: &serde_json::Map<String, serde_json::Value>,
    running: Option<(&str, State)>,
) -> Result<State> {
    let mut state = State::new();
    state.put("format", SNAPSHOT_FORMAT)?;
    state.put("version", &SNAPSHOT_VERSION)?;
    state.put("iteration", &updater.iteration())?;
    state.put("epoch_detail", &updater.epoch_detail())?;
    state.put("elapsed_seconds", &elapsed.as_secs_f64())?;
    state.put("metadata", metadata)?;
    state.put("stop_trigger", &stop_trigger.state()?)?;
    let mut triggers = serde_json::Map::new();
    let mut extensions = State::new();
    for entry in entries.iter_mut() {
        triggers.insert(entry.name.clone(), entry.trigger.state()?);
        if let Some(ext) = entry.extension.as_mut() {
            extensions.nest(&entry.name, ext.state()?);
        }
    }
    if let Some((name, own)) = running {
        extensions.nest(name, own);
    }
    state.put("triggers", &triggers)?;
    state.nest("extensions", extensions);
    state.nest("updater", updater.state()?);
    Ok(state)
}

impl<U: Updater + 'static> Trainer<U> {
    /// A trainer that writes into `out` and stops when `stop_trigger` fires.
    pub fn new(updater: U, stop_trigger: impl Trigger + 'static, out: impl Into<PathBuf>) -> Self {
        Self {
            updater,
            stop_trigger: Box::new(stop_trigger),
            out: out.into(),
            entries: Vec::new(),
            elapsed_before: Duration::ZERO,
            started: None,
            excluded: Duration::ZERO,
            observation: Observation::new(),
            stop: StopHandle::default(),
            handle_signals: true,
            metadata: serde_json::Map::new(),
        }
    }

    /// Registers an extension with its default trigger, name and priority;
    /// the returned handle can change them.
    pub fn extend(&mut self, mut extension: impl Extension + 'static) -> ExtendHandle<'_> {
        let names_taken: Vec<String> = self.entries.iter().map(|e| e.name.clone()).collect();
        let name = unique_name(&extension.name(), &names_taken);
        let trigger = extension.default_trigger();
        let priority = extension.priority();
        self.entries.push(Entry {
            name,
            priority,
            trigger,
            extension: Some(Box::new(extension)),
        });
        let entry = self.entries.last_mut().expect("just pushed");
        ExtendHandle { entry, names_taken }
    }

    /// Names of the registered extensions, in registration order.
    pub fn extension_names(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.name.clone()).collect()
    }

    pub fn updater(&self) -> &U {
        &self.updater
    }

    pub fn updater_mut(&mut self) -> &mut U {
        &mut self.updater
    }

    pub fn out(&self) -> &Path {
        &self.out
    }

    /// Training time so far, including time before a resume, without the
    /// time of extensions that do not count as training (evaluations).
    pub fn elapsed(&self) -> Duration {
        let running = self.started.map(|s| s.elapsed()).unwrap_or_default();
        self.elapsed_before + running.saturating_sub(self.excluded)
    }

    /// A handle that stops the run gracefully after the current iteration.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Whether Ctrl-C / SIGTERM stop the run gracefully (default: yes).
    pub fn handle_signals(&mut self, yes: bool) {
        self.handle_signals = yes;
    }

    /// Free-form data stored in every snapshot (the CLI stores its configuration here).
    pub fn metadata_mut(&mut self) -> &mut serde_json::Map<String, serde_json::Value> {
        &mut self.metadata
    }

    /// The whole trainer's state, as snapshots store it.
    pub fn state(&mut self) -> Result<State> {
        let elapsed = self.elapsed();
        collect_state(
            &self.updater,
            &mut *self.stop_trigger,
            &mut self.entries,
            elapsed,
            &self.metadata,
            None,
        )
    }

    /// Restores a state saved by [`Trainer::state`]: the run continues exactly where it was.
    pub fn load_state(&mut self, state: &State) -> Result<()> {
        let format: String = state
            .get("format")
            .context("this is not a kusari snapshot")?;
        if format != SNAPSHOT_FORMAT {
            bail!("this is not a kusari snapshot (format `{format}`)");
        }
        let version: u32 = state.get("version")?;
        if version != SNAPSHOT_VERSION {
            bail!("snapshot format version {version} is not supported (this kusari reads {SNAPSHOT_VERSION})");
        }
        self.updater
            .load_state(&state.child("updater"))
            .context("restoring the updater")?;
        self.stop_trigger
            .load_state(&state.get::<serde_json::Value>("stop_trigger")?)
            .context("restoring the stop trigger")?;
        let triggers: serde_json::Map<String, serde_json::Value> = state.get("triggers")?;
        let extensions = state.child("extensions");
        for entry in &mut self.entries {
            if let Some(t) = triggers.get(&entry.name) {
                entry
                    .trigger
                    .load_state(t)
                    .with_context(|| format!("restoring the trigger of `{}`", entry.name))?;
            }
            if extensions.has_child(&entry.name) {
                if let Some(ext) = entry.extension.as_mut() {
                    ext.load_state(&extensions.child(&entry.name))
                        .with_context(|| format!("restoring extension `{}`", entry.name))?;
                }
            }
        }
        self.elapsed_before =
            Duration::from_secs_f64(state.get::<f64>("elapsed_seconds")?.max(0.0));
        Ok(())
    }

    /// Writes the trainer's state as a snapshot folder (atomically).
    pub fn save_snapshot(&mut self, path: &Path) -> Result<()> {
        self.state()?.save(path)
    }

    /// Loads a snapshot folder written by [`Trainer::save_snapshot`] or the snapshot extension.
    pub fn load_snapshot(&mut self, path: &Path, device: &Device) -> Result<()> {
        let state = State::load(path, device)?;
        self.load_state(&state)
            .with_context(|| format!("resuming from snapshot {}", path.display()))
    }

    /// Calls `f` on extension `index` with a context over the rest of the trainer.
    fn with_extension<R>(
        &mut self,
        index: usize,
        f: impl FnOnce(&mut dyn Extension, &mut Context<'_>) -> Result<R>,
    ) -> Result<R> {
        let elapsed = self.elapsed();
        let training_length = self.stop_trigger.training_length();
        let name = self.entries[index].name.clone();
        let Some(mut extension) = self.entries[index].extension.take() else {
            bail!(
                "extension `{}` is already running",
                self.entries[index].name
            );
        };
        let Self {
            updater,
            stop_trigger,
            out,
            entries,
            observation,
            metadata,
            ..
        } = self;
        let mut state_source = |u: &dyn Updater, own: Option<State>| {
            let running = own.map(|own| (name.as_str(), own));
            collect_state(u, &mut **stop_trigger, entries, elapsed, metadata, running)
        };
        let mut ctx = Context {
            updater,
            out,
            observation,
            elapsed,
            name: &name,
            training_length,
            state_source: &mut state_source,
        };
        let result = f(extension.as_mut(), &mut ctx);
        self.entries[index].extension = Some(extension);
        result
    }

    fn stop_requested(&self) -> bool {
        self.stop.is_requested() || (self.handle_signals && interrupt::signal_received())
    }

    /// Runs the loop until the stop trigger fires, the run is interrupted, or something fails.
    pub fn run(&mut self) -> Result<Ending> {
        ensure_writable_dir(&self.out)?;
        if self.handle_signals {
            interrupt::install_signal_handler();
        }
        // Highest priority first; registration order among equals.
        self.entries.sort_by_key(|e| std::cmp::Reverse(e.priority));
        self.started = Some(Instant::now());

        let mut result = (0..self.entries.len())
            .try_for_each(|i| {
                let name = self.entries[i].name.clone();
                self.with_extension(i, |ext, ctx| ext.initialize(ctx))
                    .with_context(|| format!("initializing extension `{name}`"))
            })
            .and_then(|()| self.run_loop());

        if let Err(error) = &result {
            for i in 0..self.entries.len() {
                if let Err(e) = self.with_extension(i, |ext, ctx| ext.on_error(ctx, error)) {
                    tracing::error!(
                        "extension `{}` failed while handling an error: {e:#}",
                        self.entries[i].name
                    );
                }
            }
        }
        let ending = match &result {
            Ok(ending) => *ending,
            Err(_) => Ending::Failed,
        };
        for i in 0..self.entries.len() {
            let name = self.entries[i].name.clone();
            let finalized = self
                .with_extension(i, |ext, ctx| ext.finalize(ctx, ending))
                .with_context(|| format!("finalizing extension `{name}`"));
            if let Err(e) = finalized {
                if result.is_ok() {
                    result = Err(e);
                } else {
                    tracing::error!("{e:#}");
                }
            }
        }
        if let Err(e) = self.updater.finalize() {
            if result.is_ok() {
                result = Err(e);
            } else {
                tracing::error!("finalizing the updater: {e:#}");
            }
        }
        self.elapsed_before = self.elapsed();
        self.started = None;
        self.excluded = Duration::ZERO;
        result
    }

    fn run_loop(&mut self) -> Result<Ending> {
        loop {
            let status = status_of(&self.updater, self.elapsed(), &self.observation);
            if self.stop_trigger.check(&status)? {
                return Ok(Ending::Completed);
            }
            if self.stop_requested() {
                tracing::info!(
                    "stopping at iteration {} as requested",
                    self.updater.iteration()
                );
                return Ok(Ending::Interrupted);
            }
            self.observation.clear();
            let observation = self.observation.clone();
            reporter::scope(&observation, || -> Result<()> {
                self.updater.update()?;
                for i in 0..self.entries.len() {
                    let status = status_of(&self.updater, self.elapsed(), &self.observation);
                    let fire = self.entries[i].trigger.check(&status).with_context(|| {
                        format!("checking the trigger of `{}`", self.entries[i].name)
                    })?;
                    if fire {
                        let name = self.entries[i].name.clone();
                        let started = Instant::now();
                        let mut training = true;
                        self.with_extension(i, |ext, ctx| {
                            training = ext.counts_as_training_time();
                            ext.call(ctx)
                        })
                        .with_context(|| format!("extension `{name}`"))?;
                        if !training {
                            self.excluded += started.elapsed();
                        }
                    }
                }
                Ok(())
            })?;
        }
    }
}
