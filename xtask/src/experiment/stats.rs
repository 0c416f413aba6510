//! Aggregating runs per configuration: mean ± std over seeds, the FID
//! curve, and whether two configurations differ by more than seed noise.

use serde::Serialize;

use super::grid::GridConfig;
use super::run_dir::RunResult;

/// Mean and sample standard deviation of some numbers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub mean: f64,
    /// The sample standard deviation (n − 1); `None` for a single value.
    pub std: Option<f64>,
    pub n: usize,
}

impl Summary {
    /// The summary of `values`; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = (n > 1).then(|| {
            let squares: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
            (squares / (n - 1) as f64).sqrt()
        });
        Some(Summary { mean, std, n })
    }
}

/// How a configuration's mean compares with the best one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Separation {
    /// The mean ± std ranges do not overlap.
    BeyondNoise,
    /// They overlap: the seeds cannot tell the two apart.
    WithinNoise,
    /// One of them has a single seed, so no spread to compare with.
    Unknown,
}

/// Whether `worse` is behind `better` by more than the seeds' spread: the
/// gap of the means exceeds the sum of the two standard deviations (their
/// mean ± std ranges do not overlap).
pub fn separation(better: &Summary, worse: &Summary) -> Separation {
    match (better.std, worse.std) {
        (Some(a), Some(b)) => {
            if (worse.mean - better.mean).abs() > a + b {
                Separation::BeyondNoise
            } else {
                Separation::WithinNoise
            }
        }
        _ => Separation::Unknown,
    }
}

/// One point of a configuration's FID curve over its seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CurvePoint {
    pub epoch: f64,
    /// Mean training time at this evaluation over the seeds, in minutes.
    pub minutes: f64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// How many seeds were judged at this epoch.
    pub n: usize,
}

/// A configuration over its seeds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigSummary {
    pub label: String,
    /// The flags it sets on top of the base, as text.
    pub flags: String,
    pub meaning: String,
    /// Final FID over the seeds that did not diverge.
    pub fid: Option<Summary>,
    pub inception_score: Option<Summary>,
    pub min_class_share: Option<Summary>,
    /// `(seed, final FID)` of every run, `None` where it diverged.
    pub fid_per_seed: Vec<(u64, Option<f64>)>,
    pub runs: usize,
    pub diverged: usize,
    /// The FID over epochs of the runs that did not diverge.
    pub curve: Vec<CurvePoint>,
}

/// Summarizes `results` per configuration, in the grid's order.
pub fn aggregate(configs: &[GridConfig], results: &[RunResult]) -> Vec<ConfigSummary> {
    configs
        .iter()
        .map(|config| {
            let runs: Vec<&RunResult> = results
                .iter()
                .filter(|r| r.config == config.label)
                .collect();
            let values = |get: fn(&RunResult) -> Option<f64>| -> Vec<f64> {
                runs.iter().filter_map(|r| get(r)).collect()
            };
            ConfigSummary {
                label: config.label.clone(),
                flags: config.flags.command_text(),
                meaning: config.meaning.clone(),
                fid: Summary::of(&values(|r| r.fid)),
                inception_score: Summary::of(&values(|r| r.inception_score)),
                min_class_share: Summary::of(&values(|r| r.min_class_share)),
                fid_per_seed: runs.iter().map(|r| (r.seed, r.fid)).collect(),
                runs: runs.len(),
                diverged: runs.iter().filter(|r| r.diverged.is_some()).count(),
                curve: curve(&runs, |r| r.diverged.is_none()),
            }
        })
        .collect()
}

