//! [`FastEbgan`]: one EBGAN(-PT) training step of the MLP nets on the CPU,
//! written out by hand on preallocated buffers.
//!
//! Per step: G's forward on N noise rows; one D forward over the stacked
//! `[real; fake]` (2N rows, BatchNorm statistics per the configured
//! strategy); the energies and the pull-away term; one backward pass through
//! D carrying L_D's gradient (every row, which trains D) stacked with L_G's
//! (the rows that depend on the fake batch, for G only), each weight tile
//! updated by Adam as soon as its gradient exists; then G's backward with
//! its own fused updates. Nothing is computed that is then thrown away: no
//! gradient of L_D reaches G and no weight gradient of L_G is formed in D.
//!
//! Noise and dropout masks come from the updater's generator in the same
//! order as the candle path, so the two paths consume the same random
//! numbers and their runs and snapshots are interchangeable.

use anyhow::{Context, Result};
use candle_core::Tensor;
use kusari_trainer::{Adam, AdamStep, Optimizers, Rng};

use super::batch_norm::{pair_groups, single_group, BnGroup, RowBlock};
use super::columns::SharedMut;
use super::dense::{self, backward_elementwise, DenseBlock, DenseBuffers, SmallGrads};
use super::losses::{energy, energy_grad, pull_away, PullAwayScratch};
use super::matmul::MatRef;
use super::pool::in_own_pool;
use super::profile::{Laps, Profile};
use super::storage;
use super::weight_update::{self, WeightBackward};
use crate::config::{BnStrategy, EbganConfig};
use crate::nets::{AutoEncoder, Generator};

/// The scalars one step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FastLosses {
    /// `L_D = E(x) + relu(m − E(G(z)))`.
    pub dis: f32,
    /// `L_G = E(G(z)) + pt_weight · PT`.
    pub gen: f32,
    /// The pull-away term (unweighted).
    pub pull_away: f32,
    /// `E(x)`.
    pub real_energy: f32,
    /// `E(G(z))`.
    pub fake_energy: f32,
}

/// The hand-written CPU step for MLP nets (see the module docs).
pub struct FastEbgan {
    gen: Vec<DenseBlock>,
    /// D's encoder blocks then its decoder blocks.
    dis: Vec<DenseBlock>,
    /// How many of `dis` are the encoder (the last of them outputs the code).
    encoder_len: usize,
    z_dim: usize,
    image_len: usize,
    image: crate::config::ImageShape,
    strategy: BnStrategy,
    config: EbganConfig,
    buffers: Buffers,
    profile: Profile,
}

#[derive(Default)]
struct Buffers {
    z: Vec<f32>,
    gen: Vec<DenseBuffers>,
    dis: Vec<DenseBuffers>,
    /// D's input: the real rows, then the fake rows.
    x: Vec<f32>,
    /// Gradients flowing down, and the next layer's.
    d: Vec<f32>,
    d_next: Vec<f32>,
    pt_grad: Vec<f32>,
    pt: PullAwayScratch,
    small: SmallGrads,
    small_next: SmallGrads,
}

impl FastEbgan {
    /// The fast step for `gen` and `dis`, or `None` when they are not MLP
    /// nets on the CPU.
    pub fn new(gen: &Generator, dis: &AutoEncoder, config: EbganConfig) -> Option<Self> {
        if !gen.device().is_cpu() {
            return None;
        }
        let g = dense::blocks_of(gen.stack())?;
        let (enc, dec) = dis.stacks();
        let mut d = dense::blocks_of(enc)?;
        let encoder_len = d.len();
        d.extend(dense::blocks_of(dec)?);
        let image_len = dis.image_shape().len();
        let fits = g[0].inputs == gen.z_dim()
            && g.last()?.outputs == image_len
            && gen.image_shape() == dis.image_shape()
            && d[0].inputs == image_len
            && d.last()?.outputs == image_len
            && d.windows(2).all(|w| w[0].outputs == w[1].inputs)
            && g.iter().chain(&d).all(|b| {
                b.parameters()
                    .iter()
                    .all(|v| v.dtype() == candle_core::DType::F32 && v.device().is_cpu())
            });
        fits.then(|| Self {
            gen: g,
            dis: d,
            encoder_len,
            z_dim: gen.z_dim(),
            image_len,
            image: dis.image_shape(),
            strategy: dis.batch_norm(),
            config,
            buffers: Buffers::default(),
            profile: Profile::default(),
        })
    }

    /// Time per phase of the steps taken so far.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Forgets the time measured so far.
    pub fn reset_profile(&mut self) {
        self.profile = Profile::default();
    }

