//! What kusari promises about resuming, diverged runs, output folders and
//! exit statuses (docs/reliability.md), each tried through the `kusari`
//! binary on a tiny synthetic MNIST: no real data needed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use candle_core::Device;
use common::*;
use kusari_trainer::extensions::snapshot_paths;
use kusari_trainer::State;

fn train<'a>(data: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "ebgan",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    args
}

fn resume<'a>(out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train", "ebgan", "--out", out.to_str().unwrap(), "--resume"];
    args.extend_from_slice(extra);
    args
}

fn assert_ok(output: &std::process::Output) {
    assert!(
        output.status.success(),
        "kusari failed ({}):\n{}",
        output.status,
        stderr(output)
    );
}

/// The newest snapshot's iteration and training time.
fn newest(out: &Path) -> (u64, f64) {
    let path = snapshot_paths(out).unwrap().pop().expect("a snapshot");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path.join("state.json")).unwrap()).unwrap();
    (
        json["iteration"].as_u64().unwrap(),
        json["elapsed_seconds"].as_f64().unwrap(),
    )
}

#[test]
fn a_time_limited_run_continues_with_any_new_length() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic_mnist(&dir.path().join("mnist"), 100, 0);
    let out = dir.path().join("t");
    assert_ok(&run(&train(
        &data,
        &out,
        &["--epochs", "100000", "--time-limit", "1s"],
    )));
    // The last snapshot may be the regular one of the stopping iteration,
    // written a moment before the stop trigger looked at the clock.
    let (stopped_at, elapsed) = newest(&out);
    assert!(elapsed >= 0.9, "{elapsed}");
    // A count of iterations instead of the time limit.
    let target = stopped_at + 50;
    let target_text = target.to_string();
    assert_ok(&run(&resume(&out, &["--iterations", &target_text])));
    assert_eq!(newest(&out).0, target);
    // A longer time limit is honoured: it counts the whole run's training time.
    assert_ok(&run(&resume(&out, &["--time-limit", "2s"])));
    let (_, elapsed) = newest(&out);
    assert!((1.9..4.0).contains(&elapsed), "stopped at {elapsed} s");

    // A time limit added to a run that had none.
    let plain = dir.path().join("p");
    assert_ok(&run(&train(&data, &plain, &["--iterations", "20"])));
    assert_ok(&run(&resume(
        &plain,
        &["--iterations", "100000000", "--time-limit", "1s"],
    )));
    let (iteration, elapsed) = newest(&plain);
    assert!(
        iteration > 20 && (0.9..3.0).contains(&elapsed),
        "{iteration} {elapsed}"
    );
}

/// A copy of `snapshot` at `to` with every weight of G set to NaN.
fn poisoned_copy(snapshot: &Path, to: &Path) {
    let state = State::load(snapshot, &Device::Cpu).unwrap();
    let mut poisoned = State::new();
    let mut hit = 0;
    for (key, tensor) in state.tensors() {
        if key.starts_with("updater/models/gen/") && tensor.dtype().is_float() {
            poisoned.put_tensor(key.clone(), &(tensor * f64::NAN).unwrap());
            hit += 1;
        } else {
            poisoned.put_tensor(key.clone(), tensor);
        }
    }
    assert!(hit > 0, "no G tensors in {}", snapshot.display());
    let json: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(snapshot.join("state.json")).unwrap()).unwrap();
    for (key, value) in json {
        poisoned.put(key, &value).unwrap();
    }
    poisoned.save(to).unwrap();
}

