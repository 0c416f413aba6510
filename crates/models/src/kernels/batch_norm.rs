//! BatchNorm on a stack of batches (D sees `[real; fake]` as one matrix),
//! forward and backward, per column chunk. A [`BnGroup`] says which rows
//! supply statistics and which rows those statistics normalize, so every way
//! of normalizing a real and a fake batch (together, apart, or the fake with
//! the real statistics) shares one code path, and the backward
//! differentiates exactly what the forward did (statistics included).

use std::ops::Range;

use super::columns::{segment, SharedMut};

/// Rows whose mean and variance normalize the rows of `applied`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BnGroup {
    /// Rows the statistics come from.
    pub stats: Range<usize>,
    /// Rows normalized with them (a superset of `stats`).
    pub applied: Range<usize>,
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
