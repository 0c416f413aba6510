use anyhow::Result;
use candle_core::Tensor;
use kusari_trainer::extensions::{
    FailOnNonNumber, LogEntries, LogReport, PlotReport, PrintReport, ProgressBar, Snapshot,
    TensorBoardReport, TensorBoardWriter,
};
use kusari_trainer::{IntervalTrigger, Trainer, Updater};

use super::{GeneratedImages, ReconstructedImages};
use crate::setup::Nets;

/// What the caller adds to the TensorBoard report (hyper-parameters, text).
type ConfigureReport = Box<dyn FnOnce(TensorBoardReport) -> TensorBoardReport>;

/// The extensions every `kusari train` run has, for a trainer of your own:
///
/// - `log`: the reporter log, one entry per epoch (Chainer's format);
/// - a table of it on the terminal (epoch, iteration, `dis/loss`,
///   `gen/loss`, any further columns, elapsed time) under a progress bar;
/// - `loss.png`: `dis/loss` and `gen/loss` per entry;
/// - `generated_epoch{E}.png`: 100 samples of G from the same noise every
///   epoch, and for an auto-encoder D `reconstructed_epoch{E}.png` when
///   images to reconstruct are given;
/// - a stop with a snapshot on the first non-finite reported value;
/// - with [`StandardExtensions::tensorboard`], TensorBoard event files of the
///   log's scalars and the image grids;
/// - `snapshot_iter_{N}/` every epoch and at the end, the newest 3 kept, from
///   which `Trainer::load_state` resumes exactly.
///
/// ```no_run
/// # use kusari_models::extensions::StandardExtensions;
/// # fn add<U: kusari_trainer::Updater + 'static>(trainer: &mut kusari_trainer::Trainer<U>, nets: &kusari_models::Nets) -> anyhow::Result<()> {
/// StandardExtensions::new(0).column("gen/pt").add_to(trainer, nets)?;
/// # Ok(())
/// # }
/// ```
pub struct StandardExtensions {
    seed: u64,
    log_every: IntervalTrigger,
    snapshot_every: IntervalTrigger,
    keep_snapshots: usize,
    columns: Vec<String>,
    value_range: (f32, f32),
    reconstruct: Option<Tensor>,
    tensorboard: Option<(TensorBoardWriter, ConfigureReport)>,
}

impl StandardExtensions {
    /// The defaults above; the grids' fixed noise comes from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            log_every: IntervalTrigger::epochs(1.0),
            snapshot_every: IntervalTrigger::epochs(1.0),
            keep_snapshots: 3,
            columns: Vec::new(),
            value_range: (-1.0, 1.0),
            reconstruct: None,
            tensorboard: None,
        }
    }

    /// When the log takes an entry (and the table prints a row).
    pub fn log_every(mut self, trigger: IntervalTrigger) -> Self {
        self.log_every = trigger;
        self
    }

    /// When a snapshot is written (also at the end of the run).
    pub fn snapshot_every(mut self, trigger: IntervalTrigger) -> Self {
        self.snapshot_every = trigger;
        self
    }

    /// How many snapshots are kept, the newest.
    pub fn keep_snapshots(mut self, keep: usize) -> Self {
        self.keep_snapshots = keep;
        self
    }

    /// One more column of the table, after `gen/loss` (e.g. `gen/pt`).
    pub fn column(mut self, key: impl Into<String>) -> Self {
        self.columns.push(key.into());
        self
    }

    /// The pixel values drawn black..white in the grids (default −1..1).
    pub fn value_range(mut self, range: (f32, f32)) -> Self {
        self.value_range = range;
        self
    }

    /// Real images (`[N, C, H, W]`) that an auto-encoder D reconstructs
    /// every epoch.
    pub fn reconstruct(mut self, images: Tensor) -> Self {
        self.reconstruct = Some(images);
        self
    }

    /// Writes TensorBoard event files through `writer` (a fresh
    /// `TensorBoardWriter::default()`, kept to send more images through it):
    /// the log's scalars and the image grids; `configure` adds to the report
    /// (hyper-parameters, text).
    pub fn tensorboard(
        mut self,
        writer: TensorBoardWriter,
        configure: impl FnOnce(TensorBoardReport) -> TensorBoardReport + 'static,
    ) -> Self {
        self.tensorboard = Some((writer, Box::new(configure)));
        self
    }

    /// Adds the extensions to `trainer`, for `nets`. Returns the log's
    /// entries, for a caller that reads them.
    pub fn add_to<U: Updater + 'static>(
        self,
        trainer: &mut Trainer<U>,
        nets: &Nets,
    ) -> Result<LogEntries> {
        let log = LogReport::new().trigger(self.log_every);
        let entries = log.entries();
        let progress = ProgressBar::new();
        let rows = progress.line_writer();
        trainer.extend(log);
        let mut columns = vec![
            "epoch".to_string(),
            "iteration".into(),
            "dis/loss".into(),
            "gen/loss".into(),
        ];
        columns.extend(self.columns);
        columns.push("elapsed_time".into());
        trainer.extend(PrintReport::new(entries.clone(), columns).to(rows));
        trainer.extend(PlotReport::new(entries.clone(), ["dis/loss", "gen/loss"]));
        trainer.extend(progress);
        trainer.extend(FailOnNonNumber::new());
        trainer
            .extend(Snapshot::new().keep_last(self.keep_snapshots))
            .trigger(self.snapshot_every);
        let mut generated =
            GeneratedImages::new(nets.gen.clone(), 100, self.seed, self.value_range)?;
        let mut writer = None;
        if let Some((tensorboard, configure)) = self.tensorboard {
            trainer.extend(configure(TensorBoardReport::with_writer(
                entries.clone(),
                tensorboard.clone(),
            )));
            generated = generated.tensorboard(tensorboard.clone());
            writer = Some(tensorboard);
        }
        trainer.extend(generated);
        if let (Some(ae), Some(images)) = (nets.dis.auto_encoder(), self.reconstruct) {
            let mut reconstructed = ReconstructedImages::new(ae.clone(), images, self.value_range)?;
            if let Some(writer) = writer {
                reconstructed = reconstructed.tensorboard(writer);
            }
            trainer.extend(reconstructed);
        }
        Ok(entries)
    }
}
