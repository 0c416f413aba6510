//! Developer commands: `cargo xtask <command>`.
//!
//! - `train-ebgan [ARGS…]` / `train-gan [ARGS…]`: build the release binary and
//!   run `kusari train ebgan|gan --preset seed ARGS…` (later flags override the preset).
//! - `bench [--config seed|small|fast|all] [--objective NAME|all] [--compare-torch [PATH]] …`:
//!   time the training step of each objective, beside PyTorch (see `docs/performance.md`).
//! - `experiment <NAME|FILE.toml> [OPTIONS] [-- FLAGS…]`: train the grid a
//!   grid file describes (cells × seeds) on MNIST, here or as a SLURM job
//!   array, judge each run, and write `docs/results/<name>.md` with a table,
//!   a plot and the raw numbers (docs/grids.md); `experiment status …` counts the runs.
//! - `build-cuda [--skip-download] [--package P]… [-- CARGO_ARGS…]`: fetch the
//!   CUDA 13.0 toolkit from PyPI wheels into `.cuda/` and build the release
//!   binary with Candle's CUDA backend into `target/cuda` (see `docs/cuda.md`).

mod bench;
mod build_cuda;
mod cuda_stub;
mod cuda_wheels;
mod experiment;
mod train;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{bail, Result};

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> &'static str {
    "usage: cargo xtask <command> [args…]

commands:
  train-ebgan [ARGS…]   build kusari (release) and train the seed EBGAN; ARGS go to `kusari train`
  train-gan [ARGS…]     the same for the seed GAN
  bench [--config seed|small|fast|all] [--objective NAME|all] [--iters N] [--rounds R] [--compare-torch [PATH]]
                        time each objective's training step (s/iter, images/s, GFLOP/s, % of MKL, peak RSS),
                        alternating with the PyTorch reference; see docs/performance.md
  experiment <NAME|FILE.toml> [--executor local|slurm] [--jobs N] [--seeds N] [--epochs E] [-- FLAGS…]
                        train a grid file's cells × seeds on MNIST ($MNIST_DIR), here or as a SLURM
                        job array, and write docs/results/<name>.md/.png/.json; rerun to resume;
                        `experiment status NAME` counts the runs (docs/grids.md)
  build-cuda [--skip-download] [--package P]… [-- CARGO_ARGS…]
                        fetch CUDA 13.0 from PyPI wheels into .cuda/ and build kusari
                        (release, --features cuda) into target/cuda; see docs/cuda.md"
}

fn run() -> Result<ExitCode> {
    let mut args = std::env::args().skip(1);
    let Some(command) = args.next() else {
        println!("{}", usage());
        return Ok(ExitCode::SUCCESS);
    };
    let rest: Vec<String> = args.collect();
    match command.as_str() {
        "train-ebgan" => train::train("ebgan", &rest),
        "train-gan" => train::train("gan", &rest),
        "bench" => bench::bench(&rest),
        "experiment" => experiment::experiment(&rest),
        "build-cuda" => build_cuda::build_cuda(&rest).map(|()| ExitCode::SUCCESS),
        "-h" | "--help" | "help" => {
            println!("{}", usage());
            Ok(ExitCode::SUCCESS)
        }
        other => bail!("unknown command `{other}`\n\n{}", usage()),
    }
}

/// The workspace root (the parent of this crate's folder).
fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// The cargo that runs this xtask.
/// A `cargo` command for building the workspace from inside xtask.
///
/// `cargo run` gives xtask its own package's variables (`CARGO_PKG_NAME`,
/// `CARGO_MANIFEST_DIR`, …). Some build scripts (ring's) declare that they
/// depend on those names, so a nested build that inherited them would see
/// them "changed" and recompile half the dependency tree that a plain
/// `cargo build` or `cargo test` had just built. They are removed here.
fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if is_package_variable(name) {
            command.env_remove(name);
        }
    }
    command
}

/// Whether cargo set `name` for the package it runs (rather than for cargo itself).
fn is_package_variable(name: &str) -> bool {
    ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_EXE_"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        || matches!(
            name,
            "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR"
        )
}
