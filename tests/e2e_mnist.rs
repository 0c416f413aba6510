//! End to end on real MNIST (runs when `MNIST_DIR` is set): a short training
//! run's outputs, `kusari sample`, and exact resume after SIGKILL.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// A small EBGAN-PT that trains an MNIST epoch (600 iterations) in seconds.
const SMALL: &[&str] = &[
    "--units-g",
    "128",
    "--units-d",
    "64",
    "--batch-size",
    "100",
    "--seed",
    "3",
    "--device",
    "cpu",
];

fn train(out: &Path, mnist: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "train",
        "ebgan",
        "--out",
        out.to_str().unwrap(),
        "--data-dir",
        mnist.to_str().unwrap(),
    ];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(extra);
    run(&args)
}

/// `kusari sample`: `n` images of `snapshot` on the CPU into the .npy file `out`.
fn sample(snapshot: &Path, n: usize, out: &Path) -> std::process::Output {
    let n = n.to_string();
    run(&[
        "sample",
        "--snapshot",
        snapshot.to_str().unwrap(),
        "--n",
        &n,
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ])
}

#[test]
fn two_epochs_write_log_images_snapshot_and_samples() {
    let Some(mnist) = mnist_dir("two_epochs_write_log_images_snapshot_and_samples") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let output = train(&out, &mnist, &["--epochs", "2"]);
    assert!(
        output.status.success(),
        "training failed:\n{}",
        stderr(&output)
    );

    let log = read_log(&out);
    assert_eq!(log.len(), 2, "one entry per epoch");
    for (i, entry) in log.iter().enumerate() {
        for key in [
            "epoch",
            "iteration",
            "elapsed_time",
            "dis/loss",
            "gen/loss",
            "gen/pt",
        ] {
            assert!(
                entry.get(key).is_some_and(|v| v.is_number()),
                "entry {i} lacks {key}: {entry:?}"
            );
        }
        assert_eq!(entry["epoch"].as_u64(), Some(i as u64 + 1));
        assert_eq!(entry["iteration"].as_u64(), Some(600 * (i as u64 + 1)));
    }
    // 100 tiles of 28×28 in a 10×10 grid with 1-pixel gaps.
    for epoch in [1, 2] {
        assert_eq!(
            png_size(&out.join(format!("generated_epoch{epoch}.png"))),
            (289, 289)
        );
        let (w, h) = png_size(&out.join(format!("reconstructed_epoch{epoch}.png")));
        assert_eq!(
            (w, h),
            (289, 20 * 29 - 1),
            "originals and reconstructions interleaved"
        );
    }
    assert_eq!(png_size(&out.join("loss.png")), (640, 480));
    let args: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("args.json")).unwrap()).unwrap();
    assert_eq!(args["config"]["model"]["model"]["gen"]["units"], 128);
    let snapshot = out.join("snapshot_iter_1200");
    assert!(
        snapshot.join("state.safetensors").exists(),
        "a snapshot of the last epoch"
    );
    assert!(temporaries(&out).is_empty(), "{:?}", temporaries(&out));

    let npy = dir.path().join("samples.npy");
    let output = sample(&snapshot, 37, &npy);
    assert!(output.status.success(), "{}", stderr(&output));
    let (shape, data) = read_npy_u8(&npy);
    assert_eq!(shape, vec![37, 28, 28]);
    assert!(
        data.iter().any(|&b| b > 128) && data.iter().any(|&b| b < 128),
        "samples are not blank"
    );

    // The same seed gives the same samples; numpy reads the file if it is installed.
    let again = dir.path().join("again.npy");
    let output = sample(&snapshot, 37, &again);
    assert!(output.status.success());
    assert_eq!(read_npy_u8(&again).1, data);
    let numpy = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, numpy; a = numpy.load(sys.argv[1]); print(a.dtype, a.shape)",
            npy.to_str().unwrap(),
        ])
        .output();
    match numpy {
        Ok(o) if o.status.success() => {
            assert_eq!(
                String::from_utf8_lossy(&o.stdout).trim(),
                "uint8 (37, 28, 28)"
            );
        }
        _ => eprintln!("numpy is not installed: the .npy file was checked against the format only"),
    }
}

fn model_tensors(snapshot: &Path) -> Vec<(String, Vec<f32>)> {
    snapshot_tensors(snapshot, &["updater/models/", "updater/optimizers/"])
}