#[test]
fn diverged_runs_leave_only_finite_snapshots_and_non_finite_weights_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic_mnist(&dir.path().join("mnist"), 100, 0);
    let out = dir.path().join("n");
    // Ten iterations an epoch, a snapshot every iteration, a rate that diverges.
    let output = run(&train(
        &data,
        &out,
        &[
            "--iterations",
            "300",
            "--lr",
            "1e7",
            "--snapshot-every",
            "0.1",
            "--keep-snapshots",
            "1000",
        ],
    ));
    assert_fails_with(&output, &["training has diverged"]);
    let err = stderr(&output);
    assert!(
        err.contains("the last snapshot with finite values is")
            || err.contains("no snapshot with finite values"),
        "{err}"
    );
    for path in snapshot_paths(&out).unwrap() {
        let state = State::load(&path, &Device::Cpu).unwrap();
        assert_eq!(
            state.first_non_finite().unwrap(),
            None,
            "{} is offered for resuming",
            path.display()
        );
    }

    // A snapshot whose G is NaN (as older versions could write) is neither
    // resumed nor sampled from.
    let good = dir.path().join("g");
    assert_ok(&run(&train(&data, &good, &["--iterations", "5"])));
    let snapshot = snapshot_paths(&good).unwrap().pop().unwrap();
    let poisoned = dir.path().join("bad").join("snapshot_iter_5");
    poisoned_copy(&snapshot, &poisoned);
    let npy = dir.path().join("s.npy");
    let output = run(&[
        "sample",
        "--snapshot",
        poisoned.to_str().unwrap(),
        "--n",
        "4",
        "--out",
        npy.to_str().unwrap(),
    ]);
    assert_fails_with(&output, &["not finite", "earlier snapshot"]);
    assert!(!npy.exists());
    let output = run(&[
        "train",
        "ebgan",
        "--resume",
        poisoned.to_str().unwrap(),
        "--iterations",
        "10",
    ]);
    assert_fails_with(&output, &["cannot be resumed", "NaN"]);
}

#[test]
fn learning_rates_and_betas_may_change_on_resume_and_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic_mnist(&dir.path().join("mnist"), 100, 0);
    let out = dir.path().join("r");
    assert_ok(&run(&train(&data, &out, &["--iterations", "20"])));
    assert_ok(&run(&resume(
        &out,
        &["--iterations", "40", "--lr-g", "1e-4", "--beta1", "0.9"],
    )));
    let log = read_log(&out);
    let rate = |iteration: u64| {
        log.iter()
            .find(|e| e["iteration"].as_u64() == Some(iteration))
            .and_then(|e| e["gen/lr"].as_f64())
            .unwrap_or_else(|| panic!("no gen/lr at iteration {iteration}: {log:?}"))
    };
    assert!((rate(20) - 1e-3).abs() < 1e-12, "{}", rate(20));
    assert!((rate(40) - 1e-4).abs() < 1e-12, "{}", rate(40));
    let args: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("args.json")).unwrap()).unwrap();
    let resumes = args["resumes"].as_array().expect("a resume history");
    assert_eq!(resumes.len(), 1);
    assert_eq!(resumes[0]["iteration"], 20);
    let changed = resumes[0]["changed"].to_string();
    for needle in [
        "--lr-g (0.001 → 0.0001)",
        "--beta1 (0.5 → 0.9)",
        "--iterations",
    ] {
        assert!(changed.contains(needle), "{changed}");
    }
    let adam = &args["config"]["model"]["gen_optimizer"];
    assert_eq!(
        (adam["lr"].as_f64(), adam["beta1"].as_f64()),
        (Some(1e-4), Some(0.9))
    );
}

/// Starts `kusari ARGS` in the background.
fn spawn(args: &[&str]) -> Child {
    kusari()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kusari")
}

/// Waits until `path` exists (a run has started writing), at most a minute.
fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[test]
fn one_run_per_folder_and_a_signal_stop_has_its_own_status() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic_mnist(&dir.path().join("mnist"), 100, 0);
    let out = dir.path().join("c");
    let first = spawn(&train(
        &data,
        &out,
        &[
            "--seed",
            "7",
            "--iterations",
            "100000000",
            "--log-every-iterations",
            "10",
        ],
    ));
    wait_for(&out.join("log"));
    let output = run(&train(&data, &out, &["--seed", "8", "--iterations", "10"]));
    assert_fails_with(&output, &["in use by another kusari run", "--out"]);
    // Even a resume of the same run waits its turn.
    assert_fails_with(&run(&resume(&out, &["--iterations", "10"])), &["in use"]);

    // Schedulers may deliver the signal twice: still one graceful stop.
    signal(&first, "TERM");
    signal(&first, "TERM");
    let stopped = first.wait_with_output().unwrap();
    assert_eq!(
        stopped.status.code(),
        Some(75),
        "a stopped run exits with 75:\n{}",
        stderr(&stopped)
    );
    let args: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("args.json")).unwrap()).unwrap();
    assert_eq!(args["config"]["seed"], 7);
    let (iteration, _) = newest(&out);
    assert!(iteration > 0);

    // A run killed outright holds no lock: the next one starts at once.
    let killed = spawn(&resume(&out, &["--iterations", "100000000"]));
    std::thread::sleep(Duration::from_millis(300));
    signal(&killed, "KILL");
    let _ = killed.wait_with_output();
    let target = (iteration + 10).to_string();
    assert_ok(&run(&resume(&out, &["--iterations", &target])));
}

