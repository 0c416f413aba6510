//! Every shipped objective end to end on real MNIST (runs when `MNIST_DIR`
//! is set): `kusari train lsgan|hinge|wgan` (and hinge with
//! `--spectral-norm`) trains an epoch of small nets, logs, draws the grid,
//! snapshots, and a run stopped halfway and resumed ends with the same log
//! and the same weights, optimizer state and spectral-norm vectors.

mod common;

use std::path::Path;

use common::*;

const SMALL: &[&str] = &[
    "--units-g",
    "128",
    "--units-d",
    "64",
    "--seed",
    "5",
    "--device",
    "cpu",
];

fn train(objective: &str, out: &Path, mnist: &Path, extra: &[&str]) {
    let mut args = vec![
        "train",
        objective,
        "--out",
        out.to_str().unwrap(),
        "--data-dir",
        mnist.to_str().unwrap(),
    ];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(extra);
    let output = run(&args);
    assert!(
        output.status.success(),
        "kusari {} failed:\n{}",
        args.join(" "),
        stderr(&output)
    );
}

/// Every tensor of a snapshot's updater: models, optimizers, the step's state.
fn snapshot_tensors_of(snapshot: &Path) -> Vec<(String, Vec<f32>)> {
    snapshot_tensors(snapshot, &["updater/"])
}

/// One epoch straight, and the same epoch stopped at its middle and resumed.
fn trains_and_resumes_exactly(objective: &str, extra: &[&str], keys: &[&str]) {
    let test = format!("{objective} {}", extra.join(" "));
    let Some(mnist) = mnist_dir(&test) else {
        return;
    };
    // WGAN's 5 critic steps draw 5 batches an iteration: an epoch is 120.
    let per_epoch: u64 = if objective == "wgan" { 120 } else { 600 };
    let (half, every) = ((per_epoch / 2).to_string(), (per_epoch / 6).to_string());
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let mut args = vec!["--epochs", "1", "--log-every-iterations", &every];
    args.extend_from_slice(extra);
    train(objective, &whole, &mnist, &args);

    let log = read_log(&whole);
    assert_eq!(log.len(), 6, "{test}: an entry every sixth of the epoch");
    for entry in &log {
        for key in keys.iter().chain(&["dis/loss", "gen/loss"]) {
            assert!(
                entry
                    .get(*key)
                    .and_then(|v| v.as_f64())
                    .is_some_and(f64::is_finite),
                "{test}: {key} in {entry:?}"
            );
        }
    }
    assert_eq!(png_size(&whole.join("generated_epoch1.png")), (289, 289));
    assert!(
        !whole.join("reconstructed_epoch1.png").exists(),
        "{test}: a logit D reconstructs nothing"
    );
    let args_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(whole.join("args.json")).unwrap()).unwrap();
    assert_eq!(args_json["config"]["kind"], objective, "{test}");
    let last = whole.join(format!("snapshot_iter_{per_epoch}"));

    let halves = dir.path().join("halves");
    let mut first = vec!["--iterations", &half, "--log-every-iterations", &every];
    first.extend_from_slice(extra);
    train(objective, &halves, &mnist, &first);
    train(objective, &halves, &mnist, &["--epochs", "1", "--resume"]);
    assert_eq!(
        without_time(read_log(&halves)),
        without_time(read_log(&whole)),
        "{test}: the logs"
    );
    let (a, b) = (
        snapshot_tensors_of(&halves.join(format!("snapshot_iter_{per_epoch}"))),
        snapshot_tensors_of(&last),
    );
    assert_eq!(a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert_eq!(x, y, "{test}: `{name}` after resuming");
    }
    if extra.contains(&"--spectral-norm") {
        assert!(
            b.iter().any(|(n, _)| n.ends_with("sn_u")),
            "{test}: no spectral-norm vectors saved"
        );
    }
}

#[test]
fn lsgan_trains_and_resumes_exactly() {
    trains_and_resumes_exactly("lsgan", &[], &[]);
}

#[test]
fn hinge_trains_and_resumes_exactly() {
    trains_and_resumes_exactly("hinge", &[], &[]);
}

#[test]
fn hinge_with_spectral_norm_trains_and_resumes_exactly() {
    trains_and_resumes_exactly("hinge", &["--spectral-norm"], &[]);
}

#[test]
fn wgan_trains_and_resumes_exactly() {
    trains_and_resumes_exactly("wgan", &[], &["dis/wasserstein"]);
}
