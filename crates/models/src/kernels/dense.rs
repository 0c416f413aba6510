//! A fully connected block — Linear (optionally spectrally normalized),
//! then optional BatchNorm, dropout and activation, in the order the MLP
//! nets stack them — with its forward pass and the elementwise part of its
//! backward pass on preallocated buffers.

use anyhow::Result;
use candle_core::Var;
use kusari_trainer::Rng;

use super::activation::{self, Activation};
use super::batch_norm::{self, BnGroup, BnStats, RowBlock};
use super::columns::{par_columns, par_ranges, segment, SharedMut};
use super::matmul::{block_width, gemm, MatRef};
use super::simd::with_avx2;
use super::spectral;
use super::storage;

/// BatchNorm's variables and constants.
#[derive(Clone)]
pub struct BnVars {
    /// Scale γ.
    pub gamma: Var,
    /// Shift β.
    pub beta: Var,
    /// Running mean (buffer).
    pub avg_mean: Var,
    /// Running variance (buffer).
    pub avg_var: Var,
    /// Added to the variance.
    pub eps: f32,
    /// Running-average decay.
    pub decay: f64,
}

/// The power iteration's vectors of a spectrally normalized weight
/// (buffers: saved in snapshots, not trained).
#[derive(Clone)]
pub struct SpectralVars {
    /// The right singular vector estimate, `[outputs]`.
    pub u: Var,
    /// The left singular vector estimate, `[inputs]`.
    pub v: Var,
}

/// `act(dropout(bn(x W' + b)))` with `W' = W`, or `W/σ(W)` under spectral
/// normalization; each stage optional but the Linear.
#[derive(Clone)]
pub struct DenseBlock {
    /// `[inputs, outputs]`.
    pub weight: Var,
    /// `[outputs]`.
    pub bias: Var,
    /// Input width.
    pub inputs: usize,
    /// Output width.
    pub outputs: usize,
    /// BatchNorm after the Linear.
    pub bn: Option<BnVars>,
    /// Dropout ratio (0: none).
    pub dropout: f32,
    /// The activation last.
    pub act: Activation,
    /// Spectral normalization of the weight.
    pub spectral: Option<SpectralVars>,
}

impl DenseBlock {
    /// Every trained variable: weight, bias, then γ and β if any.
    pub fn parameters(&self) -> Vec<&Var> {
        let mut v = vec![&self.weight, &self.bias];
        if let Some(bn) = &self.bn {
            v.extend([&bn.gamma, &bn.beta]);
        }
        v
    }

    /// Multiply-adds of the Linear per row.
    pub fn macs_per_row(&self) -> usize {
        self.inputs * self.outputs
    }

    fn has_pre(&self) -> bool {
        self.bn.is_some() || self.dropout > 0.0
    }
}

/// What a spectrally normalized block's forward pass leaves for its backward.
pub struct SpectralForward<'a> {
    /// `1/σ`.
    pub inv_sigma: f32,
    /// `x·W/σ` of the forward rows (`[rows × outputs]`), before the bias.
    pub lin: &'a [f32],
    /// The power iteration's `u` (`[outputs]`) after this step's iteration.
    pub u: &'a [f32],
    /// Its `v` (`[inputs]`).
    pub v: &'a [f32],
}

/// What a block's forward pass keeps for its backward pass.
#[derive(Debug, Default)]
pub struct DenseBuffers {
    rows: usize,
    /// The Linear's output; after BatchNorm, the normalized `x̂`.
    y: Vec<f32>,
    /// BatchNorm's output times the dropout mask (when either exists).
    z: Vec<f32>,
    /// The activation's output (when not the identity).
    h: Vec<f32>,
    /// Dropout scales (0 or 1/(1 − ratio)).
    mask: Vec<f32>,
    /// BatchNorm statistics per group.
    stats: BnStats,
    /// γ, β and the bias, copied once per step.
    gamma: Vec<f32>,
    beta: Vec<f32>,
    bias: Vec<f32>,
    /// Under spectral normalization: `x·W/σ` (before the bias), `1/σ`, and
    /// the power iteration's vectors after this step's iteration.
    lin: Vec<f32>,
    inv_sigma: f32,
    u: Vec<f32>,
    v: Vec<f32>,
}

impl DenseBuffers {
    /// The block's output from the last forward pass (`[rows × outputs]`).
    pub fn output(&self, block: &DenseBlock) -> &[f32] {
        let len = self.rows * block.outputs;
        if block.act != Activation::Identity {
            &self.h[..len]
        } else if block.has_pre() {
            &self.z[..len]
        } else {
            &self.y[..len]
        }
    }

    /// Under spectral normalization, what the weight's backward needs.
    pub fn spectral(&self) -> Option<SpectralForward<'_>> {
        (!self.u.is_empty()).then_some(SpectralForward {
            inv_sigma: self.inv_sigma,
            lin: &self.lin,
            u: &self.u,
            v: &self.v,
        })
    }

    fn pre_activation(&self, block: &DenseBlock) -> &[f32] {
        if block.has_pre() {
            &self.z
        } else {
            &self.y
        }
    }
}

