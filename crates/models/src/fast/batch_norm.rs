//! BatchNorm on a stack of batches (D sees `[real; fake]` as one matrix),
//! forward and backward, per column chunk. A [`BnGroup`] says which rows
//! supply statistics and which rows those statistics normalize, so the three
//! [`BnStrategy`]s share one code path, and the backward differentiates
//! exactly what the forward did (statistics included).

use std::ops::Range;

use super::columns::{segment, SharedMut};
use crate::config::BnStrategy;

/// Rows whose mean and variance normalize the rows of `applied`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BnGroup {
    /// Rows the statistics come from.
    pub stats: Range<usize>,
    /// Rows normalized with them (a superset of `stats`).
    pub applied: Range<usize>,
}

/// The groups for D's `[real; fake]` stack of two batches of `n` rows, in
/// the order their running statistics are updated.
pub fn pair_groups(strategy: BnStrategy, n: usize) -> Vec<BnGroup> {
    match strategy {
        BnStrategy::Separate => vec![
            BnGroup {
                stats: 0..n,
                applied: 0..n,
            },
            BnGroup {
                stats: n..2 * n,
                applied: n..2 * n,
            },
        ],
        BnStrategy::Joint => vec![BnGroup {
            stats: 0..2 * n,
            applied: 0..2 * n,
        }],
        BnStrategy::RealStats => vec![BnGroup {
            stats: 0..n,
            applied: 0..2 * n,
        }],
    }
}

/// One batch of `n` rows normalized by its own statistics (G).
pub fn single_group(n: usize) -> Vec<BnGroup> {
    vec![BnGroup {
        stats: 0..n,
        applied: 0..n,
    }]
}

/// Per-group, per-column statistics of one forward pass (`[groups × cols]`).
#[derive(Debug, Clone, Default)]
pub struct BnStats {
    /// Batch means.
    pub mean: Vec<f32>,
    /// Biased batch variances.
    pub var: Vec<f32>,
    /// `1 / sqrt(var + eps)`.
    pub inv_std: Vec<f32>,
}

impl BnStats {
    /// Room for `groups` groups of `cols` columns.
    pub fn resize(&mut self, groups: usize, cols: usize) {
        for v in [&mut self.mean, &mut self.var, &mut self.inv_std] {
            v.resize(groups * cols, 0.0);
        }
    }
}

/// Forward over columns `c` of `y` (`[rows × cols]`): fills each group's
/// statistics, writes `out = (y − μ)·(inv_std·γ) + β` and replaces `y` by
/// the normalized `x̂ = (y − μ)·inv_std` that the backward needs.
///
/// # Safety
/// No other task may touch columns `c` of `y`, `out` or the statistics.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub unsafe fn forward_columns(
    y: SharedMut<'_>,
    out: SharedMut<'_>,
    stats: [SharedMut<'_>; 3],
    groups: &[BnGroup],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    c: &std::ops::Range<usize>,
) {
    let [mean_s, var_s, inv_s] = stats;
    let w = c.len();
    let mut acc = vec![0f32; w];
    let mut scale = vec![0f32; w];
    for (g, group) in groups.iter().enumerate() {
        let m = group.stats.len();
        let inv_m = (1.0 / m as f64) as f32;
        // SAFETY: columns c of these rows belong to this task.
        let (mean, var, inv_std) = unsafe {
            (
                mean_s.segment(g, c),
                var_s.segment(g, c),
                inv_s.segment(g, c),
            )
        };
        acc.fill(0.0);
        for r in group.stats.clone() {
            // SAFETY: as above.
            let row = unsafe { y.segment(r, c) };
            for (a, v) in acc.iter_mut().zip(row.iter()) {
                *a += *v;
            }
        }
        for (mu, a) in mean.iter_mut().zip(&acc) {
            *mu = *a * inv_m;
        }
        acc.fill(0.0);
        for r in group.stats.clone() {
            // SAFETY: as above.
            let row = unsafe { y.segment(r, c) };
            for ((a, v), mu) in acc.iter_mut().zip(row.iter()).zip(mean.iter()) {
                let d = *v - *mu;
                *a += d * d;
            }
        }
        for j in 0..w {
            var[j] = acc[j] * inv_m;
            inv_std[j] = 1.0 / (var[j] + eps).sqrt();
            scale[j] = inv_std[j] * gamma[c.start + j];
        }
        let beta = &beta[c.clone()];
        for r in group.applied.clone() {
            // SAFETY: as above.
            let (row, o) = unsafe { (y.segment(r, c), out.segment(r, c)) };
            for j in 0..w {
                let d = row[j] - mean[j];
                o[j] = d * scale[j] + beta[j];
                row[j] = d * inv_std[j];
            }
        }
    }
}