/// Mean, min and max FID per epoch over the `kept` runs judged at that epoch.
fn curve(runs: &[&RunResult], kept: fn(&RunResult) -> bool) -> Vec<CurvePoint> {
    let runs: Vec<&RunResult> = runs.iter().copied().filter(|r| kept(r)).collect();
    let mut epochs: Vec<f64> = runs
        .iter()
        .flat_map(|r| r.fid_curve.iter().map(|p| p.0))
        .collect();
    epochs.sort_by(f64::total_cmp);
    epochs.dedup();
    epochs
        .into_iter()
        .filter_map(|epoch| {
            let at_epoch = |r: &&RunResult| r.fid_curve.iter().position(|p| p.0 == epoch);
            let fids: Vec<f64> = runs
                .iter()
                .filter_map(|r| at_epoch(r).map(|k| r.fid_curve[k].1))
                .collect();
            let times: Vec<f64> = runs
                .iter()
                .filter_map(|r| at_epoch(r).and_then(|k| r.fid_times.get(k).copied()))
                .filter(|t| t.is_finite())
                .collect();
            let summary = Summary::of(&fids)?;
            Some(CurvePoint {
                epoch,
                minutes: Summary::of(&times).map_or(f64::NAN, |t| t.mean / 60.0),
                mean: summary.mean,
                min: fids.iter().copied().fold(f64::INFINITY, f64::min),
                max: fids.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                n: fids.len(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::flags::Flags;

    fn result(config: &str, seed: u64, fid: Option<f64>, curve: &[(f64, f64)]) -> RunResult {
        RunResult {
            config: config.into(),
            seed,
            diverged: fid.is_none().then(|| "NaN".to_string()),
            fid,
            inception_score: fid.map(|f| 100.0 / f),
            min_class_share: fid.map(|_| 0.08),
            fid_curve: curve.to_vec(),
            fid_times: curve.iter().map(|p| p.0 * 60.0 + seed as f64).collect(),
            train_seconds: Some(10.0),
            wall_seconds: 12.0,
        }
    }

    #[test]
    fn mean_and_sample_std() {
        let s = Summary::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(s.mean, 5.0);
        assert!((s.std.unwrap() - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(s.n, 8);
        let one = Summary::of(&[3.0]).unwrap();
        assert_eq!((one.mean, one.std), (3.0, None));
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn separation_is_non_overlapping_ranges() {
        let s = |mean, std| Summary {
            mean,
            std: Some(std),
            n: 3,
        };
        assert_eq!(
            separation(&s(10.0, 1.0), &s(13.0, 1.5)),
            Separation::BeyondNoise
        );
        assert_eq!(
            separation(&s(10.0, 1.0), &s(12.0, 1.5)),
            Separation::WithinNoise
        );
        let single = Summary {
            mean: 20.0,
            std: None,
            n: 1,
        };
        assert_eq!(separation(&s(10.0, 1.0), &single), Separation::Unknown);
    }

    #[test]
    fn aggregates_per_config_and_leaves_out_diverged_runs() {
        let configs = vec![
            GridConfig {
                label: "joint".into(),
                flags: Flags::from_pairs([("bn", "joint")]),
                meaning: "a".into(),
            },
            GridConfig {
                label: "separate".into(),
                flags: Flags::from_pairs([("bn", "separate")]),
                meaning: "b".into(),
            },
        ];
        let results = vec![
            result("joint", 1, Some(10.0), &[(1.0, 30.0), (2.0, 10.0)]),
            result("separate", 1, Some(40.0), &[(1.0, 50.0), (2.0, 40.0)]),
            result("joint", 2, Some(20.0), &[(1.0, 50.0), (2.0, 20.0)]),
            result("joint", 3, None, &[(1.0, 70.0)]),
        ];
        let summaries = aggregate(&configs, &results);
        assert_eq!(summaries.len(), 2);
        let joint = &summaries[0];
        assert_eq!(joint.label, "joint");
        assert_eq!(joint.flags, "--bn joint");
        assert_eq!((joint.runs, joint.diverged), (3, 1));
        let fid = joint.fid.unwrap();
        assert_eq!((fid.mean, fid.n), (15.0, 2));
        assert!((fid.std.unwrap() - 50f64.sqrt()).abs() < 1e-12);
        assert_eq!(
            joint.fid_per_seed,
            vec![(1, Some(10.0)), (2, Some(20.0)), (3, None)]
        );
        // The diverged seed's epoch-1 FID (70) stays out of the curve too.
        assert_eq!(joint.curve.len(), 2);
        assert_eq!(joint.curve[0].mean, 40.0);
        assert_eq!((joint.curve[0].min, joint.curve[0].max), (30.0, 50.0));
        assert_eq!(joint.curve[0].n, 2);
        // Seeds 1 and 2 judged epoch 1 after 61 and 62 s of training.
        assert!((joint.curve[0].minutes - 61.5 / 60.0).abs() < 1e-12);
        assert_eq!(joint.curve[1].mean, 15.0);
        assert_eq!(joint.curve[1].n, 2);
        assert_eq!(summaries[1].fid.unwrap().std, None);
    }
}
