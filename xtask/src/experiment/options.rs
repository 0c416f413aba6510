//! Command-line options of `cargo xtask experiment`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::base::{base_flags, BASE_EPOCHS, MANAGED_FLAGS};
use super::flags::Flags;
use super::grid::Experiment;

/// Seeds per configuration unless `--seeds` says otherwise.
pub const DEFAULT_SEEDS: u32 = 3;

/// What `cargo xtask experiment` was asked to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub experiment: Experiment,
    /// Runs per configuration, seeds 1..=N.
    pub seeds: u32,
    /// Training epochs of each run (the budget).
    pub epochs: u32,
    /// Where the runs live: `<runs_dir>/<config>/seed<S>`.
    pub runs_dir: PathBuf,
    /// The markdown document; the plot and the raw JSON go beside it.
    pub doc: PathBuf,
    /// `kusari train` flags set on top of the base configuration (after `--`).
    pub overrides: Flags,
}

/// The usage text.
pub fn usage() -> &'static str {
    "usage: cargo xtask experiment <bn|activation|pt|margin> [OPTIONS] [-- KUSARI_FLAGS…]

Trains every configuration of the grid with several seeds on MNIST ($MNIST_DIR),
one run at a time, judges each, and writes docs/results/<name>.md/.png/.json.
Rerunning the same command skips finished runs and resumes interrupted ones.

  --seeds N        runs per configuration, seeds 1..=N [default: 3]
  --epochs E       training epochs of each run [default: the base configuration's]
  --runs-dir DIR   where the runs are kept [default: results/experiments/<name>]
  --doc FILE       the document to write [default: docs/results/<name>.md]
  -- FLAGS…        kusari train flags over the base configuration, for quick checks
                   (e.g. -- --units-g 64 --units-d 64 --eval-samples 1000)

grids: bn (joint, separate, real-stats), activation (identity, tanh, sigmoid),
       pt (paper, blog, unsquared, none), margin (2, 5, 10, 20)"
}

/// Reads the options; `None` when help was asked for. Default folders are
/// inside the workspace `root`; folders given are taken as they are.
pub fn parse(args: &[String], root: &Path) -> Result<Option<Options>> {
    let mut experiment = None;
    let mut seeds = DEFAULT_SEEDS;
    let mut epochs = BASE_EPOCHS;
    let mut runs_dir = None;
    let mut doc = None;
    let mut overrides = Flags::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |what: &str| -> Result<String> {
            args.next()
                .cloned()
                .with_context(|| format!("{arg} needs {what}\n\n{}", usage()))
        };
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{}", usage());
                return Ok(None);
            }
            "--seeds" => seeds = positive(arg, &value("a number of seeds")?)?,
            "--epochs" => epochs = positive(arg, &value("a number of epochs")?)?,
            "--runs-dir" => runs_dir = Some(PathBuf::from(value("a folder")?)),
            "--doc" => doc = Some(PathBuf::from(value("a file name")?)),
            "--" => {
                let rest: Vec<String> = args.cloned().collect();
                overrides = Flags::parse(&rest)?;
                break;
            }
            other if other.starts_with('-') => {
                bail!("unknown option `{other}` for experiment\n\n{}", usage())
            }
            name => {
                if experiment.is_some() {
                    bail!("give one experiment, not also `{name}`\n\n{}", usage());
                }
                experiment = Some(Experiment::parse(name)?);
            }
        }
    }
    let Some(experiment) = experiment else {
        bail!("which experiment?\n\n{}", usage());
    };
    check_overrides(experiment, &overrides)?;
    let name = experiment.name();
    let doc = doc.unwrap_or_else(|| root.join(format!("docs/results/{name}.md")));
    if doc.extension().and_then(|e| e.to_str()) != Some("md") {
        bail!(
            "--doc must name a .md file (the plot and the JSON go beside it), got {}",
            doc.display()
        );
    }
    Ok(Some(Options {
        experiment,
        seeds,
        epochs,
        runs_dir: runs_dir.unwrap_or_else(|| root.join(format!("results/experiments/{name}"))),
        doc,
        overrides,
    }))
}

