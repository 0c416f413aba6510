//! `cargo xtask experiment <NAME|FILE.toml>`: trains the grid a grid file
//! describes (`experiments/*.toml`, docs/grids.md) — cells × seeds — with the
//! release `kusari`, on this machine (`--executor local`, `--jobs N` at a
//! time) or as a SLURM job array (`--executor slurm`), judges each run, and
//! writes `docs/results/<name>.md` (table, answer, command, machine),
//! `<name>.png` (FID over epochs) and `<name>.json` (raw numbers). Rerunning
//! it skips finished runs and resumes interrupted ones; `status` counts them.

mod flags;
mod grid;
mod machine;
mod options;
mod plot;
mod report;
mod run_dir;
mod runner;
mod slurm;
mod stats;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use self::flags::Flags;
use self::grid::{Budget, GridConfig};
use self::machine::{git_commit, Machine};
use self::options::{Action, Executor, Options};
use self::report::{duration_text, Report};
use self::run_dir::{unix_now, write_atomic, RunDir, RunRecord, RunResult, RunState};
use self::runner::{Outcome, RunsLock, Share};
use crate::workspace_root;

/// The four MNIST files (each may also be `.gz`, or spelled `.idx`).
const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// One run of the plan.
pub struct PlannedRun {
    pub config: GridConfig,
    pub seed: u64,
    pub dir: RunDir,
    /// Every `kusari train` flag but seed, budget and out.
    pub flags: Flags,
}

/// Runs `cargo xtask experiment ARGS`.
pub fn experiment(args: &[String]) -> Result<ExitCode> {
    let root = workspace_root();
    let Some(options) = options::parse(args, &root)? else {
        return Ok(ExitCode::SUCCESS);
    };
    options.check_budget()?;
    let plan = plan(&options);
    match options.action {
        Action::Status => {
            slurm::print_status(&options, &plan)?;
            return Ok(ExitCode::SUCCESS);
        }
        Action::Collect => {
            let command = std::env::var("KUSARI_EXPERIMENT_COMMAND")
                .unwrap_or_else(|_| command_line(&options.args, mnist_dir().ok().as_deref()));
            write_report(&options, &plan, &command)?;
            return Ok(ExitCode::SUCCESS);
        }
        Action::Task(k) => return run_task(&options, &plan, k),
        Action::Run => {}
    }
    let mnist = mnist_dir()?;
    if options.seeds < 3 {
        eprintln!(
            "xtask: note: {} seed(s) per configuration; the documents need at least 3",
            options.seeds
        );
    }
    match &options.executor {
        Executor::Slurm { .. } => slurm::submit(&options, &plan, &mnist, &root),
        Executor::Local { jobs } => run_local(&options, &plan, &mnist, &root, *jobs),
    }
}

