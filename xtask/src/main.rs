//! Developer commands: `cargo xtask <command>`.
//!
//! - `train-ebgan [ARGS…]` / `train-gan [ARGS…]`: build the release binary and
//!   run `kusari train ebgan|gan --preset seed ARGS…` (later flags override the preset).

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

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
  train-gan [ARGS…]     the same for the seed GAN"
}

fn run() -> Result<ExitCode> {
    let mut args = std::env::args().skip(1);
    let Some(command) = args.next() else {
        println!("{}", usage());
        return Ok(ExitCode::SUCCESS);
    };
    let rest: Vec<String> = args.collect();
    match command.as_str() {
        "train-ebgan" => train("ebgan", &rest),
        "train-gan" => train("gan", &rest),
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

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Builds the release `kusari` binary and returns its path.
fn build_release() -> Result<PathBuf> {
    let root = workspace_root();
    let status = cargo()
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "--package",
            "kusari-cli",
            "--bin",
            "kusari",
        ])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building kusari failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target
        .join("release")
        .join(format!("kusari{}", std::env::consts::EXE_SUFFIX)))
}

fn train(model: &str, rest: &[String]) -> Result<ExitCode> {
    let binary = build_release()?;
    let status = Command::new(&binary)
        .args(["train", model, "--preset", "seed"])
        .args(rest)
        .status()
        .with_context(|| format!("running {}", binary.display()))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
