//! `cargo xtask train-ebgan|train-gan`: build the release binary and train a seed model.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

use crate::{cargo, workspace_root};

/// Builds the release `kusari` binary and returns its path.
pub fn build_release() -> Result<PathBuf> {
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
    Ok(release_binary())
}

/// Where [`build_release`] puts the `kusari` binary (built or not).
pub fn release_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let target = if target.is_absolute() {
        target
    } else {
        workspace_root().join(target)
    };
    target
        .join("release")
        .join(format!("kusari{}", std::env::consts::EXE_SUFFIX))
}

/// Runs `kusari train <model> --preset seed <rest…>` with a fresh release build.
pub fn train(model: &str, rest: &[String]) -> Result<ExitCode> {
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