/// Runs `block` on the rows of `x` (`[rows × inputs]`): one power iteration
/// first under spectral normalization, BatchNorm statistics per `groups`
/// (running averages updated group by group), dropout masks drawn from
/// `rng` in row order. One parallel pass over column blocks does each
/// block's product and then all its elementwise work while it is hot.
pub fn forward(
    block: &DenseBlock,
    x: &[f32],
    rows: usize,
    groups: &[BnGroup],
    rng: &mut Rng,
    buf: &mut DenseBuffers,
) -> Result<()> {
    let (k, n) = (block.inputs, block.outputs);
    let len = rows * n;
    buf.rows = rows;
    buf.y.resize(len, 0.0);
    buf.bias.clear();
    storage::read(block.bias.as_tensor(), |b| buf.bias.extend_from_slice(b))?;
    if block.dropout > 0.0 {
        buf.mask.resize(len, 0.0);
        rng.fill_dropout_mask(&mut buf.mask, block.dropout);
    }
    if block.has_pre() {
        buf.z.resize(len, 0.0);
    }
    if block.act != Activation::Identity {
        buf.h.resize(len, 0.0);
    }
    let scale = match &block.spectral {
        Some(sn) => {
            buf.u.clear();
            buf.v.clear();
            storage::read(sn.u.as_tensor(), |u| buf.u.extend_from_slice(u))?;
            storage::read(sn.v.as_tensor(), |v| buf.v.extend_from_slice(v))?;
            let sigma = storage::read(block.weight.as_tensor(), |w| {
                spectral::power_iteration(w, k, n, &mut buf.u, &mut buf.v)
            })?;
            storage::write(sn.u.as_tensor(), |u| {
                u.copy_from_slice(&buf.u);
                Ok(())
            })?;
            storage::write(sn.v.as_tensor(), |v| {
                v.copy_from_slice(&buf.v);
                Ok(())
            })?;
            buf.inv_sigma = 1.0 / sigma;
            buf.lin.resize(len, 0.0);
            Some(buf.inv_sigma)
        }
        None => {
            buf.u.clear();
            None
        }
    };
    if let Some(bn) = &block.bn {
        buf.gamma.clear();
        buf.beta.clear();
        storage::read(bn.gamma.as_tensor(), |g| buf.gamma.extend_from_slice(g))?;
        storage::read(bn.beta.as_tensor(), |b| buf.beta.extend_from_slice(b))?;
        buf.stats.resize(groups.len(), n);
    }

    let act = block.act;
    let (has_bn, has_dropout) = (block.bn.is_some(), block.dropout > 0.0);
    let eps = block.bn.as_ref().map_or(0.0, |b| b.eps);
    let DenseBuffers {
        y,
        z,
        h,
        mask,
        stats,
        gamma,
        beta,
        bias,
        lin,
        ..
    } = buf;
    let ys = SharedMut::new(y, n);
    let lins = SharedMut::new(lin, n);
    let zs = SharedMut::new(z, n);
    let hs = SharedMut::new(h, n);
    let st = [
        SharedMut::new(&mut stats.mean, n),
        SharedMut::new(&mut stats.var, n),
        SharedMut::new(&mut stats.inv_std, n),
    ];
    let (mask, gamma, beta, bias) = (&*mask, &*gamma, &*beta, &*bias);
    let x = MatRef::new(&x[..rows * k], rows, k);
    storage::read(block.weight.as_tensor(), |w| {
        let w = MatRef::new(w, k, n);
        par_ranges(n, block_width(n), |c| {
            // SAFETY: this task is the only one touching columns c.
            with_avx2(|| unsafe {
                gemm(
                    &mut ys.columns(rows, &c),
                    x,
                    w.block(0, k, c.start, c.len()),
                    false,
                );
                for r in 0..rows {
                    let yr = ys.segment(r, &c);
                    if let Some(s) = scale {
                        let lr = lins.segment(r, &c);
                        for (v, l) in yr.iter_mut().zip(lr.iter_mut()) {
                            *v *= s;
                            *l = *v;
                        }
                    }
                    for (v, b) in yr.iter_mut().zip(&bias[c.clone()]) {
                        *v += *b;
                    }
                }
                if has_bn {
                    batch_norm::forward_columns(ys, zs, st, groups, gamma, beta, eps, &c);
                }
                for r in 0..rows {
                    let pre: &mut [f32] = if has_bn {
                        zs.segment(r, &c)
                    } else if has_dropout {
                        let zr = zs.segment(r, &c);
                        zr.copy_from_slice(ys.segment(r, &c));
                        zr
                    } else {
                        ys.segment(r, &c)
                    };
                    if has_dropout {
                        for (v, m) in pre.iter_mut().zip(segment(mask, n, r, &c)) {
                            *v *= *m;
                        }
                    }
                    if act != Activation::Identity {
                        activation::forward_slice(act, pre, hs.segment(r, &c));
                    }
                }
            })
        });
    })?;

    if let Some(bn) = &block.bn {
        storage::write(bn.avg_mean.as_tensor(), |avg_mean| {
            storage::write(bn.avg_var.as_tensor(), |avg_var| {
                for (g, group) in groups.iter().enumerate() {
                    let cols = g * n..(g + 1) * n;
                    batch_norm::update_running(
                        avg_mean,
                        avg_var,
                        &buf.stats.mean[cols.clone()],
                        &buf.stats.var[cols],
                        group.stats.len(),
                        bn.decay,
                    );
                }
                Ok(())
            })
        })?;
    }
    Ok(())
}

