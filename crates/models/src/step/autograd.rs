//! The step on candle's ops and autograd: the path for conv nets (whose
//! convolutions, BatchNorm and activations run on kusari's CPU kernels for
//! f32 as custom ops), for CUDA and for other types.
//!
//! No pass computes what is then thrown away: D sees the fake batch as a
//! leaf of its own, so `L_D`'s backward pass stops there instead of running
//! through G; `L_G`'s pass through D leaves out the weight gradients of
//! kusari's custom ops ([`input_gradients_only`]) and yields `∂L_G/∂fake`,
//! which one more pass carries through G; and a term whose gradient is zero
//! everywhere (EBGAN's fake half of `L_D` past the margin) is left out of
//! the pass. The two backward passes share no gradient and run side by
//! side.

use anyhow::{Context, Result};
use candle_core::{Tensor, Var};
use kusari_trainer::{Optimizers, Rng};

use super::top::{Leaves, TopGradients};
use crate::config::BnStrategy;
use crate::kernels::input_gradients_only;
use crate::layers::Phase;
use crate::nets::{Discriminator, Generator};
use crate::objective::{Losses, Objective};

/// What one step needs besides the batch.
pub(super) struct Nets<'a> {
    pub gen: &'a Generator,
    pub dis: &'a Discriminator,
    pub objective: &'a dyn Objective,
}

/// One D step on `real` (and, with `train_gen`, one G step from the same
/// forward pass): both nets' gradients before either changes, then the
/// optimizers `dis` and `gen`, then D's clip.
pub(super) fn step(
    nets: &Nets<'_>,
    real: &Tensor,
    rng: &mut Rng,
    optimizers: &mut Optimizers,
    train_gen: bool,
    clip: Option<f64>,
) -> Result<Losses> {
    let n = real.dim(0)?;
    let z = nets.gen.sample_z(n, rng)?;
    let fake = nets.gen.forward(&z, &mut Phase::Train(rng))?;
    let fake_in = Var::from_tensor(&fake.detach())?;
    let (r, f) = nets
        .dis
        .judge_pair(real, fake_in.as_tensor(), &mut Phase::Train(rng))?;
    let leaves = Leaves::new(&r.output, &f.output, &r.code, &f.code, real, &fake)?;
    let losses = leaves.losses(nets.objective)?;
    let dis_top = TopGradients::of(&losses.dis, &leaves, true)?;
    let gen_top = if train_gen {
        Some(TopGradients::of(&losses.gen, &leaves, true)?)
    } else {
        None
    };
    // Joint batch normalization ties the real rows to the fake batch, so
    // L_G's gradients on them reach G; otherwise they cannot.
    let joint = nets.dis.batch_norm() == BnStrategy::Joint;
    let dis_loss = surrogate(&r.output, &f.output, &r.code, &f.code, &dis_top, true)?;
    let (dis_grads, gen_grads) = rayon::join(
        || dis_loss.backward(),
        || -> Result<_> {
            let Some(top) = &gen_top else {
                return Ok(None);
            };
            let gen_loss = surrogate(&r.output, &f.output, &r.code, &f.code, top, joint)?;
            // Only ∂L_G/∂fake is used from this pass, not D's weight gradients.
            let mut through_dis = input_gradients_only(|| gen_loss.backward())?;
            let through = through_dis.remove(fake_in.as_tensor());
            let fake_grad = match (through, &top.fake_images) {
                (Some(a), Some(b)) => (a + b)?,
                (Some(a), None) => a,
                (None, Some(b)) => b.clone(),
                (None, None) => fake.zeros_like()?,
            };
            Ok(Some((&fake * fake_grad.detach())?.sum_all()?.backward()?))
        },
    );
    let (dis_grads, gen_grads) = (dis_grads?, gen_grads?);
    optimizers.get_mut("dis")?.step(&dis_grads)?;
    if let Some(c) = clip {
        for (_, var) in nets.dis.params().parameters() {
            var.set(&var.as_tensor().clamp(-c, c)?)?;
        }
    }
    if let Some(grads) = gen_grads {
        optimizers.get_mut("gen")?.step(&grads)?;
    }
    Ok(losses)
}

/// `Σ output ⊙ ∂L/∂output` over the terms whose gradient is not zero: its
/// backward pass gives every net below the leaves the gradients `L` would.
/// The real rows' terms count only with `with_real`. When every term is
/// zero, the fake output's is kept, so that each parameter still gets its
/// (zero) gradient and the optimizer steps as it would on any other batch.
fn surrogate(
    real: &Tensor,
    fake: &Tensor,
    real_code: &Tensor,
    fake_code: &Tensor,
    top: &TopGradients,
    with_real: bool,
) -> Result<Tensor> {
    let mut terms = Vec::new();
    let pairs = [
        (real, &top.real, with_real),
        (fake, &top.fake, true),
        (real_code, &top.real_code, with_real),
        (fake_code, &top.fake_code, true),
    ];
    for (value, grad, wanted) in pairs {
        if let (Some(g), true) = (grad, wanted) {
            terms.push((value * g)?.sum_all()?);
        }
    }
    let first = match terms.pop() {
        Some(t) => t,
        None => (fake * 0.0)?.sum_all()?,
    };
    terms
        .into_iter()
        .try_fold(first, |acc, t| (acc + t).context("adding the loss terms"))
}
