//! Batch normalization with Chainer's conventions (eps 2e-5, running
//! averages with decay 0.9, running variance unbiased, running statistics
//! starting at 0) and a [`BnStrategy`] for groups of batches.
//!
//! Works on `[N, C]` (per feature) and `[N, C, H, W]` (per channel) inputs.
//! γ and β are parameters; the running mean and variance are buffers
//! (`avg_mean`, `avg_var`), saved in snapshots but not trained.
//!
//! Training on f32 CPU tensors runs on fused kernels (`kernels::channel_norm`:
//! three passes forward, two for the gradient) for one batch, `Separate` and
//! `Joint`; `RealStats` over several batches, and every other device or
//! type, on candle's ops.

use anyhow::{bail, Result};
use candle_core::{Device, Tensor, Var};
use kusari_trainer::ParamStore;

use super::Phase;
use crate::config::BnStrategy;
use crate::kernels::channel_norm;

/// Chainer's default epsilon.
pub const EPS: f64 = 2e-5;
/// Chainer's default running-average decay.
pub const DECAY: f64 = 0.9;

/// Per-channel normalization with learned scale γ and shift β.
#[derive(Clone)]
pub struct BatchNorm {
    gamma: Var,
    beta: Var,
    avg_mean: Var,
    avg_var: Var,
    eps: f64,
    decay: f64,
}

impl BatchNorm {
    /// Registers `gamma` (1), `beta` (0) and the buffers `avg_mean`, `avg_var` (0) in `params`.
    pub fn new(params: &ParamStore, channels: usize, device: &Device) -> Result<Self> {
        let f32 = candle_core::DType::F32;
        Ok(Self {
            gamma: params.parameter("gamma", Tensor::ones(channels, f32, device)?)?,
            beta: params.parameter("beta", Tensor::zeros(channels, f32, device)?)?,
            avg_mean: params.buffer("avg_mean", Tensor::zeros(channels, f32, device)?)?,
            avg_var: params.buffer("avg_var", Tensor::zeros(channels, f32, device)?)?,
            eps: EPS,
            decay: DECAY,
        })
    }

    /// The epsilon added to the variance.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// The running-average decay.
    pub fn decay(&self) -> f64 {
        self.decay
    }

    /// γ, β, and the running mean and variance, in that order.
    pub fn vars(&self) -> [&Var; 4] {
        [&self.gamma, &self.beta, &self.avg_mean, &self.avg_var]
    }

    /// Normalizes every batch of `xs`.
    ///
    /// Training: statistics as `strategy` says (for a single batch all
    /// strategies agree), running averages updated from the batches that
    /// supplied statistics. Evaluation: the running averages.
    pub fn forward(
        &self,
        xs: &[Tensor],
        strategy: BnStrategy,
        phase: &Phase<'_>,
    ) -> Result<Vec<Tensor>> {
        let (gamma, beta) = (self.gamma.as_tensor(), self.beta.as_tensor());
        if !phase.is_train() {
            let (mean, var) = (self.avg_mean.as_tensor(), self.avg_var.as_tensor());
            return xs
                .iter()
                .map(|x| normalize(x, mean, var, gamma, beta, self.eps))
                .collect();
        }
        if xs.is_empty() {
            return Ok(Vec::new());
        }
        let fused = xs.iter().all(crate::kernels::cpu_kernels_apply)
            && (xs.len() == 1 || strategy != BnStrategy::RealStats);
        if fused {
            return self.forward_fused(xs, strategy);
        }
        // Statistics are taken over the trailing dimension of a channel-major
        // copy: candle sums trailing dimensions in one pass, but any other
        // set of axes (as [N, C, H, W]'s 0, 2, 3, here and in the backward
        // pass of every per-channel broadcast) one element at a time.
        let rows: Vec<Tensor> = xs.iter().map(channel_major).collect::<Result<_>>()?;
        let (gamma, beta) = (column(gamma)?, column(beta)?);
        let normalized: Vec<Tensor> = match strategy {
            BnStrategy::Separate => rows
                .iter()
                .map(|x| {
                    let (mean, var) = row_stats(x)?;
                    self.update_running(&mean, &var, x)?;
                    normalize_broadcast(x, &mean, &var, &gamma, &beta, self.eps)
                })
                .collect::<Result<_>>()?,
            BnStrategy::Joint => {
                let all = if rows.len() == 1 {
                    rows[0].clone()
                } else {
                    Tensor::cat(&rows, 1)?
                };
                let (mean, var) = row_stats(&all)?;
                self.update_running(&mean, &var, &all)?;
                rows.iter()
                    .map(|x| normalize_broadcast(x, &mean, &var, &gamma, &beta, self.eps))
                    .collect::<Result<_>>()?
            }
            BnStrategy::RealStats => {
                let (mean, var) = row_stats(&rows[0])?;
                self.update_running(&mean, &var, &rows[0])?;
                rows.iter()
                    .map(|x| normalize_broadcast(x, &mean, &var, &gamma, &beta, self.eps))
                    .collect::<Result<_>>()?
            }
        };
        normalized
            .iter()
            .zip(xs)
            .map(|(y, x)| from_channel_major(y, x.dims()))
            .collect()
    }