#[test]
fn moved_data_is_found_and_checked_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let first = synthetic_mnist(&dir.path().join("A"), 100, 0);
    let out = dir.path().join("d");
    assert_ok(&run(&train(&first, &out, &["--iterations", "10"])));
    let moved = dir.path().join("B");
    std::fs::rename(&first, &moved).unwrap();

    assert_ok(&run(&resume(
        &out,
        &["--iterations", "20", "--data-dir", moved.to_str().unwrap()],
    )));
    // The stored folder is gone: $MNIST_DIR is looked at.
    let output = kusari()
        .args(resume(&out, &["--iterations", "30"]))
        .env("MNIST_DIR", &moved)
        .output()
        .unwrap();
    assert_ok(&output);
    assert_eq!(newest(&out).0, 30);

    // Other images under the run's name are refused.
    let other = synthetic_mnist(&dir.path().join("C"), 100, 1);
    let output = run(&resume(
        &out,
        &["--iterations", "40", "--data-dir", other.to_str().unwrap()],
    ));
    assert_fails_with(&output, &["not the ones this run was trained on"]);
}

#[test]
fn sizes_from_files_and_flags_are_checked_before_use() {
    let dir = tempfile::tempdir().unwrap();
    // A .npy header whose shape wraps a 64-bit size to zero.
    let npy = dir.path().join("huge.npy");
    let mut header =
        "{'descr': '|u1', 'fortran_order': False, 'shape': (1152921504606846976, 28, 28), }"
            .to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    std::fs::write(&npy, bytes).unwrap();
    let output = run(&["eval", "--samples", npy.to_str().unwrap()]);
    assert_fails_with(&output, &["huge.npy", "impossibly large"]);

    let data = synthetic_mnist(&dir.path().join("mnist"), 100, 0);
    let out = dir.path().join("o");
    assert_ok(&run(&train(&data, &out, &["--iterations", "5"])));
    let snapshot = snapshot_paths(&out).unwrap().pop().unwrap();
    let target = dir.path().join("many.npy");
    let output = run(&[
        "sample",
        "--snapshot",
        snapshot.to_str().unwrap(),
        "--n",
        "1000000000000",
        "--out",
        target.to_str().unwrap(),
    ]);
    assert_fails_with(&output, &["--n 1000000000000", "fewer images"]);
    assert!(!target.exists());
    assert!(temporaries(dir.path()).is_empty());
}

#[test]
fn temporaries_of_killed_runs_are_removed_and_snapshots_are_readable_by_all() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic_mnist(&dir.path().join("mnist"), 100, 0);
    let out = dir.path().join("k");
    assert_ok(&run(&train(&data, &out, &["--iterations", "10"])));
    // What a kill -9 during a snapshot and a log write leaves (no process
    // has an id this high).
    let stale_snapshot = out.join(".snapshot_iter_20.4194400.tmp");
    std::fs::create_dir(&stale_snapshot).unwrap();
    std::fs::write(stale_snapshot.join("state.safetensors"), vec![0u8; 1000]).unwrap();
    let stale_log = out.join(".log.4194400.tmp");
    std::fs::write(&stale_log, b"[").unwrap();
    assert_ok(&run(&resume(&out, &["--iterations", "20"])));
    assert!(!stale_snapshot.exists() && !stale_log.exists());
    assert!(temporaries(&out).is_empty(), "{:?}", temporaries(&out));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let snapshot = snapshot_paths(&out).unwrap().pop().unwrap();
        assert_eq!(
            mode(snapshot.join("state.safetensors")),
            mode(out.join("args.json")),
            "state.safetensors has its own permissions"
        );
    }
}

/// Every value of the run's TensorBoard files: `(tag, step, scalar or kind)`.
fn tensorboard_values(out: &Path) -> Vec<(String, u64, String)> {
    use kusari_trainer::extensions::tensorboard::{event_files, read_events, SummaryKind};
    let mut values = vec![];
    for file in event_files(out).unwrap() {
        for event in read_events(&file).unwrap() {
            for value in event.values {
                let what = match value.kind {
                    SummaryKind::Scalar(v) => format!("{v}"),
                    SummaryKind::Image { width, height, .. } => format!("image {width}x{height}"),
                    SummaryKind::Text(_) => "text".into(),
                    SummaryKind::Plugin { name, .. } => name,
                };
                values.push((value.tag, event.step, what));
            }
        }
    }
    values
}

