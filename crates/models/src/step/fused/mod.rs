//! The fused step: MLP nets on the CPU in f32, written out by hand on
//! preallocated buffers around any objective.
//!
//! Per D step: G's forward on N noise rows; one D forward over the stacked
//! `[real; fake]` (2N rows, BatchNorm statistics per the configured
//! strategy); the objective's losses and their gradients with respect to
//! D's outputs and codes (candle's autograd, on those small tensors); one
//! backward pass through D carrying `L_D`'s gradient (every row, which
//! trains D) stacked with `L_G`'s (the rows that depend on the fake batch,
//! for G only), each weight tile updated by the optimizer as soon as its
//! gradient exists; then G's backward with its own fused updates. Nothing
//! is computed that is then thrown away: no gradient of `L_D` reaches G and
//! no weight gradient of `L_G` is formed in D. A step that trains D alone
//! (all but the last of K D steps) stops after D's update.
//!
//! Noise and dropout masks come from the step's generator in the same order
//! as on the candle-ops path, so the two paths consume the same random
//! numbers and their runs and snapshots are interchangeable.

mod blocks;
mod profile;
#[cfg(test)]
mod tests;

pub use profile::{Profile, PHASES};

use anyhow::{Context, Result};
use candle_core::{Device, Tensor, Var};
use kusari_trainer::{ElementStep, HostOptimizer, Optimizers, Rng};

use super::top::{Leaves, TopGradients};
use crate::config::{BnStrategy, DisHead, ImageShape};
use crate::kernels::batch_norm::{single_group, BnGroup, RowBlock};
use crate::kernels::columns::SharedMut;
use crate::kernels::dense::{self, backward_elementwise, DenseBlock, DenseBuffers, SmallGrads};
use crate::kernels::matmul::MatRef;
use crate::kernels::storage;
use crate::kernels::weight_update::{self, SpectralBackward, WeightBackward};
use crate::nets::{Discriminator, Generator};
use crate::objective::{Losses, Objective};
use blocks::{blocks_of, pair_groups};
use profile::Laps;

/// The hand-written CPU step for MLP nets (see the module docs).
pub struct FusedMlp {
    gen: Vec<DenseBlock>,
    /// D's body blocks then its head's.
    dis: Vec<DenseBlock>,
    /// How many of `dis` are the body (the last of them outputs the code).
    body_len: usize,
    head: DisHead,
    z_dim: usize,
    image: ImageShape,
    strategy: BnStrategy,
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
    /// Gradients flowing down.
    grads: Gradients,
    /// The objective's gradients with respect to D's codes, stacked as the
    /// gradients entering D.
    code: Vec<f32>,
}

/// The gradients of a backward pass: with respect to the current block's
/// output (`d`, its small parameters' in `small`) and the next one's.
#[derive(Default)]
struct Gradients {
    d: Vec<f32>,
    d_next: Vec<f32>,
    small: SmallGrads,
    small_next: SmallGrads,
}

/// How the stacked gradient rows are laid out in one step.
#[derive(Clone, Copy)]
struct Rows {
    n: usize,
    /// Whether G trains in this step (L_G's rows follow L_D's).
    train_gen: bool,
    /// The first forward row of L_G's block, and how many rows it has.
    gen_offset: usize,
    gen_rows: usize,
}

impl Rows {
    fn new(n: usize, strategy: BnStrategy, train_gen: bool) -> Self {
        // Joint batch normalization ties the real rows to the fake batch.
        let (gen_offset, gen_rows) = match (train_gen, strategy) {
            (false, _) => (n, 0),
            (true, BnStrategy::Joint) => (0, 2 * n),
            (true, _) => (n, n),
        };
        Self {
            n,
            train_gen,
            gen_offset,
            gen_rows,
        }
    }

    fn total(&self) -> usize {
        2 * self.n + self.gen_rows
    }

    /// Where L_G's fake rows start in the stack.
    fn gen_fake(&self) -> usize {
        2 * self.n + (self.n - self.gen_offset)
    }