#[test]
fn a_run_killed_mid_epoch_resumes_exactly() {
    let Some(mnist) = mnist_dir("a_run_killed_mid_epoch_resumes_exactly") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let output = train(&whole, &mnist, &["--epochs", "3"]);
    assert!(output.status.success(), "{}", stderr(&output));

    let killed = dir.path().join("killed");
    let mut args = vec![
        "train",
        "ebgan",
        "--out",
        killed.to_str().unwrap(),
        "--data-dir",
        mnist.to_str().unwrap(),
        "--epochs",
        "3",
    ];
    args.extend_from_slice(SMALL);
    let start = Instant::now();
    let mut child = kusari()
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let first = killed.join("snapshot_iter_600");
    while !first.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "no snapshot after 10 minutes"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first snapshot"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A third of an epoch into epoch 2.
    std::thread::sleep(start.elapsed() / 3);
    child.kill().unwrap(); // SIGKILL: no cleanup runs.
    child.wait().unwrap();
    assert!(
        !killed.join("snapshot_iter_1200").exists(),
        "killed too late: epoch 2 had finished"
    );

    let mut args = vec![
        "train",
        "ebgan",
        "--out",
        killed.to_str().unwrap(),
        "--data-dir",
        mnist.to_str().unwrap(),
        "--epochs",
        "3",
        "--resume",
    ];
    args.extend_from_slice(SMALL);
    let output = run(&args);
    assert!(
        output.status.success(),
        "resume failed:\n{}",
        stderr(&output)
    );

    assert_eq!(
        without_time(read_log(&killed)),
        without_time(read_log(&whole))
    );
    assert_eq!(
        model_tensors(&killed.join("snapshot_iter_1800")),
        model_tensors(&whole.join("snapshot_iter_1800"))
    );
}

/// The learning rates a snapshot's optimizers hold.
fn snapshot_rates(snapshot: &Path) -> (f64, f64) {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(snapshot.join("state.json")).unwrap())
            .unwrap();
    let rate = |net: &str| {
        state["updater"]["optimizers"][net]["config"]["lr"]
            .as_f64()
            .unwrap_or_else(|| panic!("no {net} rate in {}", snapshot.display()))
    };
    (rate("gen"), rate("dis"))
}

#[test]
fn lr_decay_reaches_zero_and_a_run_resumed_without_it_trains_at_the_configured_rate() {
    let Some(mnist) = mnist_dir(
        "lr_decay_reaches_zero_and_a_run_resumed_without_it_trains_at_the_configured_rate",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("decayed");
    let decayed = train(&out, &mnist, &["--iterations", "8", "--lr-decay", "linear"]);
    assert!(decayed.status.success(), "{}", stderr(&decayed));
    assert_eq!(snapshot_rates(&out.join("snapshot_iter_8")), (0.0, 0.0));

    let resumed = train(
        &out,
        &mnist,
        &["--iterations", "10", "--resume", "--lr-decay", "none"],
    );
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(snapshot_rates(&out.join("snapshot_iter_10")), (1e-3, 1e-3));
}

/// The snapshot's tensors under `prefix`, keyed by the rest of their names.
fn tensors_under(snapshot: &Path, prefix: &str) -> Vec<(String, Vec<f32>)> {
    let state = kusari_trainer::State::load(snapshot, &candle_core::Device::Cpu).unwrap();
    state
        .tensors()
        .iter()
        .filter_map(|(name, tensor)| {
            let rest = name.strip_prefix(prefix)?;
            Some((
                rest.to_string(),
                tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            ))
        })
        .collect()
}

#[test]
fn gen_ema_keeps_an_averaged_generator_that_sampling_uses() {
    let Some(mnist) = mnist_dir("gen_ema_keeps_an_averaged_generator_that_sampling_uses") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ema");
    let trained = train(&out, &mnist, &["--epochs", "1", "--gen-ema", "0.99"]);
    assert!(trained.status.success(), "{}", stderr(&trained));
    assert!(out.join("generated_epoch1.png").is_file());
    assert!(out.join("generated_average_epoch1.png").is_file());

    let snapshot = out.join("snapshot_iter_600");
    let live = tensors_under(&snapshot, "updater/models/gen/");
    let average = tensors_under(&snapshot, "extensions/gen_average/average/");
    assert_eq!(
        live.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        average.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "the average holds every variable of G"
    );
    assert_ne!(
        live, average,
        "600 steps at decay 0.99 move the average off the live weights"
    );

    let by_default = dir.path().join("default.npy");
    let output = sample(&snapshot, 50, &by_default);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("moving average"),
        "{}",
        stderr(&output)
    );
    let live_npy = dir.path().join("live.npy");
    let output = run(&[
        "sample",
        "--snapshot",
        snapshot.to_str().unwrap(),
        "--n",
        "50",
        "--weights",
        "live",
        "--out",
        live_npy.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_ne!(
        std::fs::read(&by_default).unwrap(),
        std::fs::read(&live_npy).unwrap(),
        "the average's samples differ from the live G's on the same noise"
    );

    // A run without --gen-ema has no average to sample.
    let plain = dir.path().join("plain");
    let trained = train(&plain, &mnist, &["--iterations", "2"]);
    assert!(trained.status.success(), "{}", stderr(&trained));
    let output = run(&[
        "sample",
        "--snapshot",
        plain.join("snapshot_iter_2").to_str().unwrap(),
        "--n",
        "5",
        "--weights",
        "average",
        "--out",
        dir.path().join("none.npy").to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("without --gen-ema"),
        "{}",
        stderr(&output)
    );
}
