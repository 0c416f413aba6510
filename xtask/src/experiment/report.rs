//! The experiment's document (`docs/results/<name>.md`) and its raw numbers
//! (`<name>.json`), with an answer sentence computed from the table.

use std::fmt::Write as _;

use serde::Serialize;

use super::flags::Flags;
use super::machine::Machine;
use super::run_dir::RunResult;
use super::stats::{separation, ConfigSummary, Separation, Summary};

/// Everything the document says.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub experiment: String,
    pub question: String,
    /// The command that made the document, as the reader types it.
    pub command: String,
    /// The flags every run shares (the base configuration and any overrides).
    pub shared_flags: Flags,
    /// The overrides given after `--`, if any (the document says so).
    pub overrides: Flags,
    /// The flags the grid varies.
    pub varied: Vec<String>,
    /// The grid file, as the command named it.
    pub grid_file: String,
    /// `kusari train OBJECTIVE`.
    pub objective: String,
    /// Each run's budget: `5 epochs`, `10 min`.
    pub budget: String,
    /// The flags that set it: `--epochs 5`.
    pub budget_flags: String,
    /// The budget's epochs, when it is counted in epochs.
    pub epochs: Option<u32>,
    /// How the runs were trained: `one at a time`, `2 at a time`, `as a SLURM job array`.
    pub executed: String,
    pub seeds: u32,
    pub machine: Machine,
    /// The kusari commits the runs were trained with.
    pub commits: Vec<String>,
    /// Wall time of all runs together (they run one at a time).
    pub wall_seconds: f64,
    pub configs: Vec<ConfigSummary>,
    pub runs: Vec<RunResult>,
    /// Samples per number: `final` of `[judge]`, when the table's numbers come from it.
    pub final_samples: Option<u64>,
    /// `(label, file beside the document)` of each configuration's sample grid.
    pub sample_files: Vec<(String, String)>,
    /// The plot's file name, beside the document; `None` when nothing was judged.
    pub plot_file: Option<String>,
    /// The raw numbers' file name, beside the document.
    pub json_file: String,
}

/// `12.3 ± 1.4`, or `12.3` for one seed, with `digits` decimals.
fn plus_minus(s: &Summary, digits: usize) -> String {
    match s.std {
        Some(std) => format!("{:.digits$} ± {:.digits$}", s.mean, std),
        None => format!("{:.digits$}", s.mean),
    }
}

fn optional(s: Option<&Summary>, digits: usize) -> String {
    s.map_or("—".to_string(), |s| plus_minus(s, digits))
}

/// `a`, `a and b`, `a, b and c`.
fn list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// `1 epoch`, `3 epochs`.
fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `5.8 s`, `4 min 12 s`, `1 h 03 min`.
pub fn duration_text(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "—".into();
    }
    if seconds < 60.0 {
        return format!("{seconds:.1} s");
    }
    let whole = seconds.round() as u64;
    if whole < 3600 {
        format!("{} min {:02} s", whole / 60, whole % 60)
    } else {
        format!("{} h {:02} min", whole / 3600, (whole % 3600) / 60)
    }
}