/// `--executor local`: trains the unfinished runs on this machine, `jobs` at
/// a time, then writes the document.
fn run_local(
    options: &Options,
    plan: &[PlannedRun],
    mnist: &Path,
    root: &Path,
    jobs: u32,
) -> Result<ExitCode> {
    runner::install_signal_handler()?;
    let lock = RunsLock::acquire(&options.runs_dir)?;
    let binary = crate::train::build_release()?;
    let commit = git_commit(root);
    let command = command_line(&options.args, Some(mnist));
    let share = Share::of(jobs);
    let at_a_time = if jobs == 1 {
        "one at a time".to_string()
    } else {
        format!(
            "{jobs} at a time, {} thread(s) each",
            share.threads.unwrap_or(1)
        )
    };
    println!(
        "== experiment {}: {} cells × {} seeds = {} runs of {}, {at_a_time}",
        options.grid.name,
        options.grid.cells.len(),
        options.seeds,
        plan.len(),
        options.budget.text()
    );
    println!("   runs in {}", options.runs_dir.display());

    let next = AtomicUsize::new(0);
    let timed = Mutex::new(Vec::new());
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let stopped_at: Mutex<Option<usize>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(plan.len() as u32).max(1) {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                if k >= plan.len() || first_error.lock().map_or(true, |e| e.is_some()) {
                    return;
                }
                if runner::stop_requested() {
                    let mut stop = stopped_at.lock().expect("not poisoned");
                    *stop = Some(stop.map_or(k, |s| s.min(k)));
                    return;
                }
                let context = LocalRun {
                    options,
                    plan,
                    binary: &binary,
                    commit: &commit,
                    lock: Some(&lock),
                    share,
                    timed: &timed,
                };
                match context.train(k) {
                    Ok(true) => {}
                    Ok(false) => {
                        let mut stop = stopped_at.lock().expect("not poisoned");
                        *stop = Some(stop.map_or(k, |s| s.min(k)));
                        return;
                    }
                    Err(e) => {
                        if let Ok(mut first) = first_error.lock() {
                            first.get_or_insert(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().expect("not poisoned") {
        return Err(e);
    }
    if let Some(k) = stopped_at.into_inner().expect("not poisoned") {
        return Ok(stopped(&command, k, plan.len()));
    }
    drop(lock);
    write_report(options, plan, &command)?;
    Ok(ExitCode::SUCCESS)
}

/// A SLURM array task: trains run `k` like the local executor, with the
/// task's CPUs. A run stopped by a signal (preemption, the time limit's
/// warning, `scontrol requeue`) is requeued to resume from its snapshot and
/// the task exits 75; a failure is recorded for `status`.
fn run_task(options: &Options, plan: &[PlannedRun], k: usize) -> Result<ExitCode> {
    if k >= plan.len() {
        bail!(
            "--task {k}: the plan has {} runs (0–{})",
            plan.len(),
            plan.len().saturating_sub(1)
        );
    }
    runner::install_signal_handler()?;
    let binary = crate::train::release_binary();
    let threads = std::env::var("SLURM_CPUS_PER_TASK")
        .ok()
        .and_then(|c| c.parse().ok());
    let context = LocalRun {
        options,
        plan,
        binary: &binary,
        commit: &git_commit(&workspace_root()),
        lock: None,
        share: Share {
            echo: true,
            threads,
        },
        timed: &Mutex::new(Vec::new()),
    };
    match context.train(k) {
        Ok(true) => Ok(ExitCode::SUCCESS),
        Ok(false) => {
            if let (Ok(job), Ok(task)) = (
                std::env::var("SLURM_ARRAY_JOB_ID"),
                std::env::var("SLURM_ARRAY_TASK_ID"),
            ) {
                // Already requeued when SLURM itself stopped the task; the
                // time limit's warning needs it.
                let requeued = std::process::Command::new("scontrol")
                    .args(["requeue", &format!("{job}_{task}")])
                    .status();
                println!("xtask: task stopped with a snapshot; requeue: {requeued:?}");
            }
            Ok(ExitCode::from(runner::KUSARI_STOPPED as u8))
        }
        Err(e) => {
            let failure = serde_json::json!({ "status": 1, "error": format!("{e:#}") });
            let _ = write_atomic(
                &plan[k].dir.path.join(run_dir::FAILED_FILE),
                &serde_json::to_vec_pretty(&failure)?,
            );
            Err(e)
        }
    }
}

/// What one local run needs from the experiment.
struct LocalRun<'a> {
    options: &'a Options,
    plan: &'a [PlannedRun],
    binary: &'a Path,
    commit: &'a str,
    /// The runs folder's lock (a local experiment; SLURM tasks run side by side).
    lock: Option<&'a RunsLock>,
    share: Share,
    /// Wall times of whole runs, to predict the rest.
    timed: &'a Mutex<Vec<f64>>,
}

impl LocalRun<'_> {
    /// Trains run `k` of the plan unless it is done; `Ok(false)` when the
    /// experiment was asked to stop during it.
    fn train(&self, k: usize) -> Result<bool> {
        let (options, plan) = (self.options, self.plan);
        let run = &plan[k];
        let title = format!(
            "[{}/{}] {} seed {} ({})",
            k + 1,
            plan.len(),
            run.config.label,
            run.seed,
            run.config.flags.command_text()
        );
        run.dir.settle_killed_attempt()?;
        let state = run.dir.state(options.budget)?;
        match &state {
            RunState::Finished => {
                run.dir.check_flags(&run.flags)?;
                if let Some(n) = options.grid.judge.and_then(|j| j.final_samples) {
                    judge_finished_run(self.binary, run, n)?;
                }
                let result = run_result(run, options.budget)?;
                println!("== {title}: finished earlier{}", scores(&result));
                return Ok(true);
            }
            RunState::Diverged(message) => {
                run.dir.check_flags(&run.flags)?;
                println!("== {title}: diverged earlier ({message})");
                return Ok(true);
            }
            RunState::Resumable => {
                run.dir.check_flags(&run.flags)?;
                println!("== {title}: resuming from its newest snapshot");
            }
            RunState::Fresh => {
                run.dir.clear_for_restart()?;
                println!("== {title}: starting");
            }
        }
        let mut record = match run.dir.record()? {
            Some(r) if r.flags == run.flags => r,
            _ => RunRecord::new(run.flags.clone()),
        };
        record.attempts += 1;
        if !record.commits.iter().any(|c| c == self.commit) {
            record.commits.push(self.commit.to_string());
        }
        record.running_since = Some(unix_now());
        run.dir.write_record(&record)?;

        let started = Instant::now();
        let args = kusari_args(
            &options.grid.objective,
            run,
            options.budget,
            state == RunState::Resumable,
        );
        let (outcome, wall) =
            runner::run_kusari(self.binary, &args, &run.dir.path, self.lock, &self.share)?;
        record.wall_seconds += wall.as_secs_f64();
        record.running_since = None;
        run.dir.write_record(&record)?;
        match outcome {
            Outcome::Exited { completed } => {
                if !completed {
                    if runner::stop_requested() {
                        return Ok(false);
                    }
                    bail!(
                        "kusari stopped {} before its budget (was it stopped from outside?); \
                         rerun the same command to resume it",
                        run.dir.path.display()
                    );
                }
                run.dir.mark_finished()?;
                if let Some(n) = options.grid.judge.and_then(|j| j.final_samples) {
                    judge_finished_run(self.binary, run, n)?;
                }
                let result = run_result(run, options.budget)?;
                let left = {
                    let mut timed = self.timed.lock().expect("not poisoned");
                    if state == RunState::Fresh {
                        // Only whole runs predict the time the others take.
                        timed.push(started.elapsed().as_secs_f64());
                    }
                    time_left(&timed, plan.len() - k - 1)
                };
                println!(
                    "== {title}: done in {}{}{left}",
                    duration_text(wall.as_secs_f64()),
                    scores(&result),
                );
            }
            Outcome::Diverged(message) => {
                run.dir.mark_diverged(&message)?;
                println!("== {title}: diverged ({message}); counted as such, not retried");
            }
            Outcome::Failed { status, tail } => {
                if runner::stop_requested() {
                    return Ok(false);
                }
                bail!(
                    "kusari failed ({status}) on {}; its output is in {}:\n{tail}",
                    run.dir.path.display(),
                    run.dir.path.join(runner::STDERR_FILE).display()
                );
            }
        }
        Ok(true)
    }
}

/// Every run, seed by seed (all cells of seed 1 first), so an experiment
/// stopped early still compares the cells evenly. The order is the SLURM
/// array's task order too.
pub fn plan(options: &Options) -> Vec<PlannedRun> {
    let shared = options.shared_flags();
    let cells = &options.grid.cells;
    (1..=u64::from(options.seeds))
        .flat_map(|seed| {
            let shared = &shared;
            cells.iter().map(move |config| PlannedRun {
                config: config.clone(),
                seed,
                dir: RunDir::new(&options.runs_dir, &config.label, seed),
                flags: shared.with(&config.flags),
            })
        })
        .collect()
}

/// The pseudo-flag a grid varies to train cells with different objectives
/// (`kusari train OBJECTIVE`), e.g. `[[axis]] flag = "objective"`.
pub const OBJECTIVE_FLAG: &str = "objective";

/// `kusari train OBJECTIVE FLAGS --seed S BUDGET --out DIR [--resume]`; a
/// cell's `objective` flag picks the subcommand, else the grid's does.
pub fn kusari_args(objective: &str, run: &PlannedRun, budget: Budget, resume: bool) -> Vec<String> {
    let objective = run.flags.get(OBJECTIVE_FLAG).unwrap_or(objective);
    let mut args: Vec<String> = vec!["train".into(), objective.into()];
    args.extend(run.flags.without(OBJECTIVE_FLAG).args());
    args.extend(["--seed".into(), run.seed.to_string()]);
    args.extend(budget.flags());
    args.extend(["--out".into(), run.dir.path.display().to_string()]);
    if resume {
        args.push("--resume".into());
    }
    args
}

fn run_result(run: &PlannedRun, budget: Budget) -> Result<RunResult> {
    let diverged = match run.dir.state(budget)? {
        RunState::Diverged(message) => Some(message),
        _ => None,
    };
    let wall = run.dir.record()?.map_or(0.0, |r| r.wall_seconds);
    let mut result = RunResult::from_log(
        &run.config.label,
        run.seed,
        &run.dir.log()?,
        budget,
        diverged,
        wall,
    );
    if let (None, Some(judged)) = (&result.diverged, run.dir.final_eval()?) {
        let number = |key: &str| judged[key].as_f64().filter(|v| v.is_finite());
        result.fid = number("eval/fid");
        result.inception_score = number("eval/is");
        result.min_class_share = number("eval/min_class_share");
    }
    Ok(result)
}

/// `[judge] final`: samples `n` images from the run's last snapshot and
/// judges them with `kusari eval`, into `final_eval.json`.
fn judge_finished_run(binary: &Path, run: &PlannedRun, n: u64) -> Result<()> {
    if run.dir.final_eval()?.is_some() {
        return Ok(());
    }
    let snapshot = run
        .dir
        .newest_snapshot()?
        .with_context(|| format!("{} has no snapshot to judge", run.dir.path.display()))?;
    let samples = run.dir.path.join("final_samples.npy");
    let sampled = std::process::Command::new(binary)
        .args(["sample", "--snapshot"])
        .arg(&snapshot)
        .args(["--n", &n.to_string(), "--out"])
        .arg(&samples)
        .output()
        .context("running kusari sample")?;
    if !sampled.status.success() {
        bail!(
            "kusari sample failed on {}: {}",
            snapshot.display(),
            String::from_utf8_lossy(&sampled.stderr).trim()
        );
    }
    let judged = std::process::Command::new(binary)
        .args(["eval", "--samples"])
        .arg(&samples)
        .output()
        .context("running kusari eval")?;
    let _ = std::fs::remove_file(&samples);
    if !judged.status.success() {
        bail!(
            "kusari eval failed on samples of {}: {}",
            snapshot.display(),
            String::from_utf8_lossy(&judged.stderr).trim()
        );
    }
    // Its last line is the JSON of the report.
    let stdout = String::from_utf8_lossy(&judged.stdout);
    let mut json: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l.trim()).ok())
        .context("kusari eval printed no JSON line")?;
    json["snapshot"] = serde_json::Value::from(snapshot.display().to_string());
    write_atomic(
        &run.dir.path.join(run_dir::FINAL_EVAL_FILE),
        &serde_json::to_vec_pretty(&json)?,
    )
}

fn scores(result: &RunResult) -> String {
    match (result.fid, result.inception_score) {
        (Some(fid), Some(is)) => format!(": FID {fid:.2}, IS {is:.3}"),
        _ => ": no final evaluation in its log".to_string(),
    }
}

/// `; about 40 min left` from the mean time of the runs trained so far.
fn time_left(timed: &[f64], runs_left: usize) -> String {
    if runs_left == 0 || timed.is_empty() {
        return String::new();
    }
    let mean = timed.iter().sum::<f64>() / timed.len() as f64;
    format!(
        "; {runs_left} runs left, about {}",
        duration_text(mean * runs_left as f64)
    )
}

fn stopped(command: &str, done: usize, total: usize) -> ExitCode {
    eprintln!(
        "xtask: experiment stopped at run {} of {total}; rerun the same command to continue where it stopped:\n  {command}",
        done + 1
    );
    ExitCode::from(130)
}

/// The folder `$MNIST_DIR` names, checked to hold the four MNIST files.
fn mnist_dir() -> Result<PathBuf> {
    let Some(dir) = std::env::var_os("MNIST_DIR") else {
        bail!(
            "MNIST_DIR is not set; point it at a folder with the four MNIST files \
             (e.g. MNIST_DIR=/path/to/mnist cargo xtask experiment …)"
        );
    };
    let dir = PathBuf::from(dir);
    if !dir.is_dir() {
        bail!(
            "MNIST_DIR={} is not a folder; point it at the folder with the four MNIST files",
            dir.display()
        );
    }
    for name in MNIST_FILES {
        let dotted = name.replacen("-idx", ".idx", 1);
        let found = [
            name.to_string(),
            format!("{name}.gz"),
            dotted.clone(),
            format!("{dotted}.gz"),
        ]
        .iter()
        .any(|f| dir.join(f).is_file());
        if !found {
            bail!(
                "MNIST_DIR={} has no {name}(.gz); it needs the four MNIST files ({})",
                dir.display(),
                MNIST_FILES.join(", ")
            );
        }
    }
    Ok(dir)
}

/// The command as the reader would type it again.
fn command_line(args: &[String], mnist: Option<&Path>) -> String {
    let quote = |s: &str| {
        if !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@".contains(&b))
        {
            s.to_string()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    let mut words = vec![];
    if let Some(mnist) = mnist {
        words.push(format!("MNIST_DIR={}", quote(&mnist.display().to_string())));
    }
    words.extend(["cargo".into(), "xtask".into(), "experiment".into()]);
    // Flags of one invocation are not part of the command to rerun.
    let once = ["--collect", "--dry-run"];
    let overrides_at = args.iter().position(|a| a == "--").unwrap_or(args.len());
    words.extend(
        args.iter()
            .enumerate()
            .filter(|(i, a)| *i > overrides_at || !once.contains(&a.as_str()))
            .map(|(_, a)| quote(a)),
    );
    words.join(" ")
}

/// Reads every run's results and writes the document, the plot and the JSON.
pub fn write_report(options: &Options, plan: &[PlannedRun], command: &str) -> Result<()> {
    let mut runs = Vec::new();
    let mut wall = 0.0;
    let mut commits: Vec<String> = Vec::new();
    for run in plan {
        let result = run_result(run, options.budget)?;
        wall += result.wall_seconds;
        for commit in run.dir.record()?.map(|r| r.commits).unwrap_or_default() {
            if !commits.contains(&commit) {
                commits.push(commit);
            }
        }
        runs.push(result);
    }
    let grid = &options.grid;
    let configs = stats::aggregate(&grid.cells, &runs);
    let file_name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let name = &grid.name;
    let (axis, over) = match options.budget {
        Budget::Time(_) => (plot::Axis::Minutes, "training time"),
        _ => (plot::Axis::Epoch, "epochs"),
    };
    let png = plot::fid_plot(
        &configs,
        &format!("experiment {name}: FID over {over}"),
        axis,
    )?;
    let plot_path = options.plot_path();
    if let Some(png) = &png {
        write_atomic(&plot_path, png)?;
    }
    let executed = match &options.executor {
        Executor::Local { jobs: 1 } => "one at a time".to_string(),
        Executor::Local { jobs } => format!("{jobs} at a time"),
        Executor::Slurm { .. } => "as a SLURM job array".to_string(),
    };
    let sample_files = copy_sample_grids(options, plan)?;
    let report = Report {
        experiment: name.clone(),
        question: grid.question.clone(),
        command: command.to_string(),
        shared_flags: options.shared_flags(),
        overrides: options.overrides.clone(),
        varied: grid.varied.clone(),
        grid_file: grid_file_text(&grid.path),
        objective: grid.objective.clone(),
        budget: options.budget.text(),
        budget_flags: options.budget.flags().join(" "),
        epochs: options.budget.epochs(),
        executed,
        seeds: options.seeds,
        machine: Machine::current(),
        commits,
        wall_seconds: wall,
        configs,
        runs,
        final_samples: grid.judge.and_then(|j| j.final_samples),
        sample_files,
        plot_file: png.as_ref().map(|_| file_name(&plot_path)),
        json_file: file_name(&options.json_path()),
    };
    write_atomic(&options.doc, report::markdown(&report).as_bytes())?;
    let json = serde_json::to_vec_pretty(&report).context("encoding the raw numbers")?;
    write_atomic(&options.json_path(), &json)?;

    println!("\n{}", report::results_table(&report.configs));
    println!("{}\n", report::answer(&report.configs));
    println!("wrote {}", options.doc.display());
    if png.is_some() {
        println!("wrote {}", plot_path.display());
    }
    println!("wrote {}", options.json_path().display());
    Ok(())
}

/// Copies each cell's newest sample grid of its first seed that has one
/// (the averaged G's where the run keeps one) beside the document, into
/// `<doc stem>/<label>.png`; returns `(label, path relative to the document)`.
fn copy_sample_grids(options: &Options, plan: &[PlannedRun]) -> Result<Vec<(String, String)>> {
    let stem = options
        .doc
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let folder = options.doc.with_file_name(&stem);
    let mut copied = vec![];
    for cell in &options.grid.cells {
        let newest = plan
            .iter()
            .filter(|r| r.config.label == cell.label)
            .find_map(|r| newest_grid(&r.dir.path));
        let Some(source) = newest else {
            continue;
        };
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
        let target = folder.join(format!("{}.png", cell.label));
        let bytes =
            std::fs::read(&source).with_context(|| format!("cannot read {}", source.display()))?;
        write_atomic(&target, &bytes)?;
        copied.push((cell.label.clone(), format!("{stem}/{}.png", cell.label)));
    }
    Ok(copied)
}

/// The run's newest `generated_average_epoch{E}.png`, else `generated_epoch{E}.png`.
fn newest_grid(run: &Path) -> Option<PathBuf> {
    let names: Vec<String> = std::fs::read_dir(run)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    ["generated_average_epoch", "generated_epoch"]
        .iter()
        .find_map(|prefix| {
            names
                .iter()
                .filter_map(|n| {
                    let epoch: u64 = n.strip_prefix(prefix)?.strip_suffix(".png")?.parse().ok()?;
                    Some((epoch, n))
                })
                .max()
                .map(|(_, n)| run.join(n))
        })
}

/// The grid file's path relative to the workspace when it lies inside it.
fn grid_file_text(path: &Path) -> String {
    let root = workspace_root();
    let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    absolute
        .strip_prefix(&root)
        .unwrap_or(&absolute)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_goes_seed_by_seed() -> Result<()> {
        let args: Vec<String> = [
            "bn",
            "--seeds",
            "2",
            "--runs-dir",
            "/r",
            "--",
            "--units-g",
            "8",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let options = options::parse(&args, &root)?.unwrap();
        let plan = plan(&options);
        let order: Vec<(String, u64)> = plan
            .iter()
            .map(|r| (r.config.label.clone(), r.seed))
            .collect();
        assert_eq!(
            order,
            [
                ("joint", 1),
                ("separate", 1),
                ("real-stats", 1),
                ("joint", 2),
                ("separate", 2),
                ("real-stats", 2)
            ]
            .map(|(c, s)| (c.to_string(), s))
        );
        assert_eq!(plan[2].dir.path, PathBuf::from("/r/real-stats/seed1"));
        assert_eq!(plan[2].flags.get("bn"), Some("real-stats"));
        assert_eq!(plan[2].flags.get("units-g"), Some("8"));
        let args = kusari_args("ebgan", &plan[2], Budget::Epochs(3), true);
        assert_eq!(&args[..2], ["train", "ebgan"]);
        let tail: Vec<&str> = args[args.len() - 7..].iter().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "--seed",
                "1",
                "--epochs",
                "3",
                "--out",
                "/r/real-stats/seed1",
                "--resume"
            ]
        );
        Ok(())
    }

    /// The grid files describe the runs the committed documents were made
    /// from: the same flags, cells, seeds and budget (kusari's runs repeat
    /// bit for bit, so the documents reproduce).
    #[test]
    fn the_grid_files_plan_the_runs_of_the_committed_documents() -> Result<()> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for name in ["bn-mlp", "activation-mlp"] {
            let report: serde_json::Value = serde_json::from_slice(&std::fs::read(
                root.join(format!("docs/results/{name}.json")),
            )?)?;
            let options = options::parse(&[name.to_string()], &root)?.unwrap();
            let recorded: Flags = serde_json::from_value(report["shared_flags"].clone())?;
            assert_eq!(options.shared_flags(), recorded, "{name}");
            assert_eq!(report["epochs"], 5);
            assert_eq!(options.budget, Budget::Epochs(5));
            assert_eq!(report["seeds"], u64::from(options.seeds));
            let labels: Vec<&str> = report["configs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["label"].as_str().unwrap())
                .collect();
            let cells: Vec<&str> = options
                .grid
                .cells
                .iter()
                .map(|c| c.label.as_str())
                .collect();
            assert_eq!(cells, labels, "{name}");
            assert_eq!(
                options.grid.varied,
                serde_json::from_value::<Vec<String>>(report["varied"].clone())?
            );
        }
        Ok(())
    }

    #[test]
    fn the_command_line_is_quoted_for_a_shell() {
        let args: Vec<String> = ["bn", "--runs-dir", "my runs"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            command_line(&args, Some(Path::new("/data/mnist"))),
            "MNIST_DIR=/data/mnist cargo xtask experiment bn --runs-dir 'my runs'"
        );
    }
}