    fn blocks(&self) -> Vec<RowBlock> {
        let mut blocks = vec![RowBlock {
            offset: 0,
            rows: 2 * self.n,
        }];
        if self.train_gen {
            blocks.push(RowBlock {
                offset: self.gen_offset,
                rows: self.gen_rows,
            });
        }
        blocks
    }
}

impl FusedMlp {
    /// The fused step for `gen` and `dis`, or `None` when they are not MLP
    /// nets with f32 parameters on the CPU.
    pub fn new(gen: &Generator, dis: &Discriminator) -> Option<Self> {
        if !gen.device().is_cpu() {
            return None;
        }
        let g = blocks_of(gen.stack())?;
        let (body, head) = dis.stacks();
        let mut d = blocks_of(body)?;
        let body_len = d.len();
        d.extend(blocks_of(head)?);
        let image = dis.image_shape();
        let out = match dis.head() {
            DisHead::Logit => 1,
            DisHead::AutoEncoder => image.len(),
        };
        let on_cpu =
            |v: &candle_core::Var| v.dtype() == candle_core::DType::F32 && v.device().is_cpu();
        let fits = g[0].inputs == gen.z_dim()
            && g.last()?.outputs == image.len()
            && gen.image_shape() == image
            && d[0].inputs == image.len()
            && d.last()?.outputs == out
            && d.windows(2).all(|w| w[0].outputs == w[1].inputs)
            && g.iter().chain(&d).all(|b| {
                b.parameters().into_iter().all(on_cpu)
                    && b.spectral.iter().all(|s| on_cpu(&s.u) && on_cpu(&s.v))
            });
        fits.then(|| Self {
            gen: g,
            dis: d,
            body_len,
            head: dis.head(),
            z_dim: gen.z_dim(),
            image,
            strategy: dis.batch_norm(),
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

    /// Multiply-adds of the matrix products of one step (training both
    /// nets) on batches of `n`.
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

    /// Whether `optimizers` hold element-wise host optimizers named `gen`
    /// and `dis` over exactly these nets' parameters.
    pub fn can_step(&self, optimizers: &mut Optimizers) -> bool {
        let covers = |name: &str, blocks: &[DenseBlock], optimizers: &mut Optimizers| -> bool {
            let vars: Vec<_> = blocks.iter().flat_map(|b| b.parameters()).collect();
            optimizers
                .get_mut(name)
                .ok()
                .and_then(|o| o.as_host())
                .is_some_and(|h| h.updates_exactly(&vars))
        };
        covers("gen", &self.gen, optimizers) && covers("dis", &self.dis, optimizers)
    }

    /// One D step on the real batch `real` (`[N, C, H, W]`) and, with
    /// `train_gen`, one G step from the same forward pass: updates the
    /// parameters, BatchNorm statistics and spectral-norm vectors, and the
    /// `dis` and `gen` optimizers' state; D's parameters are clipped to
    /// `[−clip, clip]` when asked. Returns the objective's losses.
    pub fn step(
        &mut self,
        real: &Tensor,
        rng: &mut Rng,
        optimizers: &mut Optimizers,
        objective: &dyn Objective,
        train_gen: bool,
        clip: Option<f64>,
    ) -> Result<Losses> {
        crate::kernels::in_own_pool(|| {
            self.step_here(real, rng, optimizers, objective, train_gen, clip)
        })
    }

    fn step_here(
        &mut self,
        real: &Tensor,
        rng: &mut Rng,
        optimizers: &mut Optimizers,
        objective: &dyn Objective,
        train_gen: bool,
        clip: Option<f64>,
    ) -> Result<Losses> {
        crate::nets::check_images(real, self.image, "the real batch")?;
        let n = real.dim(0)?;
        let len = self.image.len();
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

        // The objective, on copies of D's outputs and codes.
        let last = self.dis.last().context("D has no layers")?;
        let out_width = last.outputs;
        let out = b.dis.last().context("D has no layers")?.output(last);
        let code_index = self.body_len - 1;
        let code_width = self.dis[code_index].outputs;
        let code = b.dis[code_index].output(&self.dis[code_index]);
        let cpu = Device::Cpu;
        let out_shape: Vec<usize> = match self.head {
            DisHead::Logit => vec![n],
            DisHead::AutoEncoder => [n].into_iter().chain(self.image.dims()).collect(),
        };
        let image_shape: Vec<usize> = [n].into_iter().chain(self.image.dims()).collect();
        let (out_real, out_fake) = out.split_at(n * out_width);
        let (code_real, code_fake) = code.split_at(n * code_width);
        let leaves = Leaves {
            real: Var::from_slice(out_real, out_shape.as_slice(), &cpu)?,
            fake: Var::from_slice(out_fake, out_shape.as_slice(), &cpu)?,
            real_code: Var::from_slice(code_real, (n, code_width), &cpu)?,
            fake_code: Var::from_slice(code_fake, (n, code_width), &cpu)?,
            fake_images: Var::from_slice(&b.x[n * len..], image_shape.as_slice(), &cpu)?,
            real_images: real.detach(),
        };
        let losses = leaves.losses(objective)?;
        let dis_top = TopGradients::of(&losses.dis, &leaves)?;
        let gen_top = if train_gen {
            Some(TopGradients::of(&losses.gen, &leaves)?)
        } else {
            None
        };

        // The gradients entering D from the top, stacked: L_D's 2N rows,
        // then L_G's rows; and the same for the codes.
        let rows = Rows::new(n, self.strategy, train_gen);
        let row_blocks = rows.blocks();
        let total_rows = rows.total();
        let gen_fake = rows.gen_fake();
        let joint = self.strategy == BnStrategy::Joint;
        let gen_real = |t: &TopGradients| if joint { t.real.clone() } else { None };
        let gen_real_code = |t: &TopGradients| if joint { t.real_code.clone() } else { None };
        b.grads.d.resize(total_rows * out_width, 0.0);
        let mut top_rows = vec![(0, dis_top.real.clone()), (n, dis_top.fake.clone())];
        let mut code_rows = vec![
            (0, dis_top.real_code.clone()),
            (n, dis_top.fake_code.clone()),
        ];
        if let Some(t) = &gen_top {
            top_rows.push((2 * n, gen_real(t)));
            top_rows.push((gen_fake, t.fake.clone()));
            code_rows.push((2 * n, gen_real_code(t)));
            code_rows.push((gen_fake, t.fake_code.clone()));
        }
        b.grads.d.fill(0.0);
        fill_rows(&mut b.grads.d, out_width, &top_rows)?;
        let has_code = code_rows.iter().any(|(_, g)| g.is_some());
        if has_code {
            b.code.resize(total_rows * code_width, 0.0);
            b.code.fill(0.0);
            fill_rows(&mut b.code, code_width, &code_rows)?;
        }
        laps.lap(2);

        // D's backward with fused updates, then G's.
        let dis_opt = host_optimizer(optimizers, "dis")?;
        let step = dis_opt.begin_external_step();
        BackwardPass {
            blocks: &self.dis,
            outputs: &b.dis,
            input: &b.x,
            groups: &groups,
            row_blocks: &row_blocks,
            train_rows: 2 * n,
            total_rows,
            // Below D's first block only L_G's gradient for the fake rows is wanted.
            below_first: train_gen.then_some((n, gen_fake)),
            code: has_code.then_some((code_index, &b.code[..])),
            clip: clip.map(|c| c as f32),
        }
        .run(&mut b.grads, dis_opt, step)?;
        laps.lap(3);
        let Some(gen_top) = gen_top else {
            laps.finish();
            self.profile = profile;
            return Ok(losses);
        };

        // ∂L_G/∂fake: through D (now in the gradient buffer) plus the
        // objective's direct term.
        if let Some(direct) = &gen_top.fake_images {
            let direct: Vec<f32> = direct.flatten_all()?.to_vec1()?;
            add_rows(&mut b.grads.d[..n * len], &direct);
        }
        let gen_opt = host_optimizer(optimizers, "gen")?;
        let step = gen_opt.begin_external_step();
        BackwardPass {
            blocks: &self.gen,
            outputs: &b.gen,
            input: &b.z,
            groups: &one,
            row_blocks: &[RowBlock { offset: 0, rows: n }],
            train_rows: n,
            total_rows: n,
            below_first: None,
            code: None,
            clip: None,
        }
        .run(&mut b.grads, gen_opt, step)?;
        laps.lap(4);
        laps.finish();
        self.profile = profile;
        Ok(losses)
    }
}

/// One backward pass through a chain of blocks, from the gradients with
/// respect to the last block's output (stacked row blocks), each weight
/// updated as soon as its gradient exists.
struct BackwardPass<'a> {
    blocks: &'a [DenseBlock],
    /// What each block's forward pass kept.
    outputs: &'a [DenseBuffers],
    /// The chain's input (`[train_rows × inputs]`).
    input: &'a [f32],
    groups: &'a [BnGroup],
    /// The forward rows each stacked block of gradient rows belongs to; the
    /// first block's gradients train the small parameters.
    row_blocks: &'a [RowBlock],
    /// Rows of the input whose gradients train the weights (the first stacked block).
    train_rows: usize,
    /// Stacked gradient rows.
    total_rows: usize,
    /// The gradient wanted below the first block: how many stacked rows,
    /// from which row; `None` for none.
    below_first: Option<(usize, usize)>,
    /// Gradients (stacked as the rows) added to one block's output.
    code: Option<(usize, &'a [f32])>,
    /// Every parameter clipped to `[−c, c]` after its update.
    clip: Option<f32>,
}

impl BackwardPass<'_> {
    /// Runs the pass from `g.d`; afterwards `g.d` holds the gradient below
    /// the first block, if one was wanted.
    fn run(
        &self,
        g: &mut Gradients,
        optimizer: &mut dyn HostOptimizer,
        step: ElementStep,
    ) -> Result<()> {
        let (blocks, outputs, groups, rows) =
            (self.blocks, self.outputs, self.groups, self.row_blocks);
        let total = self.total_rows;
        // The top block's elementwise backward runs alone; each lower
        // block's runs inside the weight update above it, as soon as its
        // columns of the gradient exist.
        let top = blocks.len() - 1;
        if let Some((_, code)) = self.code.filter(|(at, _)| *at == top) {
            add_rows(&mut g.d, code);
        }
        backward_elementwise(
            &blocks[top],
            &outputs[top],
            groups,
            &mut g.d,
            rows,
            &mut g.small,
        );
        for i in (0..blocks.len()).rev() {
            let block = &blocks[i];
            let width = block.outputs;
            update_small(block, &g.small, optimizer, step, self.clip)?;
            let input: &[f32] = if i == 0 {
                self.input
            } else {
                outputs[i - 1].output(&blocks[i - 1])
            };
            let k = block.inputs;
            let wanted = if i == 0 {
                self.below_first
            } else {
                Some((total, 0))
            };
            g.d_next.resize(wanted.map_or(0, |(r, _)| r) * k, 0.0);
            g.small_next.reset(k);
            let dy = &g.d[..total * width];
            let spectral = spectral_backward(&outputs[i], dy, self.train_rows, width);
            let dx = SharedMut::new(&mut g.d_next, k);
            let grads = g.small_next.shared();
            let below = i.checked_sub(1).map(|j| (&blocks[j], &outputs[j]));
            let code = self
                .code
                .filter(|(at, _)| i > 0 && *at == i - 1)
                .map(|(_, c)| c);
            let then = |c: std::ops::Range<usize>| {
                let Some((block, buf)) = below else { return };
                // SAFETY: each task passes only its own columns.
                unsafe {
                    if let Some(code) = code {
                        for r in 0..total {
                            let row = dx.segment(r, &c);
                            for (v, a) in row.iter_mut().zip(&code[r * k + c.start..r * k + c.end])
                            {
                                *v += *a;
                            }
                        }
                    }
                    dense::backward_columns(block, buf, groups, dx, rows, grads, &c);
                }
            };
            update_weight(
                block,
                optimizer,
                step,
                self.clip,
                WeightBackward {
                    x: MatRef::new(input, self.train_rows, k),
                    dy: MatRef::new(dy, self.train_rows, width),
                    input_grad: wanted
                        .map(|(r, first)| (MatRef::new(&dy[first * width..], r, width), dx)),
                    spectral,
                },
                (i > 0).then_some(&then as &(dyn Fn(std::ops::Range<usize>) + Sync)),
            )?;
            std::mem::swap(&mut g.d, &mut g.d_next);
            std::mem::swap(&mut g.small, &mut g.small_next);
        }
        Ok(())
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

/// Writes each gradient (`[N, …]`, flattened to rows of `width`) into the
/// stack `d` from its row; `None` leaves zeros.
fn fill_rows(d: &mut [f32], width: usize, rows: &[(usize, Option<Tensor>)]) -> Result<()> {
    for (first, grad) in rows {
        if let Some(g) = grad {
            let values: Vec<f32> = g.flatten_all()?.to_vec1()?;
            d[first * width..first * width + values.len()].copy_from_slice(&values);
        }
    }
    Ok(())
}

/// `d += add` (the first `add.len()` values).
fn add_rows(d: &mut [f32], add: &[f32]) {
    for (v, a) in d.iter_mut().zip(add) {
        *v += *a;
    }
}

/// The element-wise host optimizer registered as `name`.
fn host_optimizer<'a>(
    optimizers: &'a mut Optimizers,
    name: &str,
) -> Result<&'a mut dyn HostOptimizer> {
    optimizers.get_mut(name)?.as_host().with_context(|| {
        format!("the optimizer `{name}` cannot update parameters on the fused CPU step")
    })
}

/// What a spectrally normalized weight's backward needs, with `c` summed
/// over the first `rows` rows of `dy` (those that train the weight).
fn spectral_backward<'a>(
    buf: &'a DenseBuffers,
    dy: &[f32],
    rows: usize,
    width: usize,
) -> Option<SpectralBackward<'a>> {
    let forward = buf.spectral()?;
    let c: f64 = dy[..rows * width]
        .iter()
        .zip(&forward.lin[..rows * width])
        .map(|(a, b)| f64::from(*a) * f64::from(*b))
        .sum();
    Some(SpectralBackward {
        inv_sigma: forward.inv_sigma,
        c: c as f32,
        u: forward.u,
        v: forward.v,
    })
}