/// What a backward block is: `rows` rows of upstream gradient for the
/// forward rows `offset..offset + rows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowBlock {
    /// The first forward row.
    pub offset: usize,
    /// How many rows.
    pub rows: usize,
}

fn intersect(a: &Range<usize>, b: &Range<usize>) -> Range<usize> {
    a.start.max(b.start)..a.end.min(b.end).max(a.start.max(b.start))
}

/// Backward over columns `c`: turns the gradient `d` with respect to the
/// BatchNorm output (rows of `block`) into the gradient with respect to its
/// input, in place, and adds `∂/∂γ`, `∂/∂β` into `grads` when given.
///
/// Rows of the forward pass outside `block` are taken to carry zero
/// upstream gradient, and their input gradients are not wanted: that is
/// exact for L_D (whose block is every row) and for L_G (whose block is
/// every row that depends on the fake batch).
///
/// # Safety
/// No other task may touch columns `c` of `d` or of `grads`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub unsafe fn backward_columns(
    d: SharedMut<'_>,
    block: RowBlock,
    xhat: &[f32],
    cols: usize,
    inv_std: &[f32],
    groups: &[BnGroup],
    gamma: &[f32],
    grads: Option<(SharedMut<'_>, SharedMut<'_>)>,
    c: &Range<usize>,
) {
    let w = c.len();
    let rows = block.offset..block.offset + block.rows;
    let gamma = &gamma[c.clone()];
    let mut sum_g = vec![0f32; w];
    let mut sum_gx = vec![0f32; w];
    for (g, group) in groups.iter().enumerate() {
        let applied = intersect(&group.applied, &rows);
        if applied.is_empty() {
            continue;
        }
        let stats = intersect(&group.stats, &rows);
        let inv = segment(inv_std, cols, g, c);
        sum_g.fill(0.0);
        sum_gx.fill(0.0);
        for r in applied.clone() {
            // SAFETY: columns c belong to this task.
            let dr = unsafe { d.segment(r - block.offset, c) };
            let xr = segment(xhat, cols, r, c);
            for j in 0..w {
                sum_g[j] += dr[j];
                sum_gx[j] += dr[j] * xr[j];
            }
        }
        if let Some((dgamma, dbeta)) = &grads {
            // SAFETY: as above.
            let (dg, db) = unsafe { (dgamma.segment(0, c), dbeta.segment(0, c)) };
            for j in 0..w {
                dg[j] += sum_gx[j];
                db[j] += sum_g[j];
            }
        }
        let inv_m = (1.0 / group.stats.len() as f64) as f32;
        for r in applied {
            // SAFETY: as above.
            let dr = unsafe { d.segment(r - block.offset, c) };
            let xr = segment(xhat, cols, r, c);
            if stats.contains(&r) {
                for j in 0..w {
                    let centered = dr[j] - (sum_g[j] + xr[j] * sum_gx[j]) * inv_m;
                    dr[j] = gamma[j] * inv[j] * centered;
                }
            } else {
                for j in 0..w {
                    dr[j] *= gamma[j] * inv[j];
                }
            }
        }
    }
}