    /// Multiply-adds of the matrix products of one step on batches of `n`.
    pub fn macs_per_step(&self, n: usize) -> u64 {
        let n = n as u64;
        let per_row = |b: &DenseBlock| b.macs_per_row() as u64;
        // G: forward, weight gradients, input gradients below the first block.
        let g_fwd: u64 = self.gen.iter().map(per_row).sum();
        let g = n * (3 * g_fwd - per_row(&self.gen[0]));
        // D: forward and weight gradients on 2N rows; input gradients on
        // L_D's 2N rows and L_G's rows above the first block, L_G's fake rows
        // into it.
        let d_fwd: u64 = self.dis.iter().map(per_row).sum();
        let rows_g = if self.strategy == BnStrategy::Joint {
            2 * n
        } else {
            n
        };
        let d_first = per_row(&self.dis[0]);
        let d = 2 * n * d_fwd * 2 + (2 * n + rows_g) * (d_fwd - d_first) + n * d_first;
        g + d
    }

    /// Whether `optimizers` hold host [`Adam`]s named `gen` and `dis` over
    /// exactly these nets' parameters.
    pub fn can_step(&self, optimizers: &mut Optimizers) -> bool {
        let covers = |name: &str, blocks: &[DenseBlock], optimizers: &mut Optimizers| -> bool {
            let Some(adam) = adam_of(optimizers, name) else {
                return false;
            };
            let vars: Vec<_> = blocks.iter().flat_map(|b| b.parameters()).collect();
            adam.is_host()
                && adam.names().count() == vars.len()
                && vars.iter().all(|v| adam.host_moments_mut(v).is_ok())
        };
        covers("gen", &self.gen, optimizers) && covers("dis", &self.dis, optimizers)
    }

    /// One training step on the real batch `real` (`[N, C, H, W]`): updates
    /// D's and G's parameters, BatchNorm statistics and Adam moments through
    /// the `dis` and `gen` optimizers.
    pub fn step(
        &mut self,
        real: &Tensor,
        rng: &mut Rng,
        optimizers: &mut Optimizers,
    ) -> Result<FastLosses> {
        in_own_pool(|| self.step_here(real, rng, optimizers))
    }