/// The optimizer's step on the bias, γ and β of `block` with the gradients
/// in `grads`, then the clip.
fn update_small(
    block: &DenseBlock,
    grads: &SmallGrads,
    optimizer: &mut dyn HostOptimizer,
    step: ElementStep,
    clip: Option<f32>,
) -> Result<()> {
    let mut pairs = vec![(&block.bias, &grads.bias)];
    if let Some(bn) = &block.bn {
        pairs.push((&bn.gamma, &grads.gamma));
        pairs.push((&bn.beta, &grads.beta));
    }
    for (var, grad) in pairs {
        storage::write(var.as_tensor(), |p| {
            let state = optimizer.host_state_mut(var)?;
            weight_update::update_small(p, grad, state, step, clip);
            Ok(())
        })?;
    }
    Ok(())
}

/// The fused weight-gradient, input-gradient and optimizer update of
/// `block`'s weight, calling `then` on each finished column range of the
/// input gradient.
fn update_weight(
    block: &DenseBlock,
    optimizer: &mut dyn HostOptimizer,
    step: ElementStep,
    clip: Option<f32>,
    backward: WeightBackward<'_>,
    then: Option<&(dyn Fn(std::ops::Range<usize>) + Sync)>,
) -> Result<()> {
    storage::write(block.weight.as_tensor(), |w| {
        let state = optimizer.host_state_mut(&block.weight)?;
        weight_update::update(w, state, step, clip, backward, then);
        Ok(())
    })
}
