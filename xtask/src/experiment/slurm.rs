//! `--executor slurm`: one `sbatch` job array whose task K trains run K of
//! the plan (resuming it when it has a snapshot), and a collection job that
//! writes the document once the array has ended; `status` counts the runs.
//!
//! Every task is `xtask experiment … --task K` on the node: the same code
//! that trains a run locally, so a task forwards SLURM's signals to kusari
//! (which snapshots and exits 75), marks the run finished or diverged, and
//! requeues itself when a signal stopped it before its budget. The runs
//! folder, MNIST and both binaries must lie on a filesystem every node sees.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::options::{Executor, Options};
use super::run_dir::{unix_now, write_atomic, RunRecord, RunState};
use super::{command_line, PlannedRun};

/// The folder of the scripts, inside the runs folder.
const SLURM_DIR: &str = "slurm";
/// What the last submission submitted.
const JOBS_FILE: &str = "jobs.json";

/// The job name of the experiment's array (and, with `-collect`, of its collection job).
fn job_name(options: &Options) -> String {
    format!("kusari-{}", options.grid.name)
}

/// Single-quotes `text` for bash.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

/// The `xtask experiment` arguments that name this experiment (grid, seeds,
/// budget, folders, overrides), with absolute paths, for the scripts, with
/// `action` (`--task "$SLURM_ARRAY_TASK_ID"`, `--collect`) before the overrides.
fn experiment_command(options: &Options, action: &str) -> String {
    let mut args: Vec<String> = experiment_args(options).iter().map(|a| quote(a)).collect();
    let at = args.iter().position(|a| a == "'--'").unwrap_or(args.len());
    args.insert(at, action.to_string());
    args.join(" ")
}

fn experiment_args(options: &Options) -> Vec<String> {
    let mut args = vec![
        absolute(&options.grid.path).display().to_string(),
        "--seeds".into(),
        options.seeds.to_string(),
        "--runs-dir".into(),
        absolute(&options.runs_dir).display().to_string(),
        "--doc".into(),
        absolute(&options.doc).display().to_string(),
        "--executor".into(),
        "slurm".into(),
    ];
    if options.budget != options.grid.budget {
        if let Some(epochs) = options.budget.epochs() {
            args.extend(["--epochs".into(), epochs.to_string()]);
        }
    }
    if options.overrides.iter().next().is_some() {
        args.push("--".into());
        args.extend(options.overrides.args());
    }
    args
}

/// The array script for the task ids `tasks`.
fn array_script(options: &Options, tasks: &[usize], xtask: &Path, mnist: &Path) -> Result<String> {
    let Executor::Slurm {
        settings,
        max_parallel,
        ..
    } = &options.executor
    else {
        bail!("not a SLURM experiment");
    };
    let runs = absolute(&options.runs_dir);
    let ids: Vec<String> = tasks.iter().map(usize::to_string).collect();
    let mut array = ids.join(",");
    if let Some(n) = max_parallel {
        let _ = write!(array, "%{n}");
    }
    let mut s = String::new();
    let _ = writeln!(s, "#!/bin/bash");
    let _ = writeln!(
        s,
        "# Written by cargo xtask experiment {} --executor slurm: task K trains run K of the plan.",
        options.grid.name
    );
    let _ = writeln!(s, "#SBATCH --job-name={}", job_name(options));
    let _ = writeln!(s, "#SBATCH --array={array}");
    let _ = writeln!(
        s,
        "#SBATCH --output={}/{SLURM_DIR}/logs/%A_%a.out",
        runs.display()
    );
    let _ = writeln!(s, "#SBATCH --open-mode=append");
    // Preempted or requeued tasks start again and resume from their snapshot.
    let _ = writeln!(s, "#SBATCH --requeue");
    // Two minutes before the time limit: a snapshot, then a requeue.
    let _ = writeln!(s, "#SBATCH --signal=B:TERM@120");
    let _ = writeln!(s, "#SBATCH --cpus-per-task={}", settings.cpus.unwrap_or(2));
    if let Some(p) = &settings.partition {
        let _ = writeln!(s, "#SBATCH --partition={p}");
    }
    if let Some(t) = &settings.time {
        let _ = writeln!(s, "#SBATCH --time={t}");
    }
    if let Some(g) = settings.gpus.filter(|&g| g > 0) {
        let _ = writeln!(s, "#SBATCH --gpus-per-task={g}");
    }
    if let Some(m) = &settings.mem {
        let _ = writeln!(s, "#SBATCH --mem={m}");
    }
    for line in &settings.extra {
        let _ = writeln!(s, "{line}");
    }
    let _ = writeln!(
        s,
        "export MNIST_DIR={}",
        quote(&mnist.display().to_string())
    );
    let _ = writeln!(
        s,
        "exec {} experiment {}",
        quote(&xtask.display().to_string()),
        experiment_command(options, "--task \"$SLURM_ARRAY_TASK_ID\"")
    );
    Ok(s)
}