    fn step_here(
        &mut self,
        real: &Tensor,
        rng: &mut Rng,
        optimizers: &mut Optimizers,
    ) -> Result<FastLosses> {
        crate::nets::check_images(real, self.image, "the real batch")?;
        let n = real.dim(0)?;
        let len = self.image_len;
        let mut profile = std::mem::take(&mut self.profile);
        let mut laps = Laps::start(&mut profile);
        let b = &mut self.buffers;
        b.gen.resize_with(self.gen.len(), DenseBuffers::default);
        b.dis.resize_with(self.dis.len(), DenseBuffers::default);

        // G's forward.
        b.z.resize(n * self.z_dim, 0.0);
        rng.fill_uniform(&mut b.z, -1.0, 1.0);
        let one = single_group(n);
        forward_chain(&self.gen, &b.z, n, &one, rng, &mut b.gen)?;
        laps.lap(0);

        b.x.resize(2 * n * len, 0.0);
        let real = real.contiguous()?;
        storage::read(&real, |r| b.x[..n * len].copy_from_slice(r))?;
        let fake = b
            .gen
            .last()
            .context("G has no layers")?
            .output(self.gen.last().context("G has no layers")?);
        b.x[n * len..].copy_from_slice(fake);
        laps.lap(5);

        // D's forward over [real; fake].
        let groups = pair_groups(self.strategy, n);
        forward_chain(&self.dis, &b.x, 2 * n, &groups, rng, &mut b.dis)?;
        laps.lap(1);

        // Losses and the gradients entering D from the top.
        let last = self.dis.last().context("D has no layers")?;
        let recon = b.dis.last().context("D has no layers")?.output(last);
        let (x_real, x_fake) = b.x.split_at(n * len);
        let (r_real, r_fake) = recon.split_at(n * len);
        let real_energy = energy(r_real, x_real);
        let fake_energy = energy(r_fake, x_fake);
        let margin_term = -fake_energy + self.config.margin as f32;
        // relu'(0) = 1, as candle differentiates relu.
        let fake_scale = if margin_term >= 0.0 { -1.0 } else { 0.0 };
        let dis_loss = real_energy + margin_term.max(0.0);
        let code_block = &self.dis[self.encoder_len - 1];
        let code_width = code_block.outputs;
        let code = b.dis[self.encoder_len - 1].output(code_block);
        b.pt_grad.resize(n * code_width, 0.0);
        let pt = pull_away(
            &code[n * code_width..],
            n,
            code_width,
            self.config.pt,
            self.config.pt_weight as f32,
            &mut b.pt_grad,
            &mut b.pt,
        );
        let gen_loss = fake_energy + pt * self.config.pt_weight as f32;

        let joint = self.strategy == BnStrategy::Joint;
        let (g_offset, g_rows) = if joint { (0, 2 * n) } else { (n, n) };
        let row_blocks = [
            RowBlock {
                offset: 0,
                rows: 2 * n,
            },
            RowBlock {
                offset: g_offset,
                rows: g_rows,
            },
        ];
        let total_rows = 2 * n + g_rows;
        // Index of L_G's fake rows in the stacked gradient.
        let g_fake = 2 * n + (n - g_offset);
        b.d.resize(total_rows * len, 0.0);
        energy_grad(r_real, x_real, 1.0, &mut b.d[..n * len], false);
        energy_grad(
            r_fake,
            x_fake,
            fake_scale,
            &mut b.d[n * len..2 * n * len],
            false,
        );
        b.d[2 * n * len..g_fake * len].fill(0.0);
        energy_grad(r_fake, x_fake, 1.0, &mut b.d[g_fake * len..], false);
        laps.lap(2);

        // D's backward with fused Adam updates. The top block's elementwise
        // backward runs alone; each lower block's runs inside the weight
        // update above it, as soon as its columns of the gradient exist.
        let dis_adam = adam_of(optimizers, "dis").context("D's optimizer is not a host Adam")?;
        let step = dis_adam.begin_external_step();
        let top = self.dis.len() - 1;
        if top == self.encoder_len - 1 {
            add_rows(&mut b.d, g_fake, n, code_width, &b.pt_grad);
        }
        backward_elementwise(
            &self.dis[top],
            &b.dis[top],
            &groups,
            &mut b.d,
            &row_blocks,
            &mut b.small,
        );
        for i in (0..self.dis.len()).rev() {
            let block = &self.dis[i];
            let width = block.outputs;
            update_small(block, &b.small, dis_adam, step)?;
            let input: &[f32] = if i == 0 {
                &b.x
            } else {
                b.dis[i - 1].output(&self.dis[i - 1])
            };
            let k = block.inputs;
            // Below D's first block only L_G's gradient for the fake rows is wanted.
            let (grad_rows, first_row) = if i == 0 { (n, g_fake) } else { (total_rows, 0) };
            b.d_next.resize(grad_rows * k, 0.0);
            b.small_next.reset(k);
            let dy = &b.d[..total_rows * width];
            let dx = SharedMut::new(&mut b.d_next, k);
            let grads = b.small_next.shared();
            let below = i.checked_sub(1).map(|j| (&self.dis[j], &b.dis[j]));
            let pt = (i > 0 && i - 1 == self.encoder_len - 1).then_some(&b.pt_grad);
            let then = |c: std::ops::Range<usize>| {
                let Some((block, buf)) = below else { return };
                // SAFETY: each task passes only its own columns.
                unsafe {
                    if let Some(pt) = pt {
                        for r in 0..n {
                            let row = dx.segment(g_fake + r, &c);
                            for (v, p) in row.iter_mut().zip(&pt[r * k + c.start..r * k + c.end]) {
                                *v += *p;
                            }
                        }
                    }
                    dense::backward_columns(block, buf, &groups, dx, &row_blocks, grads, &c);
                }
            };
            update_weight(
                block,
                dis_adam,
                step,
                WeightBackward {
                    x: MatRef::new(input, 2 * n, k),
                    dy: MatRef::new(dy, 2 * n, width),
                    input_grad: Some((MatRef::new(&dy[first_row * width..], grad_rows, width), dx)),
                },
                (i > 0).then_some(&then as &(dyn Fn(std::ops::Range<usize>) + Sync)),
            )?;
            std::mem::swap(&mut b.d, &mut b.d_next);
            std::mem::swap(&mut b.small, &mut b.small_next);
        }
        laps.lap(3);

        // ∂L_G/∂fake: through D (now in b.d) plus the energy's direct term.
        energy_grad(r_fake, x_fake, -1.0, &mut b.d[..n * len], true);

        // G's backward with fused Adam updates, the same way.
        let gen_adam = adam_of(optimizers, "gen").context("G's optimizer is not a host Adam")?;
        let step = gen_adam.begin_external_step();
        let rows = [RowBlock { offset: 0, rows: n }];
        let top = self.gen.len() - 1;
        backward_elementwise(
            &self.gen[top],
            &b.gen[top],
            &one,
            &mut b.d,
            &rows,
            &mut b.small,
        );
        for i in (0..self.gen.len()).rev() {
            let block = &self.gen[i];
            let width = block.outputs;
            update_small(block, &b.small, gen_adam, step)?;
            let input: &[f32] = if i == 0 {
                &b.z
            } else {
                b.gen[i - 1].output(&self.gen[i - 1])
            };
            let k = block.inputs;
            let dy = &b.d[..n * width];
            b.d_next.resize(n * k, 0.0);
            b.small_next.reset(k);
            let dx = SharedMut::new(&mut b.d_next, k);
            let grads = b.small_next.shared();
            let below = i.checked_sub(1).map(|j| (&self.gen[j], &b.gen[j]));
            let then = |c: std::ops::Range<usize>| {
                if let Some((block, buf)) = below {
                    // SAFETY: each task passes only its own columns.
                    unsafe { dense::backward_columns(block, buf, &one, dx, &rows, grads, &c) };
                }
            };
            update_weight(
                block,
                gen_adam,
                step,
                WeightBackward {
                    x: MatRef::new(input, n, k),
                    dy: MatRef::new(dy, n, width),
                    input_grad: (i > 0).then(|| (MatRef::new(dy, n, width), dx)),
                },
                (i > 0).then_some(&then as &(dyn Fn(std::ops::Range<usize>) + Sync)),
            )?;
            std::mem::swap(&mut b.d, &mut b.d_next);
            std::mem::swap(&mut b.small, &mut b.small_next);
        }
        laps.lap(4);
        laps.finish();
        self.profile = profile;

        Ok(FastLosses {
            dis: dis_loss,
            gen: gen_loss,
            pull_away: pt,
            real_energy,
            fake_energy,
        })
    }
}