    /// Training on f32 CPU tensors with kusari's fused kernels (two passes
    /// for the statistics, one for the output, two for the gradient); the same
    /// values as the candle-ops path to float rounding. `RealStats` over
    /// several batches stays on candle's ops.
    fn forward_fused(&self, xs: &[Tensor], strategy: BnStrategy) -> Result<Vec<Tensor>> {
        for x in xs {
            layout(x)?;
        }
        let (gamma, beta) = (self.gamma.as_tensor(), self.beta.as_tensor());
        let normalize = |x: &Tensor| -> Result<Tensor> {
            let (mean, var) = channel_norm::channel_stats(x)?;
            self.update_running(&mean, &var, x)?;
            Ok(channel_norm::normalize_train(
                x, &mean, &var, gamma, beta, self.eps,
            )?)
        };
        if xs.len() == 1 || strategy == BnStrategy::Separate {
            return xs.iter().map(normalize).collect();
        }
        let all = normalize(&Tensor::cat(xs, 0)?)?;
        let mut start = 0;
        xs.iter()
            .map(|x| {
                let n = x.dim(0)?;
                let part = all.narrow(0, start, n)?;
                start += n;
                Ok(part)
            })
            .collect()
    }

    /// Chainer's update: `avg ← decay·avg + (1 − decay)·stat`, the variance
    /// scaled by `m / (m − 1)` for the `m` values per channel in `x`.
    fn update_running(&self, mean: &Tensor, var: &Tensor, x: &Tensor) -> Result<()> {
        let channels = self.avg_mean.elem_count();
        let m = (x.elem_count() / channels) as f64;
        let adjust = m / (m - 1.0).max(1.0);
        let d = self.decay;
        let mean = mean.detach().flatten_all()?;
        let var = var.detach().flatten_all()?;
        self.avg_mean
            .set(&((self.avg_mean.as_tensor() * d)? + (mean * (1.0 - d))?)?)?;
        self.avg_var
            .set(&((self.avg_var.as_tensor() * d)? + (var * ((1.0 - d) * adjust))?)?)?;
        Ok(())
    }
}

/// The axes statistics are taken over and the broadcast shape of per-channel values.
fn layout(x: &Tensor) -> Result<(Vec<usize>, Vec<usize>)> {
    let dims = x.dims();
    match dims.len() {
        2 => Ok((vec![0], vec![1, dims[1]])),
        4 => Ok((vec![0, 2, 3], vec![1, dims[1], 1, 1])),
        n => bail!("batch normalization expects [N, C] or [N, C, H, W] inputs, got {n} dimensions"),
    }
}

/// Per-channel mean and biased variance of `x`, shaped to broadcast against it.
pub fn batch_stats(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let (_, shape) = layout(x)?;
    let (mean, var) = row_stats(&channel_major(x)?)?;
    Ok((mean.reshape(shape.clone())?, var.reshape(shape)?))
}

/// `[N, C]` or `[N, C, H, W]` → `[C, N·H·W]`, contiguous.
fn channel_major(x: &Tensor) -> Result<Tensor> {
    let (_, shape) = layout(x)?;
    let (n, c) = (x.dim(0)?, shape[1]);
    Ok(swap_leading(x, n, c)?.reshape((c, x.elem_count() / c.max(1)))?)
}

/// The inverse of [`channel_major`] for an input of shape `dims`.
fn from_channel_major(rows: &Tensor, dims: &[usize]) -> Result<Tensor> {
    Ok(swap_leading(rows, dims[1], dims[0])?.reshape(dims)?)
}