/// The collection job's script: the document from the run folders.
fn collect_script(options: &Options, xtask: &Path, command: &str) -> String {
    let runs = absolute(&options.runs_dir);
    format!(
        "#!/bin/bash\n\
         # Written by cargo xtask experiment {name} --executor slurm: writes the document once the array has ended.\n\
         #SBATCH --job-name={job}-collect\n\
         #SBATCH --output={runs}/{SLURM_DIR}/logs/collect-%j.out\n\
         #SBATCH --cpus-per-task=1\n\
         export KUSARI_EXPERIMENT_COMMAND={command}\n\
         exec {xtask} experiment {args}\n",
        name = options.grid.name,
        job = job_name(options),
        runs = runs.display(),
        command = quote(command),
        xtask = quote(&xtask.display().to_string()),
        args = experiment_command(options, "--collect"),
    )
}

/// The array task ids of this experiment in the queue, with their state
/// (`PENDING`, `RUNNING`, …); empty without `squeue`.
fn queued(options: &Options) -> BTreeMap<usize, String> {
    let output = Command::new("squeue")
        .args(["-h", "-r", "-n", &job_name(options), "-o", "%K %T"])
        .output();
    let Some(output) = output.ok().filter(|o| o.status.success()) else {
        return BTreeMap::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (task, state) = line.trim().split_once(' ')?;
            Some((task.parse().ok()?, state.to_string()))
        })
        .collect()
}