impl Options {
    /// The flags every run of this experiment shares: base plus overrides.
    pub fn shared_flags(&self) -> Flags {
        base_flags().with(&self.overrides)
    }

    /// Where the plot goes: the document's name with `.png`.
    pub fn plot_path(&self) -> PathBuf {
        self.doc.with_extension("png")
    }

    /// Where the raw numbers go: the document's name with `.json`.
    pub fn json_path(&self) -> PathBuf {
        self.doc.with_extension("json")
    }

    /// Checks that every evaluation interval ends on the last epoch, so each
    /// run's final log entry holds its final evaluation.
    pub fn check_budget(&self) -> Result<()> {
        let flags = self.shared_flags();
        let every = flags.get("eval-every").unwrap_or("0");
        let every: f64 = every
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v > 0.0)
            .with_context(|| {
                format!("--eval-every must be a positive number of epochs here, got `{every}`")
            })?;
        let evaluations = f64::from(self.epochs) / every;
        if (evaluations - evaluations.round()).abs() > 1e-9 {
            bail!(
                "--epochs {} is not a multiple of --eval-every {every}: the last epoch would not be judged",
                self.epochs
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

fn check_overrides(experiment: Experiment, overrides: &Flags) -> Result<()> {
    for flag in overrides.iter() {
        let name = flag.name.as_str();
        if experiment.varied_flags().contains(&name) {
            bail!(
                "--{name} is what the {} experiment varies; it cannot be overridden",
                experiment.name()
            );
        }
        if MANAGED_FLAGS.contains(&name) {
            let hint = match name {
                "epochs" => "; use the experiment's own --epochs",
                "iterations" | "time-limit" => "; runs are budgeted in epochs (--epochs)",
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

    fn parse_args(args: &[&str]) -> Result<Option<Options>> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(&args, Path::new("/ws"))
    }

    #[test]
    fn defaults_follow_the_experiment() -> Result<()> {
        let o = parse_args(&["bn"])?.unwrap();
        assert_eq!(o.experiment, Experiment::Bn);
        assert_eq!(o.seeds, 3);
        assert_eq!(o.epochs, BASE_EPOCHS);
        assert_eq!(o.runs_dir, PathBuf::from("/ws/results/experiments/bn"));
        assert_eq!(o.doc, PathBuf::from("/ws/docs/results/bn.md"));
        assert_eq!(o.plot_path(), PathBuf::from("/ws/docs/results/bn.png"));
        assert_eq!(o.json_path(), PathBuf::from("/ws/docs/results/bn.json"));
        assert_eq!(o.shared_flags(), base_flags());
        o.check_budget()?;
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
        assert_eq!(o.experiment, Experiment::Activation);
        assert_eq!((o.seeds, o.epochs), (5, 2));
        assert_eq!(o.runs_dir, PathBuf::from("/tmp/r"));
        assert_eq!(o.json_path(), PathBuf::from("/tmp/a.json"));
        let flags = o.shared_flags();
        assert_eq!(flags.get("units-g"), Some("64"));
        assert_eq!(flags.get("eval-samples"), Some("500"));
        assert_eq!(flags.get("units-d"), base_flags().get("units-d"));
        assert!(parse_args(&["--help"])?.is_none());
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
        ] {
            assert!(parse_args(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_last_epoch_must_be_judged() -> Result<()> {
        let mut o = parse_args(&["margin", "--epochs", "4", "--", "--eval-every", "2"])?.unwrap();
        o.check_budget()?;
        o.epochs = 3;
        assert!(o.check_budget().is_err());
        o.overrides.set("eval-every", "0");
        assert!(o.check_budget().is_err());
        Ok(())
    }
}