/// Chainer's running-average update for one group's statistics:
/// `avg ← decay·avg + (1 − decay)·stat`, the variance made unbiased with
/// `m / (m − 1)` for the `m` rows that gave it.
pub fn update_running(
    avg_mean: &mut [f32],
    avg_var: &mut [f32],
    mean: &[f32],
    var: &[f32],
    m: usize,
    decay: f64,
) {
    let m = m as f64;
    let adjust = m / (m - 1.0).max(1.0);
    let (d, keep_mean, keep_var) = (
        decay as f32,
        (1.0 - decay) as f32,
        ((1.0 - decay) * adjust) as f32,
    );
    for j in 0..avg_mean.len() {
        avg_mean[j] = avg_mean[j] * d + mean[j] * keep_mean;
        avg_var[j] = avg_var[j] * d + var[j] * keep_var;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Result;
    use candle_core::{Device, Tensor, Var};
    use kusari_trainer::{ParamStore, Rng};

    use crate::fast::columns::par_columns;
    use crate::fast::testing::assert_close;
    use crate::layers::batch_norm::{BatchNorm, DECAY, EPS};
    use crate::layers::Phase;

    /// The fast forward and backward against candle's BatchNorm layer and
    /// autograd, for one strategy: values, input gradients of both the
    /// all-rows block (L_D) and the fake-only or all-rows block (L_G), γ/β
    /// gradients and running statistics.
    fn check(strategy: BnStrategy) -> Result<()> {
        let (n, cols) = (6, 150);
        let dev = Device::Cpu;
        let mut rng = Rng::new(11);
        let real = Var::from_tensor(&rng.normal_tensor((n, cols), 0.5, 2.0, &dev)?)?;
        let fake = Var::from_tensor(&rng.normal_tensor((n, cols), -1.0, 0.7, &dev)?)?;
        let params = ParamStore::new();
        let bn = BatchNorm::new(&params, cols, &dev)?;
        let gamma_v = params.get("gamma").unwrap();
        let beta_v = params.get("beta").unwrap();
        gamma_v.set(&rng.normal_tensor(cols, 1.0, 0.5, &dev)?)?;
        beta_v.set(&rng.normal_tensor(cols, 0.0, 0.5, &dev)?)?;
        let outs = bn.forward(
            &[real.as_tensor().clone(), fake.as_tensor().clone()],
            strategy,
            &Phase::Train(&mut Rng::new(0)),
        )?;
        let u_real = rng.normal_tensor((n, cols), 0.0, 1.0, &dev)?;
        let u_fake = rng.normal_tensor((n, cols), 0.0, 1.0, &dev)?;
        let loss_all = ((&outs[0] * &u_real)?.sum_all()? + (&outs[1] * &u_fake)?.sum_all()?)?;
        let g_all = loss_all.backward()?;
        let g_fake_only = (&outs[1] * &u_fake)?.sum_all()?.backward()?;

        // Fast path on the stacked [real; fake].
        let mut y: Vec<f32> = Tensor::cat(&[real.as_tensor(), fake.as_tensor()], 0)?
            .flatten_all()?
            .to_vec1()?;
        let gamma: Vec<f32> = gamma_v.to_vec1()?;
        let beta: Vec<f32> = beta_v.to_vec1()?;
        let groups = pair_groups(strategy, n);
        let mut out = vec![0f32; 2 * n * cols];
        let mut stats = BnStats::default();
        stats.resize(groups.len(), cols);
        {
            let ys = SharedMut::new(&mut y, cols);
            let os = SharedMut::new(&mut out, cols);
            let st = [
                SharedMut::new(&mut stats.mean, cols),
                SharedMut::new(&mut stats.var, cols),
                SharedMut::new(&mut stats.inv_std, cols),
            ];
            par_columns(cols, |c| unsafe {
                forward_columns(ys, os, st, &groups, &gamma, &beta, EPS as f32, &c)
            });
        }
        let want_out: Vec<f32> = Tensor::cat(&outs, 0)?.flatten_all()?.to_vec1()?;
        assert_close(&out, &want_out, 1e-5, &format!("{strategy} values"));

        let mut avg_mean = vec![0f32; cols];
        let mut avg_var = vec![0f32; cols];
        for (g, group) in groups.iter().enumerate() {
            let r = g * cols..(g + 1) * cols;
            update_running(
                &mut avg_mean,
                &mut avg_var,
                &stats.mean[r.clone()],
                &stats.var[r],
                group.stats.len(),
                DECAY,
            );
        }
        let want_mean: Vec<f32> = params.get("avg_mean").unwrap().to_vec1()?;
        let want_var: Vec<f32> = params.get("avg_var").unwrap().to_vec1()?;
        assert_close(&avg_mean, &want_mean, 1e-5, "running mean");
        assert_close(&avg_var, &want_var, 1e-5, "running var");

        // L_D-like block: every row, with γ/β gradients.
        let mut d: Vec<f32> = Tensor::cat(&[&u_real, &u_fake], 0)?
            .flatten_all()?
            .to_vec1()?;
        let mut dgamma = vec![0f32; cols];
        let mut dbeta = vec![0f32; cols];
        {
            let ds = SharedMut::new(&mut d, cols);
            let grads = (
                SharedMut::new(&mut dgamma, cols),
                SharedMut::new(&mut dbeta, cols),
            );
            let block = RowBlock {
                offset: 0,
                rows: 2 * n,
            };
            par_columns(cols, |c| unsafe {
                backward_columns(
                    ds,
                    block,
                    &y,
                    cols,
                    &stats.inv_std,
                    &groups,
                    &gamma,
                    Some(grads),
                    &c,
                )
            });
        }
        let want_d: Vec<f32> =
            Tensor::cat(&[g_all.get(&real).unwrap(), g_all.get(&fake).unwrap()], 0)?
                .flatten_all()?
                .to_vec1()?;
        assert_close(&d, &want_d, 1e-5, &format!("{strategy} input gradients"));
        assert_close(
            &dgamma,
            &g_all.get(&gamma_v).unwrap().to_vec1::<f32>()?,
            1e-5,
            "dγ",
        );
        assert_close(
            &dbeta,
            &g_all.get(&beta_v).unwrap().to_vec1::<f32>()?,
            1e-5,
            "dβ",
        );

        // L_G-like block: the rows that depend on the fake batch.
        let offset = if strategy == BnStrategy::Joint { 0 } else { n };
        let mut d: Vec<f32> = if offset == 0 {
            Tensor::cat(&[&u_real.zeros_like()?, &u_fake], 0)?
        } else {
            u_fake.clone()
        }
        .flatten_all()?
        .to_vec1()?;
        {
            let ds = SharedMut::new(&mut d, cols);
            let block = RowBlock {
                offset,
                rows: 2 * n - offset,
            };
            par_columns(cols, |c| unsafe {
                backward_columns(
                    ds,
                    block,
                    &y,
                    cols,
                    &stats.inv_std,
                    &groups,
                    &gamma,
                    None,
                    &c,
                )
            });
        }
        let want_fake: Vec<f32> = g_fake_only.get(&fake).unwrap().flatten_all()?.to_vec1()?;
        let got_fake = &d[(n - offset) * cols..];
        assert_close(
            got_fake,
            &want_fake,
            1e-5,
            &format!("{strategy} fake-only gradients"),
        );
        Ok(())
    }

    #[test]
    fn every_strategy_matches_candle_values_and_gradients() -> Result<()> {
        for strategy in [
            BnStrategy::Separate,
            BnStrategy::Joint,
            BnStrategy::RealStats,
        ] {
            check(strategy)?;
        }
        Ok(())
    }
}
