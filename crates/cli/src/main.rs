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

use crate::args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    let result = match &cli.command {
        Command::Train(args) => train::run(args).map(|_| ()),
        Command::Sample(args) => sample::run(args),
        Command::Eval(args) => evaluate::run_eval(args),
        Command::TrainClassifier(args) => evaluate::run_train_classifier(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
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
