//! The sample-quality numbers: Inception Score, Fréchet distance between
//! feature statistics (FID), and the per-class share of samples.
//!
//! All take the judge's outputs as plain row-major slices, so they can be
//! tested on synthetic data and reused with any classifier.

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::eigen::{matmul, symmetric_eigen};

/// Checks that `probs` is `N×classes` with finite, non-negative entries; returns `N`.
fn check_probs(probs: &[f32], classes: usize) -> Result<usize> {
    ensure!(classes > 0, "the number of classes must be positive");
    ensure!(!probs.is_empty(), "there are no predictions to score");
    ensure!(
        probs.len().is_multiple_of(classes),
        "{} probabilities do not divide into rows of {classes} classes",
        probs.len()
    );
    if let Some(bad) = probs.iter().find(|p| !p.is_finite() || **p < 0.0) {
        bail!("class probabilities must be finite and non-negative, found {bad}");
    }
    Ok(probs.len() / classes)
}

/// The Inception Score `exp(E_x KL(p(y|x) ‖ p(y)))` of the `N×classes`
/// class probabilities `probs` (row-major, one row per sample), where
/// `p(y)` is the mean row.
///
/// It ranges from 1 (every sample gets the same prediction, or every
/// prediction is uniform) to `classes` (confident predictions, spread evenly
/// over the classes). Computed over all samples at once, without splits.
pub fn inception_score(probs: &[f32], classes: usize) -> Result<f64> {
    let n = check_probs(probs, classes)?;
    let mut marginal = vec![0.0f64; classes];
    for row in probs.chunks_exact(classes) {
        for (m, &p) in marginal.iter_mut().zip(row) {
            *m += f64::from(p);
        }
    }
    for m in &mut marginal {
        *m /= n as f64;
    }
    let mut kl_sum = 0.0;
    for row in probs.chunks_exact(classes) {
        for (&p, &m) in row.iter().zip(&marginal) {
            // 0·log(0/m) = 0; and p > 0 implies m > 0.
            if p > 0.0 {
                let p = f64::from(p);
                kl_sum += p * (p / m).ln();
            }
        }
    }
    Ok((kl_sum / n as f64).exp())
}

/// The share of samples whose most probable class is `k`, for each class
/// `k`: `argmax` counts over `N`. Ties go to the lower class.
pub fn class_shares(probs: &[f32], classes: usize) -> Result<Vec<f64>> {
    let n = check_probs(probs, classes)?;
    let mut counts = vec![0usize; classes];
    for row in probs.chunks_exact(classes) {
        let best = row
            .iter()
            .enumerate()
            .fold(0, |best, (k, &p)| if p > row[best] { k } else { best });
        counts[best] += 1;
    }
    Ok(counts.iter().map(|&c| c as f64 / n as f64).collect())
}

/// Mean and covariance of a set of feature vectors — all FID needs of them.
///
/// Serializable, so the statistics of a fixed reference set (the MNIST test
/// set) are computed once and cached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureStats {
    /// Number of feature vectors the statistics were computed from.
    pub count: usize,
    /// Feature dimension `D`.
    pub dim: usize,
    /// Mean feature vector, length `D`.
    pub mean: Vec<f64>,
    /// Unbiased covariance (divided by `N − 1`), `D×D` row-major.
    pub cov: Vec<f64>,
}

