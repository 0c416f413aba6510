//! Scoring a set of samples with the judge: [`evaluate`] gives the
//! [`EvalReport`] that `kusari eval` prints and the Evaluator extension logs.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Tensor};
use kusari_trainer::Dataset;
use serde::{Deserialize, Serialize};

use super::judge::Judge;
use super::lenet::{CLASSES, IMAGE_SIDE};
use super::metrics::{class_shares, fid, inception_score, FeatureStats};
use super::train::{images_of, load_split, Split};

/// The judge's verdict on a set of samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Number of samples judged.
    pub samples: usize,
    /// `exp(E_x KL(p(y|x) ‖ p(y)))`: 1 (worst) to 10 (confident, balanced digits).
    pub inception_score: f64,
    /// Fréchet distance of the samples' penultimate features to the
    /// reference's (the MNIST test set): 0 is indistinguishable.
    pub fid: f64,
    /// The smallest of `class_shares`: 0.1 when balanced, near 0 when the
    /// generator has dropped a digit (mode collapse).
    pub min_class_share: f64,
    /// Share of samples classified as each digit 0..9.
    pub class_shares: Vec<f64>,
}

impl std::fmt::Display for EvalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "IS {:.3}  FID {:.4}  min class share {:.4}  ({} samples; shares",
            self.inception_score, self.fid, self.min_class_share, self.samples
        )?;
        for share in &self.class_shares {
            write!(f, " {share:.3}")?;
        }
        write!(f, ")")
    }
}

/// Judges `samples` (`[N, 1, 28, 28]`, pixels in `[-1, 1]`, any device) and
/// compares their features with `reference`.
pub fn evaluate(judge: &Judge, samples: &Tensor, reference: &FeatureStats) -> Result<EvalReport> {
    let dims = samples.dims();
    ensure!(
        matches!(dims, [_, 1, IMAGE_SIDE, IMAGE_SIDE]),
        "the judge scores 28×28 grey MNIST-like images [N, 1, 28, 28], got samples of shape {dims:?}"
    );
    let n = dims[0];
    ensure!(n >= 2, "judging needs at least 2 samples, got {n}");
    let finite = samples
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .all(|x| x.is_finite());
    ensure!(
        finite,
        "the samples contain NaN or infinite pixels: the generator has diverged"
    );
    let (features, probs) = judge.classify(samples)?;
    let probs = probs.flatten_all()?.to_vec1::<f32>()?;
    let shares = class_shares(&probs, CLASSES)?;
    let stats = FeatureStats::from_tensor(&features)?;
    Ok(EvalReport {
        samples: n,
        inception_score: inception_score(&probs, CLASSES)?,
        fid: fid(&stats, reference)?,
        min_class_share: shares.iter().copied().fold(f64::INFINITY, f64::min),
        class_shares: shares,
    })
}

/// How the cached reference statistics are stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedStats {
    format: String,
    /// [`Judge::fingerprint`] of the judge whose features these are.
    judge: String,
    stats: FeatureStats,
}

const STATS_FORMAT: &str = "kusari-mnist-test-stats-v1";

impl Judge {
    /// Where [`Judge::test_stats`] caches the statistics: beside the judge's
    /// weights file (`mnist-judge-v1.test-stats.json`), or in the cache
    /// folder for a judge that was never saved.
    pub fn test_stats_path(&self) -> Result<PathBuf> {
        let weights = match self.path() {
            Some(p) => p.to_path_buf(),
            None => Judge::cache_path()?,
        };
        Ok(weights.with_extension("test-stats.json"))
    }

    /// Feature statistics of the 10,000 MNIST test images (the FID
    /// reference), computed once per judge and cached beside it.
    pub fn test_stats(&self, mnist_dir: &Path) -> Result<FeatureStats> {
        self.cached_stats(|| {
            let test = load_split(mnist_dir, Split::Test)?;
            let (features, _) = self.classify(&images_of(&test, self.device())?)?;
            FeatureStats::from_tensor(&features)
        })
    }

    /// The statistics cached at [`Judge::test_stats_path`] if this judge
    /// computed them; else `compute`s and caches them. Failing to write the
    /// cache is only a warning.
    fn cached_stats(&self, compute: impl FnOnce() -> Result<FeatureStats>) -> Result<FeatureStats> {
        let path = self.test_stats_path()?;
        let fingerprint = self.fingerprint()?;
        if let Ok(bytes) = std::fs::read(&path) {
            match serde_json::from_slice::<CachedStats>(&bytes) {
                Ok(c) if c.format == STATS_FORMAT && c.judge == fingerprint => return Ok(c.stats),
                // Another judge's statistics, or a damaged file: recompute.
                _ => {
                    tracing::info!(path = %path.display(), "recomputing the MNIST test statistics")
                }
            }
        }
        let cached = CachedStats {
            format: STATS_FORMAT.to_string(),
            judge: fingerprint,
            stats: compute()?,
        };
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .map_err(anyhow::Error::from)
            .and_then(|()| {
                kusari_trainer::fsutil::write_atomic(&path, &serde_json::to_vec(&cached)?)
            });
        if let Err(e) = written {
            eprintln!(
                "kusari: warning: cannot cache the MNIST test statistics at {} ({e:#}); \
                 they will be recomputed next time",
                path.display()
            );
        }
        Ok(cached.stats)
    }
}