/// One sentence answering the question from the table: which configuration
/// has the lowest mean final FID, and which of the others it beats by more
/// than the seeds' spread (mean ± std ranges apart) or only within noise.
pub fn answer(configs: &[ConfigSummary]) -> String {
    let mut judged: Vec<(&ConfigSummary, Summary)> =
        configs.iter().filter_map(|c| Some((c, c.fid?))).collect();
    let diverged: Vec<String> = configs
        .iter()
        .filter(|c| c.diverged > 0)
        .map(|c| format!("`{}` in {} of {} seeds", c.label, c.diverged, c.runs))
        .collect();
    let divergence = if diverged.is_empty() {
        String::new()
    } else {
        format!("; runs diverged for {}", list(&diverged))
    };
    if judged.is_empty() {
        return format!("No run reached its final evaluation, so there is no answer{divergence}.");
    }
    judged.sort_by(|a, b| a.1.mean.total_cmp(&b.1.mean));
    let (best, best_fid) = judged[0];
    let named = |c: &ConfigSummary, s: &Summary| format!("`{}` ({})", c.label, plus_minus(s, 1));
    let mut beyond = vec![];
    let mut within = vec![];
    let mut unknown = vec![];
    for (c, fid) in &judged[1..] {
        match separation(&best_fid, fid) {
            Separation::BeyondNoise => beyond.push(named(c, fid)),
            Separation::WithinNoise => within.push(named(c, fid)),
            Separation::Unknown => unknown.push(named(c, fid)),
        }
    }
    let mut sentence = format!(
        "`{}` reaches the lowest mean FID ({})",
        best.label,
        plus_minus(&best_fid, 1)
    );
    match (beyond.is_empty(), within.is_empty()) {
        (false, false) => write!(
            sentence,
            " and beats {} by more than the seeds' spread, but is only within noise of {}",
            list(&beyond),
            list(&within)
        ),
        (false, true) => write!(
            sentence,
            " and beats {} by more than the seeds' spread",
            list(&beyond)
        ),
        (true, false) => write!(
            sentence,
            ", but only within noise of {}: at this budget the seeds cannot tell them apart",
            list(&within)
        ),
        (true, true) => Ok(()),
    }
    .expect("writing to a String");
    if !unknown.is_empty() {
        write!(
            sentence,
            "; with a single seed its lead over {} cannot be weighed against noise",
            list(&unknown)
        )
        .expect("writing to a String");
    }
    if judged.len() == 1 && configs.len() > 1 {
        sentence.push_str(", the only configuration with a final evaluation");
    }
    sentence.push_str(&divergence);
    sentence.push('.');
    sentence
}

/// The results table: one row per configuration.
pub fn results_table(configs: &[ConfigSummary]) -> String {
    let best = configs
        .iter()
        .filter_map(|c| c.fid.map(|f| f.mean))
        .min_by(f64::total_cmp);
    let mut out = String::from(
        "| config | flags | FID (mean ± std) | IS (mean ± std) | min class share (mean) | FID per seed | diverged |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for c in configs {
        let mut fid = optional(c.fid.as_ref(), 1);
        if c.fid.is_some() && c.fid.map(|f| f.mean) == best {
            fid = format!("**{fid}**");
        }
        let per_seed: Vec<String> = c
            .fid_per_seed
            .iter()
            .map(|(seed, fid)| match fid {
                Some(f) => format!("{f:.1}"),
                None => format!("— (seed {seed})"),
            })
            .collect();
        let share = c
            .min_class_share
            .map_or("—".to_string(), |s| format!("{:.3}", s.mean));
        writeln!(
            out,
            "| {} | `{}` | {} | {} | {} | {} | {}/{} |",
            c.label,
            c.flags,
            fid,
            optional(c.inception_score.as_ref(), 2),
            share,
            per_seed.join(", "),
            c.diverged,
            c.runs
        )
        .expect("writing to a String");
    }
    out
}

/// The per-run table: every seed's numbers and times.
fn runs_table(runs: &[RunResult]) -> String {
    let mut out = String::from(
        "| config | seed | FID | IS | min class share | training time | wall time |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let number =
        |v: Option<f64>, digits: usize| v.map_or("—".into(), |v| format!("{v:.digits$}"));
    for r in runs {
        let fid = match &r.diverged {
            Some(_) => "diverged".to_string(),
            None => number(r.fid, 2),
        };
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.config,
            r.seed,
            fid,
            number(r.inception_score, 3),
            number(r.min_class_share, 4),
            r.train_seconds.map_or("—".into(), duration_text),
            duration_text(r.wall_seconds)
        )
        .expect("writing to a String");
    }
    out
}

