//! `cargo xtask experiment <bn|activation|pt|margin>`: trains a grid of
//! configurations × seeds on MNIST with the release `kusari`, one run at a
//! time, judges each, and writes `docs/results/<name>.md` (table, answer,
//! command, machine), `<name>.png` (FID over epochs) and `<name>.json` (raw
//! numbers). Rerunning it skips finished runs and resumes interrupted ones.

mod base;
mod flags;
mod grid;
mod machine;
mod options;
mod plot;
mod report;
mod run_dir;
mod runner;
mod stats;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use self::flags::Flags;
use self::grid::GridConfig;
use self::machine::{git_commit, Machine};
use self::options::Options;
use self::report::{duration_text, Report};
use self::run_dir::{unix_now, write_atomic, RunDir, RunRecord, RunResult, RunState};
use self::runner::{Outcome, RunsLock};
use crate::workspace_root;

/// The four MNIST files (each may also be `.gz`, or spelled `.idx`).
const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// One run of the plan.
struct PlannedRun {
    config: GridConfig,
    seed: u64,
    dir: RunDir,
    /// Every `kusari train` flag but seed, epochs and out.
    flags: Flags,
}

/// Runs `cargo xtask experiment ARGS`.
pub fn experiment(args: &[String]) -> Result<ExitCode> {
    let root = workspace_root();
    let Some(options) = options::parse(args, &root)? else {
        return Ok(ExitCode::SUCCESS);
    };
    options.check_budget()?;
    let mnist = mnist_dir()?;
    if options.seeds < 3 {
        eprintln!(
            "xtask: note: {} seed(s) per configuration; the documents need at least 3",
            options.seeds
        );
    }
    runner::install_signal_handler()?;
    let lock = RunsLock::acquire(&options.runs_dir)?;
    let binary = crate::train::build_release()?;
    let commit = git_commit(&root);
    let plan = plan(&options);
    let command = command_line(args, &mnist);

    println!(
        "== experiment {}: {} configurations × {} seeds = {} runs of {} epochs, one at a time",
        options.experiment.name(),
        options.experiment.configs().len(),
        options.seeds,
        plan.len(),
        options.epochs
    );
    println!("   runs in {}", options.runs_dir.display());
    let mut timed = Vec::new();
    for (k, run) in plan.iter().enumerate() {
        if runner::stop_requested() {
            return Ok(stopped(&command, k, plan.len()));
        }
        let title = format!(
            "[{}/{}] {} seed {} ({})",
            k + 1,
            plan.len(),
            run.config.label,
            run.seed,
            run.config.flags.command_text()
        );
        run.dir.settle_killed_attempt()?;
        let state = run.dir.state(options.epochs)?;
        match &state {
            RunState::Finished => {
                run.dir.check_flags(&run.flags)?;
                let result = run_result(run, options.epochs)?;
                println!("== {title}: finished earlier{}", scores(&result));
                continue;
            }
            RunState::Diverged(message) => {
                run.dir.check_flags(&run.flags)?;
                println!("== {title}: diverged earlier ({message})");
                continue;
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
        if !record.commits.contains(&commit) {
            record.commits.push(commit.clone());
        }
        record.running_since = Some(unix_now());
        run.dir.write_record(&record)?;

        let started = Instant::now();
        let args = kusari_args(run, options.epochs, state == RunState::Resumable);
        let (outcome, wall) = runner::run_kusari(&binary, &args, &run.dir.path, &lock)?;
        record.wall_seconds += wall.as_secs_f64();
        record.running_since = None;
        run.dir.write_record(&record)?;
        match outcome {
            Outcome::Exited => {
                if run.dir.state(options.epochs)? != RunState::Finished {
                    if runner::stop_requested() {
                        return Ok(stopped(&command, k, plan.len()));
                    }
                    bail!(
                        "kusari exited before {} reached epoch {} (was it stopped from outside?); \
                         rerun the same command to resume it",
                        run.dir.path.display(),
                        options.epochs
                    );
                }
                let result = run_result(run, options.epochs)?;
                if state == RunState::Fresh {
                    // Only whole runs predict the time the others take.
                    timed.push(started.elapsed().as_secs_f64());
                }
                println!(
                    "== {title}: done in {}{}{}",
                    duration_text(wall.as_secs_f64()),
                    scores(&result),
                    time_left(&timed, plan.len() - k - 1)
                );
            }
            Outcome::Diverged(message) => {
                run.dir.mark_diverged(&message)?;
                println!("== {title}: diverged ({message}); counted as such, not retried");
            }
            Outcome::Failed { status, tail } => {
                if runner::stop_requested() {
                    return Ok(stopped(&command, k, plan.len()));
                }
                bail!(
                    "kusari failed ({status}) on {}; its output is in {}:\n{tail}",
                    run.dir.path.display(),
                    run.dir.path.join(runner::STDERR_FILE).display()
                );
            }
        }
    }
    drop(lock);
    write_report(&options, &plan, &command)?;
    Ok(ExitCode::SUCCESS)
}

/// Every run, seed by seed (all configurations of seed 1 first), so an
/// experiment stopped early still compares the configurations evenly.
fn plan(options: &Options) -> Vec<PlannedRun> {
    let shared = options.shared_flags();
    let configs = options.experiment.configs();
    (1..=u64::from(options.seeds))
        .flat_map(|seed| {
            let shared = &shared;
            configs.iter().map(move |config| PlannedRun {
                config: config.clone(),
                seed,
                dir: RunDir::new(&options.runs_dir, &config.label, seed),
                flags: shared.with(&config.flags),
            })
        })
        .collect()
}

/// `kusari train ebgan FLAGS --seed S --epochs E --out DIR [--resume]`.
fn kusari_args(run: &PlannedRun, epochs: u32, resume: bool) -> Vec<String> {
    let mut args: Vec<String> = vec!["train".into(), "ebgan".into()];
    args.extend(run.flags.args());
    args.extend([
        "--seed".into(),
        run.seed.to_string(),
        "--epochs".into(),
        epochs.to_string(),
        "--out".into(),
        run.dir.path.display().to_string(),
    ]);
    if resume {
        args.push("--resume".into());
    }
    args
}

fn run_result(run: &PlannedRun, epochs: u32) -> Result<RunResult> {
    let diverged = match run.dir.state(epochs)? {
        RunState::Diverged(message) => Some(message),
        _ => None,
    };
    let wall = run.dir.record()?.map_or(0.0, |r| r.wall_seconds);
    Ok(RunResult::from_log(
        &run.config.label,
        run.seed,
        &run.dir.log()?,
        epochs,
        diverged,
        wall,
    ))
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
fn command_line(args: &[String], mnist: &Path) -> String {
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
    let mut words = vec![
        format!("MNIST_DIR={}", quote(&mnist.display().to_string())),
        "cargo".into(),
        "xtask".into(),
        "experiment".into(),
    ];
    words.extend(args.iter().map(|a| quote(a)));
    words.join(" ")
}

/// Reads every run's results and writes the document, the plot and the JSON.
fn write_report(options: &Options, plan: &[PlannedRun], command: &str) -> Result<()> {
    let mut runs = Vec::new();
    let mut wall = 0.0;
    let mut commits: Vec<String> = Vec::new();
    for run in plan {
        let result = run_result(run, options.epochs)?;
        wall += result.wall_seconds;
        for commit in run.dir.record()?.map(|r| r.commits).unwrap_or_default() {
            if !commits.contains(&commit) {
                commits.push(commit);
            }
        }
        runs.push(result);
    }
    let configs = stats::aggregate(&options.experiment.configs(), &runs);
    let file_name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let name = options.experiment.name();
    let png = plot::fid_plot(&configs, &format!("experiment {name}: FID over epochs"))?;
    let plot_path = options.plot_path();
    if let Some(png) = &png {
        write_atomic(&plot_path, png)?;
    }
    let report = Report {
        experiment: name.to_string(),
        question: options.experiment.question().to_string(),
        command: command.to_string(),
        shared_flags: options.shared_flags(),
        overrides: options.overrides.clone(),
        varied: options
            .experiment
            .varied_flags()
            .iter()
            .map(|f| f.to_string())
            .collect(),
        epochs: options.epochs,
        seeds: options.seeds,
        machine: Machine::current(),
        commits,
        wall_seconds: wall,
        configs,
        runs,
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
        let options = options::parse(&args, Path::new("/ws"))?.unwrap();
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
        let args = kusari_args(&plan[2], 3, true);
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

    #[test]
    fn the_command_line_is_quoted_for_a_shell() {
        let args: Vec<String> = ["bn", "--runs-dir", "my runs"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            command_line(&args, Path::new("/data/mnist")),
            "MNIST_DIR=/data/mnist cargo xtask experiment bn --runs-dir 'my runs'"
        );
    }
}
