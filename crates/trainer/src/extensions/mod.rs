//! Ready-made extensions: the log ([`LogReport`]) and its views
//! ([`PrintReport`], [`PlotReport`]), a [`ProgressBar`], [`Snapshot`]s to
//! resume from, [`FailOnNonNumber`] to stop a diverged run, [`LinearShift`]
//! to move the learning rates over the run, a [`MovingAverage`] of a model's
//! weights, and [`write_image_grid`] for extensions that save sample images.
//!
//! ```no_run
//! use kusari_trainer::extensions::{FailOnNonNumber, LogReport, PlotReport, PrintReport, ProgressBar, Snapshot};
//! # fn add<U: kusari_trainer::Updater + 'static>(trainer: &mut kusari_trainer::Trainer<U>) {
//! let log = LogReport::new();
//! let entries = log.entries();
//! let progress = ProgressBar::new();
//! let rows = progress.line_writer();
//! trainer.extend(log);
//! trainer.extend(PrintReport::new(entries.clone(), ["epoch", "iteration", "main/loss", "elapsed_time"]).to(rows));
//! trainer.extend(PlotReport::new(entries, ["main/loss"]));
//! trainer.extend(progress);
//! trainer.extend(FailOnNonNumber::new());
//! trainer.extend(Snapshot::new());
//! # }
//! ```

mod fail_on_nonnumber;
mod image_grid;
mod linear_shift;
mod log_report;
mod moving_average;
mod observe_lr;
mod plot_report;
mod png_file;
mod print_report;
mod progress_bar;
mod snapshot;
pub mod tensorboard;

pub use fail_on_nonnumber::{FailOnNonNumber, NonFiniteValue};
pub use image_grid::{encode_image_grid, write_image_grid, GridPng};
pub use linear_shift::{LinearShift, ShiftSpan};
pub use log_report::{LogEntries, LogEntry, LogReport};
pub use moving_average::MovingAverage;
pub use observe_lr::ObserveLr;
pub use plot_report::{PlotReport, XAxis};
pub use print_report::PrintReport;
pub use progress_bar::{BarLineWriter, ProgressBar};
pub use snapshot::{latest_snapshot, snapshot_paths, Snapshot};
pub use tensorboard::{TensorBoardReport, TensorBoardWriter};

use crate::extension::Priority;

/// Extensions that read the log run just after [`LogReport`] on the same iteration.
const AFTER_LOG: Priority = Priority(Priority::READER.0 - 10);
