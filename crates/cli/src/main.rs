//! `kusari`: the command-line front of kusari. Each subcommand is a thin
//! layer over kusari-trainer and kusari-models.

mod args;
mod config;
mod evaluate;
mod presets;
mod sample;
mod train;

use std::process::ExitCode;

use clap::Parser;
use kusari_trainer::Ending;

use crate::args::{Cli, Command};

fn main() -> ExitCode {
    keep_candle_ops_on_the_calling_thread();
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    let result = match &cli.command {
        Command::Train(args) => train::run(args).map(|ending| match ending {
            Ending::Interrupted => ExitCode::from(EXIT_STOPPED),
            Ending::Completed | Ending::Failed => ExitCode::SUCCESS,
        }),
        Command::Sample(args) => sample::run(args).map(|()| ExitCode::SUCCESS),
        Command::Eval(args) => evaluate::run_eval(args).map(|()| ExitCode::SUCCESS),
        Command::TrainClassifier(args) => {
            evaluate::run_train_classifier(args).map(|()| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The exit status of a `kusari train` stopped early by SIGINT (Ctrl-C),
/// SIGTERM, SIGHUP or SIGUSR1 after writing its snapshot: the run is unfinished and
/// resumable (`--resume`). 75 is BSD's EX_TEMPFAIL, "try again later".
/// A second Ctrl-C quits at once with 130, without a snapshot. The
/// experiment runner (xtask) reads it too. docs/reliability.md lists every status.
const EXIT_STOPPED: u8 = 75;

/// candle 0.11 runs its element-wise ops on a pool of its own, whose worker
/// spins for a while after each op. Ops come every few tens of microseconds
/// in a training step, so the worker spins all the time, and on a small
/// machine it takes a core from the step's convolution threads: without it
/// the conv `fast` step runs about a quarter faster on 2 cores
/// (docs/performance.md). And candle sizes every matrix product's threads
/// from `RAYON_NUM_THREADS`, else by reading /proc/cpuinfo again for each
/// product: the count rayon would take anyway, set once, spares that. Counts
/// the user set are kept.
fn keep_candle_ops_on_the_calling_thread() {
    // First thing in main, before any other thread exists to read the environment.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