impl FeatureStats {
    /// Statistics of `features`, `N×dim` row-major, computed in `f64`.
    pub fn from_features(features: &[f32], dim: usize) -> Result<Self> {
        ensure!(dim > 0, "the feature dimension must be positive");
        ensure!(
            features.len().is_multiple_of(dim),
            "{} values do not divide into feature vectors of length {dim}",
            features.len()
        );
        let count = features.len() / dim;
        ensure!(
            count >= 2,
            "a covariance needs at least 2 feature vectors, got {count}"
        );
        if features.iter().any(|x| !x.is_finite()) {
            bail!("the features contain NaN or infinite values");
        }

        let mut mean = vec![0.0f64; dim];
        for row in features.chunks_exact(dim) {
            for (m, &x) in mean.iter_mut().zip(row) {
                *m += f64::from(x);
            }
        }
        for m in &mut mean {
            *m /= count as f64;
        }

        // Upper triangle of Σ (x − μ)(x − μ)ᵀ, accumulated per chunk of rows
        // on all cores, then mirrored.
        let upper = features
            .par_chunks(dim * 256)
            .map(|chunk| {
                let mut acc = vec![0.0f64; dim * dim];
                let mut centered = vec![0.0f64; dim];
                for row in chunk.chunks_exact(dim) {
                    for ((c, &x), &m) in centered.iter_mut().zip(row).zip(&mean) {
                        *c = f64::from(x) - m;
                    }
                    for i in 0..dim {
                        let ci = centered[i];
                        if ci == 0.0 {
                            continue;
                        }
                        for (a, &cj) in acc[i * dim + i..(i + 1) * dim]
                            .iter_mut()
                            .zip(&centered[i..])
                        {
                            *a += ci * cj;
                        }
                    }
                }
                acc
            })
            .reduce(
                || vec![0.0f64; dim * dim],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    a
                },
            );
        let mut cov = upper;
        let denominator = (count - 1) as f64;
        for i in 0..dim {
            for j in i..dim {
                let v = cov[i * dim + j] / denominator;
                cov[i * dim + j] = v;
                cov[j * dim + i] = v;
            }
        }
        Ok(Self {
            count,
            dim,
            mean,
            cov,
        })
    }

    /// Statistics of the rows of an `[N, D]` tensor (any float dtype, any device).
    pub fn from_tensor(features: &Tensor) -> Result<Self> {
        let (_, dim) = features
            .dims2()
            .context("feature statistics need an [N, D] tensor")?;
        let values = features
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Self::from_features(&values, dim)
    }

    fn check(&self) -> Result<()> {
        ensure!(
            self.mean.len() == self.dim && self.cov.len() == self.dim * self.dim,
            "feature statistics of dimension {} have a mean of length {} and a covariance of {} entries",
            self.dim,
            self.mean.len(),
            self.cov.len()
        );
        Ok(())
    }
}

fn trace(m: &[f64], n: usize) -> f64 {
    (0..n).map(|i| m[i * n + i]).sum()
}

/// The Fréchet distance between the Gaussians fitted to two feature sets:
///
/// ```text
/// FID = |μ₁ − μ₂|² + Tr(Σ₁) + Tr(Σ₂) − 2 Tr((Σ₁Σ₂)^½)
/// ```
///
/// `Tr((Σ₁Σ₂)^½)` is computed exactly, not by an iterative approximation:
/// `S = Σ₁^½` from a symmetric eigendecomposition of `Σ₁`; then `Σ₁Σ₂` is
/// similar to the symmetric positive semi-definite `S Σ₂ S`, whose
/// eigenvalues' square roots sum to the trace. Negative eigenvalues, which
/// only round-off produces, count as zero. The result is symmetric in its
/// arguments up to round-off and 0 for identical statistics; it is clamped
/// at 0 from below.
pub fn fid(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    Ok(unclamped_fid(a, b)?.max(0.0))
}