/// `x` viewed as `[a, b, rest]` → `[b, a, rest]`, contiguous.
fn swap_leading(x: &Tensor, a: usize, b: usize) -> Result<Tensor> {
    let rest = x.elem_count() / (a * b).max(1);
    Ok(x.reshape((a, b, rest))?.transpose(0, 1)?.contiguous()?)
}

/// A `[C]` vector as a `[C, 1]` column.
fn column(v: &Tensor) -> Result<Tensor> {
    Ok(v.reshape((v.elem_count(), 1))?)
}

/// Mean and biased variance of each row of `[C, M]`, as `[C, 1]` columns.
fn row_stats(rows: &Tensor) -> Result<(Tensor, Tensor)> {
    let mean = rows.mean_keepdim(1)?;
    let var = rows.broadcast_sub(&mean)?.sqr()?.mean_keepdim(1)?;
    Ok((mean, var))
}

/// `(x − mean) / sqrt(var + eps) · γ + β` with every per-channel operand
/// already shaped to broadcast against `x`.
fn normalize_broadcast(
    x: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let scale = (var + eps)?.sqrt()?.recip()?.broadcast_mul(gamma)?;
    Ok(x.broadcast_sub(mean)?
        .broadcast_mul(&scale)?
        .broadcast_add(beta)?)
}