/// The whole markdown document.
pub fn markdown(report: &Report) -> String {
    let mut md = String::new();
    let w = &mut md;
    let name = &report.experiment;
    let _ = writeln!(w, "# Experiment `{name}`\n");
    let _ = writeln!(
        w,
        "Generated by `cargo xtask experiment` (xtask/src/experiment.rs) from the grid file \
         `{}` and the runs it trained; rerun the command under *How it was made* to reproduce it.\n",
        report.grid_file
    );
    let _ = writeln!(w, "## Question\n\n{}\n", report.question);
    let _ = writeln!(w, "## Answer\n");
    let _ = writeln!(
        w,
        "<!-- answer: computed by xtask from the table below (lowest mean final FID; \
         \"within noise\" when the mean ± std ranges overlap) -->"
    );
    let _ = writeln!(w, "{}\n", answer(&report.configs));

    let _ = writeln!(w, "## Results\n");
    let eval_samples = match report.final_samples {
        Some(n) => format!("{n} samples of each run's last snapshot"),
        None => format!(
            "{} samples",
            report.shared_flags.get("eval-samples").unwrap_or("?")
        ),
    };
    let _ = writeln!(
        w,
        "Final evaluation after {} of training, {} judged by the MNIST judge \
         (docs/evaluation.md), {} per configuration (seeds 1–{}). FID: lower is better \
         (real digits score ≈ 3.6); IS: higher is better (real digits ≈ 9.8); min class share: \
         0.1 when all ten digits are equally frequent, near 0 when one is missing. Means and \
         standard deviations are over the seeds that did not diverge.\n",
        report.budget,
        eval_samples,
        count(report.seeds, "seed"),
        report.seeds
    );
    md.push_str(&results_table(&report.configs));
    md.push('\n');
    for c in &report.configs {
        let _ = writeln!(md, "- `{}`: {}", c.label, c.meaning);
    }
    md.push('\n');
    if !report.sample_files.is_empty() {
        let _ = writeln!(
            md,
            "Samples of each configuration's first seed at the end of its run:\n"
        );
        let _ = writeln!(
            md,
            "| {} |",
            report
                .sample_files
                .iter()
                .map(|(l, _)| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        let _ = writeln!(md, "|{}", " --- |".repeat(report.sample_files.len()));
        let _ = writeln!(
            md,
            "| {} |\n",
            report
                .sample_files
                .iter()
                .map(|(l, f)| format!("![{l}]({f})"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    if let Some(plot) = &report.plot_file {
        let (over, per) = if report.budget_flags.starts_with("--time-limit") {
            (
                "training time",
                "evaluation, at the seeds' mean training time",
            )
        } else {
            ("epochs", "epoch")
        };
        let _ = writeln!(
            md,
            "![Mean FID over {over} per configuration]({plot})\n\n\
             *Mean FID per {per} (log scale); the shaded band and the whiskers span the lowest \
             to the highest seed.*\n"
        );
    }
    let _ = writeln!(md, "### Every run\n");
    md.push_str(&runs_table(&report.runs));
    md.push('\n');
    let _ = writeln!(
        md,
        "Training time is kusari's own clock (`elapsed_time` of the last log entry, evaluations \
         included); wall time is the experiment's, per run, summed over resumed attempts \
         (process start, data loading and snapshots included).\n"
    );

    let _ = writeln!(md, "## How it was made\n");
    let _ = writeln!(md, "```sh\n{}\n```\n", report.command);
    let varied: Vec<String> = report.varied.iter().map(|f| format!("`--{f}`")).collect();
    let _ = writeln!(
        md,
        "Every run is `kusari train {}` with the base configuration below, the grid's {} on \
         top, `--seed S {} --out <runs-dir>/<config>/seed<S>`:\n",
        if report.varied.iter().any(|v| v == "objective") {
            "OBJECTIVE"
        } else {
            report.objective.as_str()
        },
        list(&varied),
        report.budget_flags
    );
    let objective = if report.varied.iter().any(|v| v == "objective") {
        "OBJECTIVE"
    } else {
        report.objective.as_str()
    };
    let _ = writeln!(
        md,
        "```sh\nkusari train {objective} {}\n```\n",
        report.shared_flags.command_text()
    );
    if report.overrides.iter().next().is_some() {
        let _ = writeln!(
            md,
            "**Not the standard base configuration:** `{}` was given after `--`.\n",
            report.overrides.command_text()
        );
    }
    let trained: Vec<f64> = report.runs.iter().filter_map(|r| r.train_seconds).collect();
    let per_epoch = report
        .epochs
        .filter(|_| !trained.is_empty())
        .map(|epochs| trained.iter().sum::<f64>() / trained.len() as f64 / f64::from(epochs));
    let _ = writeln!(
        md,
        "| | |\n| --- | --- |\n\
         | budget | {} per run, {} ({} × {}), {} |\n\
         | wall time, whole experiment | {} (all runs' wall times summed) |\n\
         | wall time per run | {} mean, {} – {} |\n\
         | training time per epoch | {} (mean over the runs, evaluation included) |\n\
         | machine | {} |\n\
         | kusari commit | {} |\n\
         | raw numbers | [{}]({}) |\n",
        report.budget,
        count(report.runs.len() as u64, "run"),
        count(report.configs.len() as u64, "configuration"),
        count(report.seeds, "seed"),
        report.executed,
        duration_text(report.wall_seconds),
        duration_text(mean(report.runs.iter().map(|r| r.wall_seconds))),
        duration_text(fold(report.runs.iter().map(|r| r.wall_seconds), f64::min)),
        duration_text(fold(report.runs.iter().map(|r| r.wall_seconds), f64::max)),
        per_epoch.map_or("—".into(), duration_text),
        report.machine.describe(),
        if report.commits.is_empty() {
            "unknown".to_string()
        } else {
            report.commits.join(", ")
        },
        report.json_file,
        report.json_file
    );
    md
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

fn fold(mut values: impl Iterator<Item = f64>, f: fn(f64, f64) -> f64) -> f64 {
    let first = values.next().unwrap_or(f64::NAN);
    values.fold(first, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(mean: f64, std: f64) -> Summary {
        Summary {
            mean,
            std: Some(std),
            n: 3,
        }
    }

    fn config(label: &str, fid: Option<Summary>, diverged: usize) -> ConfigSummary {
        ConfigSummary {
            label: label.into(),
            flags: format!("--bn {label}"),
            meaning: format!("meaning of {label}"),
            fid,
            inception_score: fid.map(|_| summary(8.123, 0.05)),
            min_class_share: fid.map(|_| summary(0.0812, 0.001)),
            fid_per_seed: vec![(1, Some(30.04)), (2, Some(32.0)), (3, None)],
            runs: 3,
            diverged,
            curve: vec![],
        }
    }

    #[test]
    fn the_table_marks_the_best_and_shows_every_seed() {
        let table = results_table(&[
            config("joint", Some(summary(31.0, 1.0)), 1),
            config("separate", Some(summary(33.0, 1.5)), 0),
            config("real-stats", None, 3),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].starts_with("| config | flags | FID (mean ± std)"));
        assert_eq!(
            lines[2],
            "| joint | `--bn joint` | **31.0 ± 1.0** | 8.12 ± 0.05 | 0.081 | 30.0, 32.0, — (seed 3) | 1/3 |"
        );
        assert!(lines[3].contains("| 33.0 ± 1.5 |"), "{}", lines[3]);
        assert!(lines[4].starts_with("| real-stats | `--bn real-stats` | — | — | — |"));
        assert!(lines[4].ends_with("| 3/3 |"));
    }

    #[test]
    fn the_answer_says_what_beats_what_and_what_is_noise() {
        let a = answer(&[
            config("joint", Some(summary(31.0, 1.0)), 0),
            config("separate", Some(summary(32.0, 1.5)), 0),
            config("real-stats", Some(summary(58.0, 9.0)), 1),
        ]);
        assert_eq!(
            a,
            "`joint` reaches the lowest mean FID (31.0 ± 1.0) and beats `real-stats` \
             (58.0 ± 9.0) by more than the seeds' spread, but is only within noise of \
             `separate` (32.0 ± 1.5); runs diverged for `real-stats` in 1 of 3 seeds."
        );
        let noise = answer(&[
            config("tanh", Some(summary(40.0, 5.0)), 0),
            config("identity", Some(summary(38.0, 5.0)), 0),
        ]);
        assert_eq!(
            noise,
            "`identity` reaches the lowest mean FID (38.0 ± 5.0), but only within noise of \
             `tanh` (40.0 ± 5.0): at this budget the seeds cannot tell them apart."
        );
        let clear = answer(&[
            config("m2", Some(summary(90.0, 1.0)), 0),
            config("m10", Some(summary(40.0, 1.0)), 0),
        ]);
        assert!(clear.ends_with("beats `m2` (90.0 ± 1.0) by more than the seeds' spread."));
        let none = answer(&[config("m2", None, 3)]);
        assert!(none.starts_with("No run reached"), "{none}");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_text(5.84), "5.8 s");
        assert_eq!(duration_text(252.4), "4 min 12 s");
        assert_eq!(duration_text(3780.0), "1 h 03 min");
        assert_eq!(duration_text(f64::NAN), "—");
    }

    #[test]
    fn the_document_has_every_section() {
        let report = Report {
            experiment: "bn".into(),
            question: "Which BN?".into(),
            command: "MNIST_DIR=/data cargo xtask experiment bn".into(),
            shared_flags: Flags::from_pairs([("units-g", "512"), ("eval-samples", "10000")]),
            overrides: Flags::default(),
            varied: vec!["bn".into()],
            grid_file: "experiments/bn.toml".into(),
            objective: "ebgan".into(),
            budget: "3 epochs".into(),
            budget_flags: "--epochs 3".into(),
            epochs: Some(3),
            executed: "one at a time".into(),
            seeds: 3,
            machine: Machine {
                cpu: "Test CPU".into(),
                cores: 2,
                os: "linux x86_64".into(),
            },
            commits: vec!["abc123".into()],
            wall_seconds: 3000.0,
            configs: vec![config("joint", Some(summary(31.0, 1.0)), 0)],
            runs: vec![RunResult {
                config: "joint".into(),
                seed: 1,
                diverged: None,
                fid: Some(30.0),
                inception_score: Some(8.0),
                min_class_share: Some(0.08),
                fid_curve: vec![(1.0, 90.0)],
                fid_times: vec![100.0],
                train_seconds: Some(300.0),
                wall_seconds: 330.0,
            }],
            final_samples: None,
            sample_files: vec![("joint".into(), "bn/joint.png".into())],
            plot_file: Some("bn.png".into()),
            json_file: "bn.json".into(),
        };
        let md = markdown(&report);
        for needle in [
            "# Experiment `bn`",
            "## Question\n\nWhich BN?",
            "## Answer",
            "<!-- answer:",
            "`joint` reaches the lowest mean FID",
            "| joint | `--bn joint` | **31.0 ± 1.0** |",
            "![joint](bn/joint.png)",
            "![Mean FID over epochs per configuration](bn.png)",
            "| joint | 1 | 30.00 | 8.000 | 0.0800 | 5 min 00 s | 5 min 30 s |",
            "MNIST_DIR=/data cargo xtask experiment bn",
            "kusari train ebgan --units-g 512 --eval-samples 10000",
            "from the grid file `experiments/bn.toml`",
            "`--seed S --epochs 3 --out <runs-dir>/<config>/seed<S>`",
            "after 3 epochs of training, 10000 samples judged",
            "3 seeds per configuration (seeds 1–3)",
            "| budget | 3 epochs per run, 1 run (1 configuration × 3 seeds), one at a time |",
            "| wall time, whole experiment | 50 min 00 s",
            "| training time per epoch | 1 min 40 s",
            "| machine | Test CPU, 2 cores, linux x86_64 |",
            "| kusari commit | abc123 |",
        ] {
            assert!(md.contains(needle), "missing {needle:?} in\n{md}");
        }
        assert!(!md.contains("Not the standard base configuration"));
    }
}
