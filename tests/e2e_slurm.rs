//! `cargo xtask experiment … --executor slurm` on a real SLURM cluster (the
//! one-node cluster of `scripts/slurm-local.sh start`): a 2×2 grid with 2
//! seeds gives the same runs and numbers as `--executor local`, rerunning a
//! finished grid submits nothing, and a task requeued in the middle of its
//! run ends with a log identical to an uninterrupted run's.
//!
//! Needs MNIST (`MNIST_DIR`) and a cluster (`sinfo` answering). Without them
//! it says it was skipped, unless `KUSARI_REQUIRE_SLURM=1` (CI sets it),
//! when it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cargo_xtask(args: &[&str], mnist: &Path) -> Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    Command::new(cargo)
        .current_dir(root())
        .env("MNIST_DIR", mnist)
        .arg("xtask")
        .args(args)
        .output()
        .expect("run cargo xtask")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn assert_ok(output: &Output) {
    assert!(output.status.success(), "{}", text(output));
}

/// Whether a SLURM cluster answers here.
fn cluster_up() -> bool {
    Command::new("sinfo")
        .arg("-h")
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

fn squeue(name: &str) -> String {
    let output = Command::new("squeue")
        .args(["-h", "-r", "-n", name, "-o", "%i %T"])
        .output()
        .expect("run squeue");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Waits until no job of `names` is in the queue (ten minutes at most).
fn wait_for_queue(names: &[&str]) {
    let start = Instant::now();
    while names.iter().any(|n| !squeue(n).trim().is_empty()) {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "SLURM jobs still queued after ten minutes:\n{}",
            names.iter().map(|n| squeue(n)).collect::<String>()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The array job id in `submitted array job N (…)`.
fn array_id(output: &Output) -> String {
    let text = text(output);
    text.split("submitted array job ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no array job in:\n{text}"))
        .to_string()
}

/// The runs of a document's JSON, without the times.
fn runs(doc_json: &Path) -> Vec<serde_json::Value> {
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(doc_json).unwrap()).unwrap();
    report["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| {
            let mut r = r.clone();
            let map = r.as_object_mut().unwrap();
            map.remove("train_seconds");
            map.remove("wall_seconds");
            map.remove("fid_times");
            r
        })
        .collect()
}

fn write_grid(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn a_grid_on_slurm_matches_the_local_one_and_a_requeued_task_resumes_exactly() {
    let required = std::env::var("KUSARI_REQUIRE_SLURM").is_ok_and(|v| v == "1");
    let Some(mnist) = mnist_dir("the SLURM executor test") else {
        assert!(!required, "KUSARI_REQUIRE_SLURM=1 but MNIST_DIR is not set");
        return;
    };
    if !cluster_up() {
        assert!(
            !required,
            "KUSARI_REQUIRE_SLURM=1 but no SLURM cluster answers; start one with scripts/slurm-local.sh start"
        );
        eprintln!(
            "skipped the SLURM executor test: no cluster (scripts/slurm-local.sh start runs one)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = format!("e2e-grid-{}", std::process::id());
    let grid = write_grid(
        dir.path(),
        &name,
        "question = \"Do both executors give the same numbers?\"\nseeds = 2\n\
         [budget]\niterations = 300\n[judge]\nevery = 0.25\nsamples = 500\n\
         [base]\nunits-g = 32\nunits-d = 16\nlog-every-iterations = 150\n\
         [[axis]]\nflag = \"bn\"\nvalues = [\"joint\", \"separate\"]\n\
         [[axis]]\nflag = \"margin\"\nvalues = [5, 10]\nlabels = [\"m5\", \"m10\"]\n",
    );
    let grid = grid.to_str().unwrap();
    let folder = |what: &str| dir.path().join(what);
    let (local, slurm) = (folder("local"), folder("slurm"));
    let doc = |runs: &Path| runs.join("doc.md");
    let args = |runs: &Path, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "experiment",
            grid,
            "--runs-dir",
            runs.to_str().unwrap(),
            "--doc",
            doc(runs).to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cargo_xtask(&refs, &mnist)
    };

    assert_ok(&run(args(&local, &["--jobs", "2"])));
    let submitted = run(args(&slurm, &["--executor", "slurm", "--cpus", "1"]));
    assert_ok(&submitted);
    array_id(&submitted);
    let job = format!("kusari-{name}");
    wait_for_queue(&[&job, &format!("{job}-collect")]);
    let json = |runs: &Path| doc(runs).with_extension("json");
    assert!(
        json(&slurm).is_file(),
        "the collection job wrote no document; its log:\n{}",
        std::fs::read_dir(slurm.join("slurm/logs"))
            .map(|d| d
                .flatten()
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .collect::<String>())
            .unwrap_or_default()
    );
    let (from_local, from_slurm) = (runs(&json(&local)), runs(&json(&slurm)));
    assert_eq!(from_local.len(), 8);
    assert!(
        from_local.iter().all(|r| r["fid"].as_f64().is_some()),
        "{from_local:?}"
    );
    assert_eq!(from_slurm, from_local, "SLURM and local runs differ");
    let md = std::fs::read_to_string(doc(&slurm)).unwrap();
    assert!(md.contains("as a SLURM job array"), "{md}");

    // Rerunning a finished grid submits nothing.
    let again = run(args(&slurm, &["--executor", "slurm", "--cpus", "1"]));
    assert_ok(&again);
    assert!(
        text(&again).contains("nothing to submit"),
        "{}",
        text(&again)
    );
    assert!(squeue(&job).trim().is_empty());

    // A task requeued in the middle of its run.
    let long_name = format!("e2e-requeue-{}", std::process::id());
    let long = write_grid(
        dir.path(),
        &long_name,
        "question = \"Does a requeued task end where an uninterrupted run does?\"\nseeds = 1\n\
         [budget]\niterations = 12000\n\
         [base]\nunits-g = 64\nunits-d = 32\nlog-every-iterations = 1000\nsnapshot-every = 100\n\
         [[cell]]\nlabel = \"one\"\n",
    );
    let long_args = |runs: &Path, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "experiment",
            long.to_str().unwrap(),
            "--runs-dir",
            runs.to_str().unwrap(),
            "--doc",
            runs.join("doc.md").to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let (requeued_runs, straight_runs) = (folder("requeued"), folder("straight"));
    let submitted = run(long_args(
        &requeued_runs,
        &["--executor", "slurm", "--cpus", "1"],
    ));
    assert_ok(&submitted);
    let task = format!("{}_0", array_id(&submitted));
    let run_dir = requeued_runs.join("one/seed1");
    let start = Instant::now();
    while read_log_entries(&run_dir) < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the task never logged"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = Command::new("scontrol")
        .args(["requeue", &task])
        .status()
        .unwrap();
    assert!(status.success(), "scontrol requeue {task} failed");
    // SLURM holds a requeued job back for a while; let it start again now.
    let long_job = format!("kusari-{long_name}");
    let start = Instant::now();
    while !squeue(&long_job).trim().is_empty() {
        let _ = Command::new("scontrol")
            .args(["update", &format!("JobId={task}"), "StartTime=now"])
            .output();
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "the requeued task never ended"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    wait_for_queue(&[&long_job, &format!("{long_job}-collect")]);
    let stderr = std::fs::read_to_string(run_dir.join("kusari.stderr")).unwrap();
    assert!(
        stderr.contains("resuming from"),
        "the task was not interrupted and resumed:\n{stderr}"
    );
    assert_ok(&run(long_args(&straight_runs, &[])));
    let requeued = without_time(read_log(&run_dir));
    let straight = without_time(read_log(&straight_runs.join("one/seed1")));
    assert_eq!(requeued.last().unwrap()["iteration"], 12000);
    assert_eq!(requeued, straight, "the requeued run's log differs");
}

/// How many entries a run's log holds now (0 when there is none yet).
fn read_log_entries(run: &Path) -> usize {
    std::fs::read_to_string(run.join("log"))
        .ok()
        .and_then(|t| serde_json::from_str::<Vec<serde_json::Value>>(&t).ok())
        .map_or(0, |l| l.len())
}