/// [`fid`] before clamping, which round-off can make slightly negative.
fn unclamped_fid(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    a.check()?;
    b.check()?;
    ensure!(
        a.dim == b.dim,
        "cannot compare features of dimension {} with features of dimension {}",
        a.dim,
        b.dim
    );
    let n = a.dim;
    let mean_term: f64 = a
        .mean
        .iter()
        .zip(&b.mean)
        .map(|(x, y)| (x - y).powi(2))
        .sum();

    let root_a = symmetric_eigen(&a.cov, n)
        .context("decomposing the first covariance matrix")?
        .map(|l| l.max(0.0).sqrt());
    let inner = matmul(&matmul(&root_a, &b.cov, n), &root_a, n);
    let cross = symmetric_eigen(&inner, n)
        .context("decomposing Σ₁^½ Σ₂ Σ₁^½")?
        .values
        .iter()
        .map(|&l| l.max(0.0).sqrt())
        .sum::<f64>();

    let value = mean_term + trace(&a.cov, n) + trace(&b.cov, n) - 2.0 * cross;
    ensure!(value.is_finite(), "FID came out as {value}");
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kusari_trainer::Rng;

    #[test]
    fn uniform_predictions_score_one() -> Result<()> {
        let probs = vec![0.1f32; 1000 * 10];
        let is = inception_score(&probs, 10)?;
        assert!((is - 1.0).abs() < 1e-9, "IS {is}");
        // One class for every sample also scores 1, however confident.
        let mut same = vec![0f32; 100 * 10];
        same.chunks_exact_mut(10).for_each(|r| r[3] = 1.0);
        assert!((inception_score(&same, 10)? - 1.0).abs() < 1e-9);
        Ok(())
    }

    #[test]
    fn confident_balanced_predictions_score_the_class_count() -> Result<()> {
        let mut probs = vec![0f32; 1000 * 10];
        for (i, row) in probs.chunks_exact_mut(10).enumerate() {
            row[i % 10] = 1.0;
        }
        let is = inception_score(&probs, 10)?;
        assert!((is - 10.0).abs() < 1e-9, "IS {is}");
        let shares = class_shares(&probs, 10)?;
        assert!(
            shares.iter().all(|&s| (s - 0.1).abs() < 1e-12),
            "{shares:?}"
        );

        // Half the classes, confidently: IS 5.
        for (i, row) in probs.chunks_exact_mut(10).enumerate() {
            row.fill(0.0);
            row[i % 5] = 1.0;
        }
        let is = inception_score(&probs, 10)?;
        assert!((is - 5.0).abs() < 1e-9, "IS {is}");
        let shares = class_shares(&probs, 10)?;
        assert_eq!(shares[5..], [0.0; 5]);
        Ok(())
    }

    #[test]
    fn bad_predictions_are_errors() {
        assert!(inception_score(&[], 10).is_err());
        assert!(inception_score(&[0.5; 15], 10).is_err());
        assert!(inception_score(&[f32::NAN, 1.0], 2).is_err());
        assert!(class_shares(&[-0.1, 1.1], 2).is_err());
    }

    /// `sqrt` of a 2×2 symmetric positive definite matrix, in closed form:
    /// `(M + √det·I) / √(tr + 2√det)`.
    fn sqrt2(m: [f64; 4]) -> [f64; 4] {
        let det = m[0] * m[3] - m[1] * m[2];
        let s = det.sqrt();
        let t = (m[0] + m[3] + 2.0 * s).sqrt();
        [(m[0] + s) / t, m[1] / t, m[2] / t, (m[3] + s) / t]
    }

    fn mul2(a: [f64; 4], b: [f64; 4]) -> [f64; 4] {
        [
            a[0] * b[0] + a[1] * b[2],
            a[0] * b[1] + a[1] * b[3],
            a[2] * b[0] + a[3] * b[2],
            a[2] * b[1] + a[3] * b[3],
        ]
    }

    /// FID between N(μ₁, Σ₁) and N(μ₂, Σ₂) in 2-D, by the closed form
    /// `Tr((Σ₁Σ₂)^½) = Tr((S Σ₂ S)^½)` with `S = Σ₁^½`.
    fn closed_form_fid(mu1: [f64; 2], c1: [f64; 4], mu2: [f64; 2], c2: [f64; 4]) -> f64 {
        let s = sqrt2(c1);
        let cross = sqrt2(mul2(mul2(s, c2), s));
        (mu1[0] - mu2[0]).powi(2) + (mu1[1] - mu2[1]).powi(2) + c1[0] + c1[3] + c2[0] + c2[3]
            - 2.0 * (cross[0] + cross[3])
    }

    fn stats2(mean: [f64; 2], cov: [f64; 4]) -> FeatureStats {
        FeatureStats {
            count: 2,
            dim: 2,
            mean: mean.to_vec(),
            cov: cov.to_vec(),
        }
    }

    /// `n` samples of N(μ, Σ) in 2-D via the Cholesky factor of Σ.
    fn gaussian2(n: usize, mean: [f64; 2], cov: [f64; 4], rng: &mut Rng) -> Vec<f32> {
        let l00 = cov[0].sqrt();
        let l10 = cov[2] / l00;
        let l11 = (cov[3] - l10 * l10).sqrt();
        let mut z = vec![0f32; 2 * n];
        rng.fill_normal(&mut z, 0.0, 1.0);
        z.chunks_exact(2)
            .flat_map(|p| {
                let (a, b) = (f64::from(p[0]), f64::from(p[1]));
                [
                    (mean[0] + l00 * a) as f32,
                    (mean[1] + l10 * a + l11 * b) as f32,
                ]
            })
            .collect()
    }

    const MU1: [f64; 2] = [1.0, -2.0];
    const COV1: [f64; 4] = [2.0, 0.8, 0.8, 1.0];
    const MU2: [f64; 2] = [-0.5, 0.5];
    const COV2: [f64; 4] = [0.5, -0.3, -0.3, 1.5];

    #[test]
    fn fid_of_known_gaussians_matches_the_closed_form() -> Result<()> {
        let want = closed_form_fid(MU1, COV1, MU2, COV2);
        let exact = fid(&stats2(MU1, COV1), &stats2(MU2, COV2))?;
        assert!(
            (exact - want).abs() < 1e-12 * want,
            "fid {exact} vs closed form {want}"
        );

        // Diagonal covariances: Σ (√a − √b)².
        let d = 64;
        let va: Vec<f64> = (0..d).map(|i| 0.5 + i as f64 / 10.0).collect();
        let vb: Vec<f64> = (0..d).map(|i| 3.0 / (1.0 + i as f64)).collect();
        let diag = |v: &[f64]| {
            let mut m = vec![0.0; d * d];
            v.iter().enumerate().for_each(|(i, x)| m[i * d + i] = *x);
            FeatureStats {
                count: 2,
                dim: d,
                mean: vec![0.0; d],
                cov: m,
            }
        };
        let want: f64 = va
            .iter()
            .zip(&vb)
            .map(|(a, b)| (a.sqrt() - b.sqrt()).powi(2))
            .sum();
        let got = fid(&diag(&va), &diag(&vb))?;
        assert!((got - want).abs() < 1e-10 * want, "fid {got} vs {want}");

        // From samples of the two Gaussians: within 1% of the closed form.
        let mut rng = Rng::new(42);
        let n = 200_000;
        let a = FeatureStats::from_features(&gaussian2(n, MU1, COV1, &mut rng), 2)?;
        let b = FeatureStats::from_features(&gaussian2(n, MU2, COV2, &mut rng), 2)?;
        let sampled = fid(&a, &b)?;
        let want = closed_form_fid(MU1, COV1, MU2, COV2);
        eprintln!("sampled FID {sampled}, closed form {want}");
        assert!(
            (sampled - want).abs() < 0.01 * want,
            "sampled fid {sampled} vs closed form {want}"
        );
        Ok(())
    }

    #[test]
    fn fid_of_identical_small_sets_is_zero() -> Result<()> {
        let s = stats2(MU1, COV1);
        assert!(unclamped_fid(&s, &s)?.abs() < 1e-12);
        Ok(())
    }

    /// `n` correlated, non-negative "penultimate layer" features: ReLU of a
    /// random linear map of Gaussian noise plus a bias.
    fn synthetic_features(n: usize, d: usize, mix_seed: u64, rng: &mut Rng) -> Vec<f32> {
        let mut mix_rng = Rng::new(mix_seed);
        let mut w = vec![0f32; d * d];
        mix_rng.fill_normal(&mut w, 0.0, 1.0 / (d as f32).sqrt());
        let mut bias = vec![0f32; d];
        mix_rng.fill_normal(&mut bias, 0.3, 0.5);
        let mut z = vec![0f32; n * d];
        rng.fill_normal(&mut z, 0.0, 1.0);
        let mut out = vec![0f32; n * d];
        for (zr, or) in z.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            or.copy_from_slice(&bias);
            for (k, &zk) in zr.iter().enumerate() {
                for (o, &wkj) in or.iter_mut().zip(&w[k * d..(k + 1) * d]) {
                    *o += zk * wkj;
                }
            }
            or.iter_mut().for_each(|o| *o = o.max(0.0));
        }
        out
    }

    #[test]
    fn fid_is_exact_and_symmetric_on_realistic_features() -> Result<()> {
        let (n, d) = (10_000, 128);
        let mut rng = Rng::new(1);
        let a = FeatureStats::from_features(&synthetic_features(n, d, 10, &mut rng), d)?;
        let b = FeatureStats::from_features(&synthetic_features(n, d, 11, &mut rng), d)?;
        let same = unclamped_fid(&a, &a)?;
        assert!(same.abs() < 1e-3, "FID(A, A) = {same}");
        let ab = fid(&a, &b)?;
        let ba = fid(&b, &a)?;
        eprintln!("FID(A, A) = {same:e}; FID(A, B) = {ab}; FID(B, A) = {ba}");
        assert!(
            ab > 1.0,
            "different feature sets should be far apart, FID {ab}"
        );
        assert!(
            (ab - ba).abs() <= 1e-6 * ab,
            "FID(A, B) = {ab} but FID(B, A) = {ba}"
        );
        Ok(())
    }

    #[test]
    fn feature_statistics_are_checked() -> Result<()> {
        assert!(
            FeatureStats::from_features(&[1.0, 2.0], 2).is_err(),
            "one vector has no covariance"
        );
        assert!(FeatureStats::from_features(&[1.0, 2.0, 3.0], 2).is_err());
        assert!(FeatureStats::from_features(&[1.0, f32::NAN, 3.0, 4.0], 2).is_err());
        let s = FeatureStats::from_features(&[1.0, 2.0, 3.0, 6.0], 2)?;
        assert_eq!(s.mean, vec![2.0, 4.0]);
        assert_eq!(s.cov, vec![2.0, 4.0, 4.0, 8.0]);
        let other = FeatureStats::from_features(&[1.0, 2.0, 3.0, 3.0, 4.0, 5.0], 3)?;
        assert!(fid(&s, &other).is_err(), "dimensions differ");
        let json = serde_json::to_string(&s)?;
        assert_eq!(serde_json::from_str::<FeatureStats>(&json)?, s);
        Ok(())
    }
}