fn sbatch(args: &[&str], script: &Path) -> Result<String> {
    let output = Command::new("sbatch")
        .args(args)
        .arg(script)
        .output()
        .context("cannot run sbatch; is SLURM installed here (scripts/slurm-local.sh starts a one-node cluster)?")?;
    if !output.status.success() {
        bail!(
            "sbatch {} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    // `--parsable` prints `id` or `id;cluster`.
    let text = String::from_utf8_lossy(&output.stdout);
    let id = text
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        bail!("sbatch printed `{}`, not a job id", text.trim());
    }
    Ok(id)
}

/// Submits the unfinished runs as one array and the collection job after it.
pub fn submit(
    options: &Options,
    plan: &[PlannedRun],
    mnist: &Path,
    root: &Path,
) -> Result<std::process::ExitCode> {
    let Executor::Slurm { dry_run, .. } = options.executor else {
        bail!("not a SLURM experiment");
    };
    let in_queue = queued(options);
    let mut tasks = vec![];
    let mut finished = 0;
    for (k, run) in plan.iter().enumerate() {
        match run.dir.state(options.budget)? {
            RunState::Finished | RunState::Diverged(_) => {
                run.dir.check_flags(&run.flags)?;
                finished += 1;
            }
            RunState::Resumable | RunState::Fresh => {
                run.dir.check_flags(&run.flags)?;
                if !in_queue.contains_key(&k) {
                    tasks.push(k);
                }
            }
        }
    }
    let command = std::env::var("KUSARI_EXPERIMENT_COMMAND")
        .unwrap_or_else(|_| command_line(&options.args, Some(mnist)));
    println!(
        "== experiment {} on SLURM: {} runs, {finished} finished, {} queued or running, {} to submit",
        options.grid.name,
        plan.len(),
        in_queue.len(),
        tasks.len()
    );
    if tasks.is_empty() {
        if in_queue.is_empty() {
            println!("   nothing to submit: every run is finished; writing the document");
            super::write_report(options, plan, &command)?;
        } else {
            println!("   nothing to submit: the rest is in the queue");
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }

    let xtask = std::env::current_exe().context("cannot find the xtask binary")?;
    let folder = absolute(&options.runs_dir).join(SLURM_DIR);
    let array = array_script(options, &tasks, &xtask, mnist)?;
    let collect = collect_script(options, &xtask, &command);
    if dry_run {
        println!("--- {}/array.sbatch\n{array}", folder.display());
        println!(
            "--- {}/collect.sbatch (submitted with --dependency=afterany:<array id>)\n{collect}",
            folder.display()
        );
        return Ok(std::process::ExitCode::SUCCESS);
    }
    crate::train::build_release()?;
    std::fs::create_dir_all(folder.join("logs"))
        .with_context(|| format!("cannot create {}", folder.display()))?;
    let commit = super::machine::git_commit(root);
    for &k in &tasks {
        let run = &plan[k];
        let mut record = run
            .dir
            .record()?
            .filter(|r| r.flags == run.flags)
            .unwrap_or_else(|| RunRecord::new(run.flags.clone()));
        if !record.commits.contains(&commit) {
            record.commits.push(commit.clone());
        }
        std::fs::create_dir_all(&run.dir.path)
            .with_context(|| format!("cannot create {}", run.dir.path.display()))?;
        run.dir.write_record(&record)?;
    }
    let array_path = folder.join("array.sbatch");
    let collect_path = folder.join("collect.sbatch");
    write_atomic(&array_path, array.as_bytes())?;
    write_atomic(&collect_path, collect.as_bytes())?;
    let array_id = sbatch(&["--parsable"], &array_path)?;
    let collect_id = sbatch(
        &["--parsable", &format!("--dependency=afterany:{array_id}")],
        &collect_path,
    )?;
    let jobs = serde_json::json!({
        "array": array_id,
        "collect": collect_id,
        "tasks": tasks,
        "submitted_at": unix_now(),
    });
    write_atomic(&folder.join(JOBS_FILE), &serde_json::to_vec_pretty(&jobs)?)?;
    let status_args: Vec<&str> = options
        .args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--dry-run")
        .collect();
    println!(
        "   submitted array job {array_id} ({} tasks) and collection job {collect_id}; \
         follow with: cargo xtask experiment status {}",
        tasks.len(),
        status_args.join(" ")
    );
    Ok(std::process::ExitCode::SUCCESS)
}

/// `cargo xtask experiment status`: how many runs are done, running,
/// pending and failed, from the run folders and (where it exists) `squeue`.
pub fn print_status(options: &Options, plan: &[PlannedRun]) -> Result<()> {
    let in_queue = queued(options);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut lines = vec![];
    for (k, run) in plan.iter().enumerate() {
        let state = run.dir.state(options.budget)?;
        let queue = in_queue.get(&k).map(String::as_str);
        let what = match (&state, queue) {
            (RunState::Finished, _) => "done",
            (RunState::Diverged(_), _) => "done (diverged)",
            (_, Some("RUNNING" | "COMPLETING")) => "running",
            (_, Some(_)) => "pending",
            _ if run.dir.failure().is_some() => "failed",
            _ if running_here(run) => "running",
            (RunState::Resumable, None) => "interrupted",
            (RunState::Fresh, None) => "not started",
        };
        *counts.entry(what).or_default() += 1;
        lines.push(format!(
            "  {:>4}  {:<24} seed {:<3} {what}{}",
            k,
            run.config.label,
            run.seed,
            run.dir
                .failure()
                .filter(|_| what == "failed")
                .map_or(String::new(), |s| format!(" (exit status {s})"))
        ));
    }
    println!(
        "experiment {}: {} runs in {}",
        options.grid.name,
        plan.len(),
        options.runs_dir.display()
    );
    for line in lines {
        println!("{line}");
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!("{}", summary.join(", "));
    if let Ok(text) = std::fs::read_to_string(options.runs_dir.join(SLURM_DIR).join(JOBS_FILE)) {
        if let Ok(jobs) = serde_json::from_str::<serde_json::Value>(&text) {
            println!(
                "last submission: array job {}, collection job {}",
                jobs["array"].as_str().unwrap_or("?"),
                jobs["collect"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(())
}

/// Whether a local experiment is training the run now (its record says an
/// attempt started and no attempt ended since).
fn running_here(run: &PlannedRun) -> bool {
    run.dir
        .record()
        .ok()
        .flatten()
        .is_some_and(|r: RunRecord| r.running_since.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(extra: &[&str]) -> Options {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut args: Vec<String> = ["bn", "--executor", "slurm", "--runs-dir", "/shared/runs"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        super::super::options::parse(&args, &root).unwrap().unwrap()
    }

    #[test]
    fn the_array_script_carries_the_resources_and_the_resume() -> Result<()> {
        let o = options(&[
            "--max-parallel",
            "2",
            "--partition",
            "gpu",
            "--time",
            "01:00:00",
            "--gpus",
            "1",
            "--mem",
            "8G",
            "--sbatch",
            "#SBATCH --account=lab",
            "--",
            "--units-g",
            "64",
        ]);
        let script = array_script(
            &o,
            &[0, 2, 5],
            Path::new("/ws/target/debug/xtask"),
            Path::new("/data/mnist"),
        )?;
        for needle in [
            "#SBATCH --job-name=kusari-bn\n",
            "#SBATCH --array=0,2,5%2\n",
            "#SBATCH --output=/shared/runs/slurm/logs/%A_%a.out\n",
            "#SBATCH --requeue\n",
            "#SBATCH --signal=B:TERM@120\n",
            "#SBATCH --partition=gpu\n",
            "#SBATCH --time=01:00:00\n",
            "#SBATCH --gpus-per-task=1\n",
            "#SBATCH --mem=8G\n",
            "#SBATCH --account=lab\n",
            "export MNIST_DIR='/data/mnist'\n",
            "exec '/ws/target/debug/xtask' experiment '",
            "'--runs-dir' '/shared/runs'",
            "--task \"$SLURM_ARRAY_TASK_ID\" '--' '--units-g' '64'\n",
        ] {
            assert!(script.contains(needle), "{needle:?} missing from\n{script}");
        }
        let collect = collect_script(&o, Path::new("/x"), "cargo xtask experiment bn");
        assert!(
            collect.contains("#SBATCH --job-name=kusari-bn-collect"),
            "{collect}"
        );
        assert!(
            collect.contains("--collect '--' '--units-g' '64'\n"),
            "{collect}"
        );
        assert!(collect.contains("KUSARI_EXPERIMENT_COMMAND='cargo xtask experiment bn'"));
        Ok(())
    }
}