/// `(x − mean) / sqrt(var + eps) · γ + β`, with `mean` and `var` either
/// broadcastable statistics or `[C]` vectors.
pub fn normalize(
    x: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let (_, shape) = layout(x)?;
    let r = |t: &Tensor| t.reshape(shape.clone());
    normalize_broadcast(x, &r(mean)?, &r(var)?, &r(gamma)?, &r(beta)?, eps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kusari_trainer::Rng;

    /// Per-column mean and biased variance, in f64.
    fn column_stats(rows: &[Vec<f32>]) -> (Vec<f64>, Vec<f64>) {
        let n = rows.len() as f64;
        let c = rows[0].len();
        let mean: Vec<f64> = (0..c)
            .map(|j| rows.iter().map(|r| r[j] as f64).sum::<f64>() / n)
            .collect();
        let var = (0..c)
            .map(|j| {
                rows.iter()
                    .map(|r| (r[j] as f64 - mean[j]).powi(2))
                    .sum::<f64>()
                    / n
            })
            .collect();
        (mean, var)
    }

    fn expected(
        rows: &[Vec<f32>],
        mean: &[f64],
        var: &[f64],
        gamma: &[f32],
        beta: &[f32],
    ) -> Vec<Vec<f64>> {
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|j| {
                        (r[j] as f64 - mean[j]) / (var[j] + EPS).sqrt() * gamma[j] as f64
                            + beta[j] as f64
                    })
                    .collect()
            })
            .collect()
    }

    fn assert_close(got: &Tensor, want: &[Vec<f64>]) -> Result<()> {
        let got = got.to_vec2::<f32>()?;
        for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
            assert!((*g as f64 - w).abs() < 1e-4, "{g} vs {w}");
        }
        Ok(())
    }

    struct Fixture {
        bn: BatchNorm,
        real: Vec<Vec<f32>>,
        fake: Vec<Vec<f32>>,
        gamma: Vec<f32>,
        beta: Vec<f32>,
    }

    fn fixture() -> Result<Fixture> {
        let dev = Device::Cpu;
        let bn = BatchNorm::new(&ParamStore::new(), 3, &dev)?;
        let gamma = vec![1.5f32, -0.5, 2.0];
        let beta = vec![0.1f32, 0.2, -0.3];
        bn.gamma.set(&Tensor::new(gamma.as_slice(), &dev)?)?;
        bn.beta.set(&Tensor::new(beta.as_slice(), &dev)?)?;
        let real = vec![
            vec![1.0f32, 2.0, -1.0],
            vec![3.0, 0.0, 0.5],
            vec![-2.0, 1.0, 4.0],
            vec![0.5, 5.0, 1.0],
        ];
        let fake = vec![
            vec![10.0f32, -3.0, 0.0],
            vec![7.0, 1.0, 2.0],
            vec![8.0, 0.0, -6.0],
        ];
        Ok(Fixture {
            bn,
            real,
            fake,
            gamma,
            beta,
        })
    }

    fn run(f: &Fixture, strategy: BnStrategy) -> Result<Vec<Tensor>> {
        let dev = Device::Cpu;
        let real = Tensor::new(f.real.clone(), &dev)?;
        let fake = Tensor::new(f.fake.clone(), &dev)?;
        let mut rng = Rng::new(0);
        f.bn.forward(&[real, fake], strategy, &Phase::Train(&mut rng))
    }

    #[test]
    fn real_stats_normalizes_fake_with_real_statistics() -> Result<()> {
        let f = fixture()?;
        let out = run(&f, BnStrategy::RealStats)?;
        let (mean, var) = column_stats(&f.real);
        assert_close(&out[0], &expected(&f.real, &mean, &var, &f.gamma, &f.beta))?;
        assert_close(&out[1], &expected(&f.fake, &mean, &var, &f.gamma, &f.beta))?;
        // Running statistics follow the real batch only (Chainer: from 0, unbiased variance).
        let m = f.real.len() as f64;
        let avg_mean = f.bn.avg_mean.to_vec1::<f32>()?;
        let avg_var = f.bn.avg_var.to_vec1::<f32>()?;
        for j in 0..3 {
            assert!((avg_mean[j] as f64 - 0.1 * mean[j]).abs() < 1e-5);
            assert!((avg_var[j] as f64 - 0.1 * var[j] * m / (m - 1.0)).abs() < 1e-5);
        }
        Ok(())
    }

    #[test]
    fn joint_normalizes_the_concatenation() -> Result<()> {
        let f = fixture()?;
        let out = run(&f, BnStrategy::Joint)?;
        let all: Vec<Vec<f32>> = f.real.iter().chain(&f.fake).cloned().collect();
        let (mean, var) = column_stats(&all);
        assert_close(&out[0], &expected(&f.real, &mean, &var, &f.gamma, &f.beta))?;
        assert_close(&out[1], &expected(&f.fake, &mean, &var, &f.gamma, &f.beta))?;
        let avg_mean = f.bn.avg_mean.to_vec1::<f32>()?;
        assert!((avg_mean[0] as f64 - 0.1 * mean[0]).abs() < 1e-5);
        Ok(())
    }

    #[test]
    fn separate_normalizes_each_batch_by_its_own_statistics() -> Result<()> {
        let f = fixture()?;
        let out = run(&f, BnStrategy::Separate)?;
        let (mean_r, var_r) = column_stats(&f.real);
        let (mean_f, var_f) = column_stats(&f.fake);
        assert_close(
            &out[0],
            &expected(&f.real, &mean_r, &var_r, &f.gamma, &f.beta),
        )?;
        assert_close(
            &out[1],
            &expected(&f.fake, &mean_f, &var_f, &f.gamma, &f.beta),
        )?;
        // Two updates, real then fake, as when D is called twice.
        let avg_mean = f.bn.avg_mean.to_vec1::<f32>()?;
        let want = 0.9 * 0.1 * mean_r[0] + 0.1 * mean_f[0];
        assert!((avg_mean[0] as f64 - want).abs() < 1e-5);
        Ok(())
    }

    #[test]
    fn eval_uses_running_statistics_and_images_use_channels() -> Result<()> {
        let dev = Device::Cpu;
        let bn = BatchNorm::new(&ParamStore::new(), 2, &dev)?;
        bn.avg_mean.set(&Tensor::new(&[1f32, -1.0], &dev)?)?;
        bn.avg_var.set(&Tensor::new(&[4f32, 0.25], &dev)?)?;
        let x = Tensor::new(&[[3f32, 3.0], [1.0, 0.0]], &dev)?;
        let y = bn.forward(&[x], BnStrategy::Joint, &Phase::Eval)?;
        let y = y[0].to_vec2::<f32>()?;
        assert!((y[0][0] - 2.0 / (4.0f32 + 2e-5).sqrt()).abs() < 1e-6);
        assert!((y[1][1] - 1.0 / (0.25f32 + 2e-5).sqrt()).abs() < 1e-5);

        // [N, C, H, W]: statistics per channel over N, H and W.
        let mut rng = Rng::new(3);
        let img = rng.normal_tensor((3, 2, 4, 4), 2.0, 3.0, &dev)?;
        let out = bn.forward(&[img], BnStrategy::Separate, &Phase::Train(&mut rng))?;
        let per_channel = out[0].transpose(0, 1)?.flatten_from(1)?;
        let mean = per_channel.mean(1)?.to_vec1::<f32>()?;
        let var = per_channel.sqr()?.mean(1)?.to_vec1::<f32>()?;
        for c in 0..2 {
            assert!(
                mean[c].abs() < 1e-5 && (var[c] - 1.0).abs() < 1e-3,
                "{mean:?} {var:?}"
            );
        }
        Ok(())
    }

    /// A layer whose γ, β and running statistics are `dtype` copies of `like`'s.
    fn layer_as(like: &BatchNorm, dtype: candle_core::DType) -> Result<BatchNorm> {
        // A copy: `to_dtype` to the same type shares the storage, which the
        // running statistics' update writes in place.
        let var = |v: &Var| -> Result<Var> {
            Ok(Var::from_tensor(&v.as_tensor().to_dtype(dtype)?.copy()?)?)
        };
        Ok(BatchNorm {
            gamma: var(&like.gamma)?,
            beta: var(&like.beta)?,
            avg_mean: var(&like.avg_mean)?,
            avg_var: var(&like.avg_var)?,
            eps: like.eps,
            decay: like.decay,
        })
    }

    /// f32 on the CPU runs the fused kernels, f64 candle's ops: both must
    /// agree on outputs, gradients and running statistics, for every strategy.
    #[test]
    fn fused_kernels_match_candle_ops_for_every_strategy() -> Result<()> {
        use candle_core::DType;
        let dev = Device::Cpu;
        let mut rng = Rng::new(3);
        let base = BatchNorm::new(&ParamStore::new(), 3, &dev)?;
        base.gamma.set(&rng.normal_tensor(3, 1.0, 0.3, &dev)?)?;
        base.beta.set(&rng.normal_tensor(3, 0.0, 0.3, &dev)?)?;
        base.avg_var.set(&Tensor::ones(3, DType::F32, &dev)?)?;
        let real = rng.normal_tensor((4, 3, 2, 5), 0.5, 2.0, &dev)?;
        let fake = rng.normal_tensor((4, 3, 2, 5), -1.0, 0.5, &dev)?;
        let weights = rng.normal_tensor((8, 3, 2, 5), 0.0, 1.0, &dev)?;
        for strategy in [
            BnStrategy::Joint,
            BnStrategy::Separate,
            BnStrategy::RealStats,
        ] {
            let mut results = Vec::new();
            for dtype in [DType::F32, DType::F64] {
                let bn = layer_as(&base, dtype)?;
                let xs = [
                    Var::from_tensor(&real.to_dtype(dtype)?)?,
                    Var::from_tensor(&fake.to_dtype(dtype)?)?,
                ];
                let inputs = [xs[0].as_tensor().clone(), xs[1].as_tensor().clone()];
                let out = bn.forward(&inputs, strategy, &Phase::Train(&mut Rng::new(0)))?;
                let out = Tensor::cat(&out, 0)?;
                let grads = (&out * weights.to_dtype(dtype)?)?.sum_all()?.backward()?;
                let grad = |v: &Var| -> Result<Tensor> {
                    Ok(grads.get(v).expect("a gradient").to_dtype(DType::F64)?)
                };
                let f64s = |t: &Tensor| -> Result<Tensor> { Ok(t.to_dtype(DType::F64)?) };
                results.push(vec![
                    ("output", f64s(&out)?),
                    ("∂real", grad(&xs[0])?),
                    ("∂fake", grad(&xs[1])?),
                    ("∂γ", grad(&bn.gamma)?),
                    ("∂β", grad(&bn.beta)?),
                    ("running mean", f64s(bn.avg_mean.as_tensor())?),
                    ("running variance", f64s(bn.avg_var.as_tensor())?),
                ]);
            }
            for ((name, fused), (_, candle)) in results[0].iter().zip(&results[1]) {
                let diff = (fused - candle)?
                    .abs()?
                    .flatten_all()?
                    .max(0)?
                    .to_scalar::<f64>()?;
                let scale = candle.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
                assert!(
                    diff <= 1e-5 * scale.max(1.0),
                    "{strategy:?} {name}: fused and candle differ by {diff}"
                );
            }
        }
        Ok(())
    }
}