/// Gradients of a block's small parameters, summed over the L_D rows.
#[derive(Debug, Default)]
pub struct SmallGrads {
    /// ∂/∂bias.
    pub bias: Vec<f32>,
    /// ∂/∂γ.
    pub gamma: Vec<f32>,
    /// ∂/∂β.
    pub beta: Vec<f32>,
}

impl SmallGrads {
    /// Zeroed gradients for a block of `n` outputs.
    pub fn reset(&mut self, n: usize) {
        for v in [&mut self.bias, &mut self.gamma, &mut self.beta] {
            v.clear();
            v.resize(n, 0.0);
        }
    }

    /// The three gradients as matrices of one row that column tasks share.
    pub fn shared(&mut self) -> [SharedMut<'_>; 3] {
        let n = self.bias.len();
        [
            SharedMut::new(&mut self.bias, n),
            SharedMut::new(&mut self.gamma, n),
            SharedMut::new(&mut self.beta, n),
        ]
    }
}

/// The elementwise backward: turns `d` — upstream gradients for each of
/// `blocks` (row blocks stacked in `d`, `[Σ rows × outputs]`) — into
/// gradients with respect to the Linear's output, in place. The first
/// block's rows also give the bias, γ and β gradients in `grads`.
pub fn backward_elementwise(
    block: &DenseBlock,
    buf: &DenseBuffers,
    groups: &[BnGroup],
    d: &mut [f32],
    blocks: &[RowBlock],
    grads: &mut SmallGrads,
) {
    let n = block.outputs;
    grads.reset(n);
    let ds = SharedMut::new(d, n);
    let g = grads.shared();
    par_columns(n, |c| {
        // SAFETY: this task is the only one touching columns c.
        unsafe { backward_columns(block, buf, groups, ds, blocks, g, &c) }
    });
}

/// [`backward_elementwise`] for columns `c` only.
///
/// # Safety
/// No other task may touch columns `c` of `d` or `grads` meanwhile.
#[inline(always)]
pub unsafe fn backward_columns(
    block: &DenseBlock,
    buf: &DenseBuffers,
    groups: &[BnGroup],
    ds: SharedMut<'_>,
    blocks: &[RowBlock],
    grads: [SharedMut<'_>; 3],
    c: &std::ops::Range<usize>,
) {
    let n = block.outputs;
    let act = block.act;
    let has_dropout = block.dropout > 0.0;
    let pre = buf.pre_activation(block);
    let out = buf.output(block);
    let [gb, gg, gbeta] = grads;
    with_avx2(|| {
        let mut start = 0;
        for (i, rb) in blocks.iter().enumerate() {
            // The stacked rows of this block in d.
            // SAFETY: rows stay inside d; columns c are this task's.
            let view = unsafe { ds.offset_rows(start) };
            for r in 0..rb.rows {
                let fr = rb.offset + r;
                // SAFETY: as above.
                let dr = unsafe { view.segment(r, c) };
                activation::backward_slice(act, dr, segment(pre, n, fr, c), segment(out, n, fr, c));
                if has_dropout {
                    for (v, m) in dr.iter_mut().zip(segment(&buf.mask, n, fr, c)) {
                        *v *= *m;
                    }
                }
            }
            if block.bn.is_some() {
                let g = (i == 0).then_some((gg, gbeta));
                // SAFETY: as above.
                unsafe {
                    batch_norm::backward_columns(
                        view,
                        *rb,
                        &buf.y,
                        n,
                        &buf.stats.inv_std,
                        groups,
                        &buf.gamma,
                        g,
                        c,
                    );
                }
            }
            if i == 0 {
                // SAFETY: as above.
                let acc = unsafe { gb.segment(0, c) };
                for r in 0..rb.rows {
                    // SAFETY: as above.
                    let dr = unsafe { view.segment(r, c) };
                    for (a, v) in acc.iter_mut().zip(dr.iter()) {
                        *a += *v;
                    }
                }
            }
            start += rb.rows;
        }
    });
}