/// The scores of real data: the first `n` MNIST training images judged
/// against the test set. A generator matching this is as good as the judge
/// can tell.
pub fn real_baseline(judge: &Judge, mnist_dir: &Path, n: usize) -> Result<EvalReport> {
    let train = load_split(mnist_dir, Split::Train)?;
    ensure!(
        (2..=train.len()).contains(&n),
        "the real baseline takes 2..={} training images, not {n}",
        train.len()
    );
    let images = images_of(&train.take(n), judge.device())?;
    let reference = judge
        .test_stats(mnist_dir)
        .context("computing the MNIST test-set reference statistics")?;
    evaluate(judge, &images, &reference)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::lenet::FEATURES;

    #[test]
    fn identical_sets_score_zero_fid_and_shapes_are_checked() -> Result<()> {
        let judge = Judge::untrained(4)?;
        let mut rng = kusari_trainer::Rng::new(5);
        let images = rng.uniform_tensor((300, 1, 28, 28), -1.0, 1.0, &candle_core::Device::Cpu)?;
        let (features, _) = judge.classify(&images)?;
        let reference = FeatureStats::from_tensor(&features)?;
        assert_eq!(reference.dim, FEATURES);
        let report = evaluate(&judge, &images, &reference)?;
        assert_eq!(report.samples, 300);
        assert!(report.fid < 1e-3, "FID {}", report.fid);
        assert!((1.0..=10.0).contains(&report.inception_score));
        assert_eq!(report.class_shares.len(), CLASSES);
        assert!((report.class_shares.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let min = report.class_shares.iter().copied().fold(1.0, f64::min);
        assert_eq!(report.min_class_share, min);

        // Different images are farther away.
        let other =
            (rng.uniform_tensor((300, 1, 28, 28), -1.0, 1.0, &candle_core::Device::Cpu)? * 0.3)?;
        assert!(evaluate(&judge, &other, &reference)?.fid > report.fid);

        let err = evaluate(&judge, &images.narrow(0, 0, 1)?, &reference)
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 2"), "{err}");
        let flat = images.reshape((300, 784))?;
        let err = evaluate(&judge, &flat, &reference).unwrap_err().to_string();
        assert!(err.contains("[N, 1, 28, 28]"), "{err}");
        Ok(())
    }

    #[test]
    fn reference_statistics_are_cached_per_judge() -> Result<()> {
        let cache = tempfile::tempdir()?;
        let weights = cache.path().join(super::super::judge::JUDGE_FILE);
        let stats = |x: f32| FeatureStats::from_features(&[x, 0.0, 0.0, 1.0], 2);
        let mut judge = Judge::untrained(6)?;
        judge.save(&weights)?;
        let path = judge.test_stats_path()?;
        assert_eq!(path, cache.path().join("mnist-judge-v1.test-stats.json"));

        let first = judge.cached_stats(|| stats(1.0))?;
        assert!(path.exists());
        // The second call reads the cache, exactly.
        let again = judge.cached_stats(|| anyhow::bail!("must not recompute"))?;
        assert_eq!(again, first);
        // Another judge at the same place does not reuse them.
        let mut other = Judge::untrained(7)?;
        other.save(&weights)?;
        assert_eq!(other.cached_stats(|| stats(2.0))?, stats(2.0)?);
        // A damaged cache is recomputed.
        std::fs::write(&path, b"{")?;
        assert_eq!(other.cached_stats(|| stats(3.0))?, stats(3.0)?);
        assert_eq!(other.cached_stats(|| anyhow::bail!("cached"))?, stats(3.0)?);
        Ok(())
    }

    /// The numbers in docs/evaluation.md. Trains the cached judge if there
    /// is none (minutes), so it is not part of the normal test run:
    ///
    /// `MNIST_DIR=… cargo test --release -p kusari-models real_data_baseline -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn real_data_baseline() -> Result<()> {
        let Some(dir) = std::env::var_os("MNIST_DIR") else {
            eprintln!("skipped: MNIST_DIR is not set");
            return Ok(());
        };
        let dir = PathBuf::from(dir);
        let judge = Judge::load_or_train(&dir)?;
        let info = judge.info();
        eprintln!(
            "judge {}: test accuracy {:.4}, {} epochs, trained in {:.0} s",
            judge
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            info.test_accuracy,
            info.epochs,
            info.train_seconds
        );
        assert!(
            info.test_accuracy >= 0.99,
            "the judge must reach 99.0% test accuracy"
        );

        let started = std::time::Instant::now();
        let reference = judge.test_stats(&dir)?;
        let variance: f64 = (0..reference.dim)
            .map(|i| reference.cov[i * reference.dim + i])
            .sum();
        eprintln!(
            "test-set features: Tr(Σ) = {variance:.2}, |μ|² = {:.2}",
            reference.mean.iter().map(|m| m * m).sum::<f64>()
        );
        let train_set = load_split(&dir, Split::Train)?;
        let train = real_baseline(&judge, &dir, 10_000)?;
        let test_images = images_of(&load_split(&dir, Split::Test)?, judge.device())?;
        let test = evaluate(&judge, &test_images, &reference)?;

        // For scale: real digits with one digit (1) missing, and noise.
        let labels = train_set.labels().context("MNIST has labels")?;
        let keep: Vec<u32> = (0..train_set.len() as u32)
            .filter(|&i| labels[i as usize] != 1)
            .take(10_000)
            .collect();
        let all = images_of(&train_set, judge.device())?;
        let no_ones = all.index_select(&Tensor::new(keep.as_slice(), judge.device())?, 0)?;
        let no_ones = evaluate(&judge, &no_ones, &reference)?;
        let mut rng = kusari_trainer::Rng::new(0);
        let noise = rng.uniform_tensor((10_000, 1, 28, 28), -1.0, 1.0, judge.device())?;
        let noise = evaluate(&judge, &noise, &reference)?;

        // For scale: real digits degraded the way a generator's samples are
        // (pixel noise, blur), rounded to 8 bits as saved samples are.
        let first = all.narrow(0, 0, 10_000)?;
        let noisy = |std: f32, rng: &mut kusari_trainer::Rng| -> Result<EvalReport> {
            let noise = rng.normal_tensor(first.shape(), 0.0, std, judge.device())?;
            evaluate(&judge, &as_8bit(&(&first + noise)?)?, &reference)
        };
        let noisy_01 = noisy(0.1, &mut rng)?;
        let noisy_03 = noisy(0.3, &mut rng)?;
        let blurred = evaluate(&judge, &as_8bit(&box_blur_3x3(&first)?)?, &reference)?;

        eprintln!("10,000 train images vs test:     {train}");
        eprintln!("… plus N(0, 0.1²) pixel noise:   {noisy_01}");
        eprintln!("… plus N(0, 0.3²) pixel noise:   {noisy_03}");
        eprintln!("… blurred by a 3×3 box filter:   {blurred}");
        eprintln!("the test set vs itself:          {test}");
        eprintln!("10,000 train images without 1s:  {no_ones}");
        eprintln!("10,000 uniform-noise images:     {noise}");
        eprintln!("({:.1} s)", started.elapsed().as_secs_f64());
        assert!(test.fid < 1e-3, "FID(test, test) = {}", test.fid);
        assert!(test.inception_score > 9.0 && train.inception_score > 9.0);
        assert!(
            train.fid * 5.0 < no_ones.fid,
            "a missing digit must cost FID"
        );
        assert!(no_ones.fid < noise.fid);
        assert!(train.fid < noisy_01.fid && noisy_01.fid < noisy_03.fid);
        assert!(train.fid < blurred.fid);
        assert!(train.min_class_share > 0.08 && test.min_class_share > 0.08);
        assert!(
            no_ones.min_class_share < 0.01,
            "the judge must see that 1s are missing"
        );
        Ok(())
    }

    /// Rounds `[-1, 1]` pixels to the 8-bit values a saved sample holds.
    fn as_8bit(images: &Tensor) -> Result<Tensor> {
        let range = kusari_trainer::datasets::PixelRange::MinusOneOne;
        let values: Vec<f32> = images
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(|v| range.to_f32(range.to_u8(v)))
            .collect();
        Ok(Tensor::from_vec(values, images.shape(), images.device())?)
    }

    /// Each pixel replaced by the mean of its 3×3 neighbourhood (edges repeated).
    fn box_blur_3x3(images: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = images.dims4()?;
        let rows = Tensor::cat(
            &[
                images.narrow(2, 0, 1)?,
                images.clone(),
                images.narrow(2, h - 1, 1)?,
            ],
            2,
        )?;
        let padded = Tensor::cat(
            &[
                rows.narrow(3, 0, 1)?,
                rows.clone(),
                rows.narrow(3, w - 1, 1)?,
            ],
            3,
        )?;
        let mut sum = images.zeros_like()?;
        for dy in 0..3 {
            for dx in 0..3 {
                sum = (sum + padded.narrow(2, dy, h)?.narrow(3, dx, w)?)?;
            }
        }
        Ok((sum / 9.0)?)
    }
}
