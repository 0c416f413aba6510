//! Command-line options of `cargo xtask experiment`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::flags::Flags;
use super::grid::{Budget, Grid, SlurmSettings, RUN_FLAGS};

/// Where the runs train.
#[derive(Debug, Clone, PartialEq)]
pub enum Executor {
    /// On this machine, `jobs` runs at a time.
    Local { jobs: u32 },
    /// As a SLURM job array, with these resources per task.
    Slurm {
        settings: SlurmSettings,
        /// At most this many tasks at once (`--array=…%N`).
        max_parallel: Option<u32>,
        /// Print the scripts, submit nothing.
        dry_run: bool,
    },
}

/// What `cargo xtask experiment` was asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Train what is not finished, then write the document.
    Run,
    /// Only write the document from the run folders (the SLURM collection job).
    Collect,
    /// Count the runs done, running, pending and failed.
    Status,
    /// Train run K of the plan (a SLURM array task).
    Task(usize),
}

/// What `cargo xtask experiment` was asked to do, and on which grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub grid: Grid,
    pub action: Action,
    pub executor: Executor,
    /// Runs per configuration, seeds 1..=N.
    pub seeds: u32,
    /// How long each run trains.
    pub budget: Budget,
    /// Where the runs live: `<runs_dir>/<config>/seed<S>`.
    pub runs_dir: PathBuf,
    /// The markdown document; the plot and the raw JSON go beside it.
    pub doc: PathBuf,
    /// `kusari train` flags set on top of the base configuration (after `--`).
    pub overrides: Flags,
    /// The arguments as given, to repeat the command in scripts and documents.
    pub args: Vec<String>,
}

/// The usage text.
pub fn usage() -> &'static str {
    "usage: cargo xtask experiment <NAME|FILE.toml> [OPTIONS] [-- KUSARI_FLAGS…]
       cargo xtask experiment status <NAME|FILE.toml> [--runs-dir DIR]