#[test]
fn tensorboard_files_hold_the_log_images_and_configuration_and_resume_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic_mnist(&dir.path().join("mnist"), 100, 0);
    let flags = ["--log-every-iterations", "10", "--snapshot-every", "1"];
    let straight = dir.path().join("straight");
    let mut args = vec!["--iterations", "30"];
    args.extend(flags);
    assert_ok(&run(&train(&data, &straight, &args)));
    let values = tensorboard_values(&straight);
    let log = read_log(&straight);
    for entry in &log {
        let step = entry["iteration"].as_u64().unwrap();
        let want = format!("{}", entry["dis/loss"].as_f64().unwrap() as f32);
        assert!(
            values.contains(&("dis/loss".to_string(), step, want.clone())),
            "dis/loss {want} at {step} missing from {values:?}"
        );
    }
    let kinds = |tag: &str| values.iter().filter(|v| v.0 == tag).count();
    // Ten iterations an epoch: a grid of samples and of reconstructions each epoch.
    assert_eq!(kinds("images/generated"), 3);
    assert_eq!(kinds("images/reconstructed"), 3);
    assert_eq!(kinds("config/args.json"), 1);
    assert_eq!(kinds("_hparams_/session_start_info"), 1);
    assert_eq!(kinds("_hparams_/session_end_info"), 1);

    // Stopped by a signal mid-interval, then resumed: the same events as a
    // run never stopped.
    let flags = ["--log-every-iterations", "500", "--snapshot-every", "1"];
    let straight = dir.path().join("straight-long");
    let mut args = vec!["--iterations", "6000"];
    args.extend(flags);
    assert_ok(&run(&train(&data, &straight, &args)));
    let resumed = dir.path().join("resumed");
    let stopped = spawn(&train(&data, &resumed, &args));
    wait_for(&resumed.join("log"));
    signal(&stopped, "TERM");
    let output = stopped.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(75), "{}", stderr(&output));
    assert!(newest(&resumed).0 < 6000);
    assert_ok(&run(&resume(&resumed, &[])));
    let files = kusari_trainer::extensions::tensorboard::event_files(&resumed).unwrap();
    assert_eq!(files.len(), 1, "the resumed run continues its event file");
    let comparable = |values: Vec<(String, u64, String)>| -> Vec<(String, u64, String)> {
        values
            .into_iter()
            .filter(|(tag, _, _)| tag != "elapsed_time" && !tag.starts_with("_hparams_"))
            // The configuration is written again where the resume started.
            .filter(|(tag, step, _)| !(tag == "config/args.json" && *step > 0))
            .collect()
    };
    assert_eq!(
        comparable(tensorboard_values(&resumed)),
        comparable(tensorboard_values(&straight))
    );

    let every = dir.path().join("every");
    assert_ok(&run(&train(
        &data,
        &every,
        &["--iterations", "12", "--tensorboard", "iterations"],
    )));
    let per_iteration = tensorboard_values(&every)
        .into_iter()
        .filter(|(tag, _, _)| tag == "iteration/dis/loss")
        .count();
    assert_eq!(per_iteration, 12);

    let off = dir.path().join("off");
    assert_ok(&run(&train(
        &data,
        &off,
        &["--iterations", "5", "--tensorboard", "off"],
    )));
    assert!(kusari_trainer::extensions::tensorboard::event_files(&off)
        .unwrap()
        .is_empty());
}

#[test]
fn bad_flags_leave_no_folder_behind() {
    let dir = tempfile::tempdir().unwrap();
    let output = kusari()
        .current_dir(dir.path())
        .args(["train", "ebgan", "--batch-size", "0"])
        .output()
        .unwrap();
    assert_fails_with(&output, &["--batch-size"]);
    let missing = dir.path().join("nowhere");
    let output = run(&[
        "train",
        "ebgan",
        "--out",
        missing.to_str().unwrap(),
        "--resume",
    ]);
    assert_fails_with(&output, &["no snapshot"]);
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
}