/// Runs `blocks` one after another from `input` (`[rows × inputs]`).
fn forward_chain(
    blocks: &[DenseBlock],
    input: &[f32],
    rows: usize,
    groups: &[BnGroup],
    rng: &mut Rng,
    buffers: &mut [DenseBuffers],
) -> Result<()> {
    for i in 0..blocks.len() {
        let (done, rest) = buffers.split_at_mut(i);
        let x = if i == 0 {
            input
        } else {
            done[i - 1].output(&blocks[i - 1])
        };
        dense::forward(&blocks[i], x, rows, groups, rng, &mut rest[0])?;
    }
    Ok(())
}

/// The host Adam registered as `name`, if that is what it is.
fn adam_of<'a>(optimizers: &'a mut Optimizers, name: &str) -> Option<&'a mut Adam> {
    optimizers
        .get_mut(name)
        .ok()?
        .as_any_mut()?
        .downcast_mut::<Adam>()
}

/// Adam on the bias, γ and β of `block` with the gradients in `grads`.
fn update_small(
    block: &DenseBlock,
    grads: &SmallGrads,
    adam: &mut Adam,
    step: AdamStep,
) -> Result<()> {
    let mut pairs = vec![(&block.bias, &grads.bias)];
    if let Some(bn) = &block.bn {
        pairs.push((&bn.gamma, &grads.gamma));
        pairs.push((&bn.beta, &grads.beta));
    }
    for (var, grad) in pairs {
        storage::write(var.as_tensor(), |p| {
            let (m, v) = adam.host_moments_mut(var)?;
            weight_update::update_small(p, grad, m, v, step);
            Ok(())
        })?;
    }
    Ok(())
}

/// The fused weight-gradient, input-gradient and Adam update of `block`'s
/// weight, calling `then` on each finished column range of the input gradient.
fn update_weight(
    block: &DenseBlock,
    adam: &mut Adam,
    step: AdamStep,
    backward: WeightBackward<'_>,
    then: Option<&(dyn Fn(std::ops::Range<usize>) + Sync)>,
) -> Result<()> {
    storage::write(block.weight.as_tensor(), |w| {
        let (m, v) = adam.host_moments_mut(&block.weight)?;
        weight_update::update(w, m, v, step, backward, then);
        Ok(())
    })
}

/// Adds `rows` rows of `add` (`[rows × width]`) into `d` from row `first`.
fn add_rows(d: &mut [f32], first: usize, rows: usize, width: usize, add: &[f32]) {
    for (v, a) in d[first * width..(first + rows) * width].iter_mut().zip(add) {
        *v += *a;
    }
}