Trains every cell of a grid file (experiments/NAME.toml, or any FILE.toml; the
format is in docs/grids.md) with several seeds on MNIST ($MNIST_DIR), judges
each run, and writes docs/results/<name>.md/.png/.json. Rerunning the same
command skips finished runs and resumes interrupted ones.

  --seeds N           runs per cell, seeds 1..=N [default: the file's]
  --epochs E          train E epochs per run [default: the file's budget]
  --runs-dir DIR      where the runs are kept [default: results/experiments/<name>]
  --doc FILE          the document to write [default: docs/results/<name>.md]
  --executor local    train on this machine [default]
    --jobs N          N runs at a time, each given its share of the cores [default: 1]
  --executor slurm    submit a SLURM job array (one task per unfinished run) and a
                      collection job that writes the document when the array ends
    --max-parallel N  at most N tasks at once
    --partition P  --time T  --cpus N  --gpus N  --mem M
                      each task's resources [default: the file's [slurm] table]
    --sbatch LINE     one more #SBATCH line (repeatable)
    --dry-run         print the scripts, submit nothing
  --collect           only write the document from the run folders
  -- FLAGS…           kusari train flags over the base configuration, for quick checks
                      (e.g. -- --units-g 64 --units-d 64 --eval-samples 1000)

built-in grids: experiments/*.toml (bn, activation, pt, margin, …)"
}

/// Reads the options; `None` when help was asked for. Default folders are
/// inside the workspace `root`; folders given are taken as they are.
pub fn parse(args: &[String], root: &Path) -> Result<Option<Options>> {
    let mut grid_name = None;
    let mut action = Action::Run;
    let mut seeds = None;
    let mut epochs = None;
    let mut runs_dir = None;
    let mut doc = None;
    let mut executor_name = "local".to_string();
    let mut jobs = 1;
    let mut max_parallel = None;
    let mut slurm = SlurmSettings::default();
    let mut extra_sbatch = vec![];
    let mut dry_run = false;
    let mut overrides = Flags::default();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let mut value = |what: &str| -> Result<String> {
            iter.next()
                .cloned()
                .with_context(|| format!("{arg} needs {what}\n\n{}", usage()))
        };
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{}", usage());
                return Ok(None);
            }
            "--seeds" => seeds = Some(positive(arg, &value("a number of seeds")?)?),
            "--epochs" => epochs = Some(positive(arg, &value("a number of epochs")?)?),
            "--runs-dir" => runs_dir = Some(PathBuf::from(value("a folder")?)),
            "--doc" => doc = Some(PathBuf::from(value("a file name")?)),
            "--executor" => executor_name = value("local or slurm")?,
            "--jobs" => jobs = positive(arg, &value("a number of runs")?)?,
            "--max-parallel" => max_parallel = Some(positive(arg, &value("a number of tasks")?)?),
            "--partition" => slurm.partition = Some(value("a partition")?),
            "--time" => slurm.time = Some(value("a time such as 02:00:00")?),
            "--cpus" => slurm.cpus = Some(positive(arg, &value("a number of CPUs")?)?),
            "--gpus" => slurm.gpus = Some(count(arg, &value("a number of GPUs")?)?),
            "--mem" => slurm.mem = Some(value("a memory size such as 8G")?),
            "--sbatch" => {
                let line = value("an #SBATCH line")?;
                if !line.starts_with("#SBATCH ") {
                    bail!("--sbatch takes a whole line such as \"#SBATCH --account=abc\", got `{line}`");
                }
                extra_sbatch.push(line);
            }
            "--dry-run" => dry_run = true,
            "--collect" => action = Action::Collect,
            "--task" => {
                let text = value("a task number")?;
                let k = text
                    .parse()
                    .with_context(|| format!("--task needs a run number, got `{text}`"))?;
                action = Action::Task(k);
            }
            "--" => {
                let rest: Vec<String> = iter.cloned().collect();
                overrides = Flags::parse(&rest)?;
                break;
            }
            other if other.starts_with('-') => {
                bail!("unknown option `{other}` for experiment\n\n{}", usage())
            }
            "status" if grid_name.is_none() && action == Action::Run => action = Action::Status,
            name => {
                if grid_name.is_some() {
                    bail!("give one experiment, not also `{name}`\n\n{}", usage());
                }
                grid_name = Some(name.to_string());
            }
        }
    }
    let Some(grid_name) = grid_name else {
        bail!("which experiment?\n\n{}", usage());
    };
    let grid = Grid::load(&Grid::locate(&grid_name, root)?)?;
    check_overrides(&grid, &overrides)?;
    let executor = match executor_name.as_str() {
        "local" => {
            if max_parallel.is_some()
                || dry_run
                || slurm != SlurmSettings::default()
                || !extra_sbatch.is_empty()
            {
                bail!("--max-parallel, --dry-run and the resource flags go with --executor slurm");
            }
            Executor::Local { jobs }
        }
        "slurm" => {
            if jobs != 1 {
                bail!("--jobs is for --executor local; with slurm use --max-parallel");
            }
            let file = &grid.slurm;
            let mut extra = file.extra.clone();
            extra.extend(extra_sbatch);
            Executor::Slurm {
                settings: SlurmSettings {
                    partition: slurm.partition.or_else(|| file.partition.clone()),
                    time: slurm.time.or_else(|| file.time.clone()),
                    cpus: slurm.cpus.or(file.cpus),
                    gpus: slurm.gpus.or(file.gpus),
                    mem: slurm.mem.or_else(|| file.mem.clone()),
                    extra,
                },
                max_parallel,
                dry_run,
            }
        }
        other => bail!("--executor is local or slurm, not `{other}`"),
    };
    let name = grid.name.clone();
    let doc = doc.unwrap_or_else(|| root.join(format!("docs/results/{name}.md")));
    if doc.extension().and_then(|e| e.to_str()) != Some("md") {
        bail!(
            "--doc must name a .md file (the plot and the JSON go beside it), got {}",
            doc.display()
        );
    }
    Ok(Some(Options {
        seeds: seeds.unwrap_or(grid.seeds),
        budget: epochs.map_or(grid.budget, Budget::Epochs),
        grid,
        action,
        executor,
        runs_dir: runs_dir.unwrap_or_else(|| root.join(format!("results/experiments/{name}"))),
        doc,
        overrides,
        args: args.to_vec(),
    }))
}

impl Options {
    /// The flags every run of this experiment shares: base, judge, overrides.
    pub fn shared_flags(&self) -> Flags {
        self.grid.shared_flags().with(&self.overrides)
    }

    /// Where the plot goes: the document's name with `.png`.
    pub fn plot_path(&self) -> PathBuf {
        self.doc.with_extension("png")
    }

    /// Where the raw numbers go: the document's name with `.json`.
    pub fn json_path(&self) -> PathBuf {
        self.doc.with_extension("json")
    }

    /// Checks that, for a budget in epochs, every evaluation interval ends on
    /// the last epoch, so each run's final log entry holds its final evaluation.
    pub fn check_budget(&self) -> Result<()> {
        let flags = self.shared_flags();
        let Some(every) = flags.get("eval-every") else {
            return Ok(());
        };
        let every: f64 = every
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .with_context(|| {
                format!("--eval-every must be a number of epochs here, got `{every}`")
            })?;
        let Some(epochs) = self.budget.epochs() else {
            return Ok(());
        };
        if every == 0.0 {
            return Ok(());
        }
        let evaluations = f64::from(epochs) / every;
        if (evaluations - evaluations.round()).abs() > 1e-9 {
            bail!(
                "{epochs} epochs is not a multiple of --eval-every {every}: the last epoch would not be judged"
            );
        }
        Ok(())
    }
}

fn positive(flag: &str, text: &str) -> Result<u32> {
    match text.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => bail!("{flag} needs a whole number of at least 1, got `{text}`"),
    }
}

fn count(flag: &str, text: &str) -> Result<u32> {
    text.parse::<u32>()
        .with_context(|| format!("{flag} needs a whole number, got `{text}`"))
}

fn check_overrides(grid: &Grid, overrides: &Flags) -> Result<()> {
    for flag in overrides.iter() {
        let name = flag.name.as_str();
        if grid.varied.iter().any(|v| v == name) {
            bail!(
                "--{name} is what the {} experiment varies; it cannot be overridden",
                grid.name
            );
        }
        if RUN_FLAGS.contains(&name) {
            let hint = match name {
                "epochs" => "; use the experiment's own --epochs",
                "iterations" | "time-limit" => "; set the budget in the grid file",
                _ => "",
            };
            bail!("--{name} is set by the experiment itself and cannot be overridden{hint}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn parse_args(args: &[&str]) -> Result<Option<Options>> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(&args, &root())
    }

    #[test]
    fn defaults_follow_the_grid_file() -> Result<()> {
        let o = parse_args(&["bn"])?.unwrap();
        assert_eq!(o.grid.name, "bn");
        assert_eq!(o.seeds, 3);
        assert_eq!(o.budget, Budget::Time(600.0));
        assert_eq!(o.executor, Executor::Local { jobs: 1 });
        assert_eq!(o.runs_dir, root().join("results/experiments/bn"));
        assert_eq!(o.doc, root().join("docs/results/bn.md"));
        assert_eq!(o.plot_path(), root().join("docs/results/bn.png"));
        assert_eq!(o.json_path(), root().join("docs/results/bn.json"));
        assert_eq!(o.shared_flags().get("eval-samples"), Some("2000"));
        assert_eq!(o.grid.judge.unwrap().final_samples, Some(10000));
        o.check_budget()?;
        // The same grid by its path.
        let by_path = parse_args(&[root().join("experiments/bn.toml").to_str().unwrap()])?.unwrap();
        assert_eq!(by_path.grid.cells, o.grid.cells);
        Ok(())
    }

    #[test]
    fn reads_every_option() -> Result<()> {
        let o = parse_args(&[
            "--seeds",
            "5",
            "activation",
            "--epochs",
            "2",
            "--runs-dir",
            "/tmp/r",
            "--doc",
            "/tmp/a.md",
            "--",
            "--units-g",
            "64",
            "--eval-samples=500",
        ])?
        .unwrap();
        assert_eq!(o.grid.name, "activation");
        assert_eq!((o.seeds, o.budget), (5, Budget::Epochs(2)));
        assert_eq!(o.runs_dir, PathBuf::from("/tmp/r"));
        assert_eq!(o.json_path(), PathBuf::from("/tmp/a.json"));
        let flags = o.shared_flags();
        assert_eq!(flags.get("units-g"), Some("64"));
        assert_eq!(flags.get("eval-samples"), Some("500"));
        assert_eq!(flags.get("preset"), Some("fast"));
        assert!(parse_args(&["--help"])?.is_none());

        let o = parse_args(&[
            "margin",
            "--executor",
            "slurm",
            "--max-parallel",
            "4",
            "--partition",
            "gpu",
            "--gpus",
            "1",
            "--sbatch",
            "#SBATCH --account=x",
            "--dry-run",
        ])?
        .unwrap();
        let Executor::Slurm {
            settings,
            max_parallel,
            dry_run,
        } = o.executor
        else {
            panic!("slurm expected");
        };
        assert_eq!((max_parallel, dry_run), (Some(4), true));
        assert_eq!(settings.partition.as_deref(), Some("gpu"));
        assert_eq!(settings.gpus, Some(1));
        assert_eq!(settings.extra, ["#SBATCH --account=x"]);
        let status = parse_args(&["status", "pt"])?.unwrap();
        assert_eq!(
            (status.action, status.grid.name.as_str()),
            (Action::Status, "pt")
        );
        let jobs = parse_args(&["pt", "--jobs", "2"])?.unwrap();
        assert_eq!(jobs.executor, Executor::Local { jobs: 2 });
        Ok(())
    }

    #[test]
    fn rejects_bad_options() {
        for bad in [
            &[][..],
            &["dropout"],
            &["bn", "pt"],
            &["bn", "--seeds", "0"],
            &["bn", "--seeds", "x"],
            &["bn", "--epochs"],
            &["bn", "--frobnicate"],
            &["bn", "--doc", "out.txt"],
            &["bn", "--", "--bn", "joint"],
            &["pt", "--", "--pt-weight", "0"],
            &["bn", "--", "--seed", "4"],
            &["bn", "--", "--epochs", "4"],
            &["bn", "--", "--out", "x"],
            &["bn", "--", "units-g", "4"],
            &["bn", "--executor", "cloud"],
            &["bn", "--dry-run"],
            &["bn", "--executor", "slurm", "--jobs", "2"],
            &["bn", "--executor", "slurm", "--sbatch", "--account=x"],
        ] {
            assert!(parse_args(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_last_epoch_must_be_judged() -> Result<()> {
        let mut o = parse_args(&["margin", "--epochs", "4", "--", "--eval-every", "2"])?.unwrap();
        o.check_budget()?;
        o.budget = Budget::Epochs(3);
        assert!(o.check_budget().is_err());
        o.overrides.set("eval-every", "x");
        assert!(o.check_budget().is_err());
        Ok(())
    }
}
