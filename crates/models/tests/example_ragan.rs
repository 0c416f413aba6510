//! The guide's example objective (`examples/ragan.rs`) as a user runs it:
//! three iterations on MNIST write the log and a snapshot, and running it
//! again with a longer length resumes from that snapshot and goes on.
//!
//! Runs whenever `MNIST_DIR` is set (CI sets it) and fails loudly if it
//! points at nothing; without it the test says it was skipped.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

/// `target/<profile>/examples/ragan`, which `cargo test` builds beside the tests.
fn example() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("the test binary is not in target/<profile>/deps")?;
    let path = profile_dir
        .join("examples")
        .join(format!("ragan{}", std::env::consts::EXE_SUFFIX));
    ensure!(
        path.is_file(),
        "{} is missing: `cargo test` builds the examples; run it through cargo",
        path.display()
    );
    Ok(path)
}

fn run(out: &std::path::Path, epochs: &str) -> Result<String> {
    let output = Command::new(example()?)
        .arg(out)
        .arg(epochs)
        .output()
        .context("starting the ragan example")?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        bail!("the ragan example failed:\n{stderr}");
    }
    Ok(stderr)
}

#[test]
fn the_guides_example_trains_snapshots_and_resumes() -> Result<()> {
    let Some(dir) = std::env::var_os("MNIST_DIR") else {
        eprintln!("skipped: MNIST_DIR is not set");
        return Ok(());
    };
    ensure!(
        PathBuf::from(&dir)
            .join("train-images-idx3-ubyte.gz")
            .is_file(),
        "MNIST_DIR={} holds no train-images-idx3-ubyte.gz",
        PathBuf::from(&dir).display()
    );
    let out = tempfile::tempdir()?;
    // 600 iterations an epoch: 0.005 epochs are 3 iterations.
    run(out.path(), "0.005")?;
    ensure!(
        out.path().join("snapshot_iter_3").is_dir(),
        "no snapshot after 3 iterations"
    );
    run(out.path(), "0.01")?;
    ensure!(
        out.path().join("snapshot_iter_6").is_dir(),
        "the second run did not reach 6"
    );
    let log: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("log"))?)?;
    let entries = log.as_array().context("the log is a JSON array")?;
    let iterations: Vec<u64> = entries
        .iter()
        .filter_map(|e| e["iteration"].as_u64())
        .collect();
    assert_eq!(
        iterations,
        vec![3, 6],
        "one entry per run, the second resumed"
    );
    for e in entries {
        for key in ["dis/loss", "gen/loss"] {
            assert!(e[key].as_f64().is_some_and(f64::is_finite), "{key} in {e}");
        }
    }
    Ok(())
}

/// docs/writing-an-updater.md opens with the example, as it is compiled,
/// in at most 60 lines.
#[test]
fn the_guide_lists_the_example_as_it_is() -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide = std::fs::read_to_string(root.join("../../docs/writing-an-updater.md"))?;
    let example = std::fs::read_to_string(root.join("examples/ragan.rs"))?;
    let start = guide
        .find("```rust\n")
        .context("the guide has no Rust listing")?
        + "```rust\n".len();
    let listing =
        &guide[start..start + guide[start..].find("```").context("an unclosed listing")?];
    assert_eq!(
        listing, example,
        "the guide's first listing differs from examples/ragan.rs"
    );
    let lines = listing.lines().count();
    assert!(lines <= 60, "the listing has {lines} lines");
    Ok(())
}
