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

use super::top::{is_zero, Leaves, TopGradients};
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
    let leaf = |t: &Tensor| Var::from_tensor(&t.detach());
    let leaves = Leaves {
        real: leaf(&r.output)?,
        fake: leaf(&f.output)?,
        real_code: leaf(&r.code)?,
        fake_code: leaf(&f.code)?,
        // The objective's direct gradient on the fake batch lands where the
        // gradient through D does: the same leaf, in another graph.
        fake_images: fake_in.clone(),
        real_images: real.detach(),
    };
    let losses = leaves.losses(nets.objective)?;
    let dis_top = TopGradients::of(&losses.dis, &leaves)?;
    let gen_top = if train_gen {
        Some(TopGradients::of(&losses.gen, &leaves)?)
    } else {
        None
    };
    // Joint batch normalization ties the real rows to the fake batch, so
    // L_G's gradients on them reach G; otherwise they cannot.
    let joint = nets.dis.batch_norm() == BnStrategy::Joint;
    let dis_loss = surrogate(&r.output, &f.output, &r.code, &f.code, &dis_top, true, true)?;
    let (dis_grads, gen_grads) = rayon::join(
        || dis_loss.backward(),
        || -> Result<_> {
            let Some(top) = &gen_top else {
                return Ok(None);
            };
            let gen_loss = surrogate(&r.output, &f.output, &r.code, &f.code, top, joint, false)?;
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

/// `Σ output ⊙ ∂L/∂output` over the terms with a gradient: its backward
/// pass gives every net below the leaves the gradients `L` would. The real
/// rows' terms count only with `with_real`; with `drop_zero_fakes`, a fake
/// term whose gradient is zero everywhere is left out, and with it D's fake
/// half of the pass (EBGAN's `L_D` past the margin). When no term is left,
/// the fake output's is kept, so that each parameter still gets its (zero)
/// gradient and the optimizer steps as it would on any other batch.
fn surrogate(
    real: &Tensor,
    fake: &Tensor,
    real_code: &Tensor,
    fake_code: &Tensor,
    top: &TopGradients,
    with_real: bool,
    drop_zero_fakes: bool,
) -> Result<Tensor> {
    let mut terms = Vec::new();
    let pairs = [
        (real, &top.real, with_real, false),
        (fake, &top.fake, true, drop_zero_fakes),
        (real_code, &top.real_code, with_real, false),
        (fake_code, &top.fake_code, true, drop_zero_fakes),
    ];
    for (value, grad, wanted, may_drop) in pairs {
        let Some(g) = grad.as_ref().filter(|_| wanted) else {
            continue;
        };
        if !(may_drop && is_zero(g)?) {
            terms.push(inject(value, g)?);
        }
    }
    let first = match terms.pop() {
        Some(t) => t,
        None => inject(fake, &fake.zeros_like()?)?,
    };
    terms
        .into_iter()
        .try_fold(first, |acc, t| (acc + t).context("adding the loss terms"))
}

/// A scalar whose gradient with respect to `value` is `grad` (`value`'s
/// shape), when added into a loss with weight 1: `Σ value ⊙ grad`, which on
/// f32 CPU tensors is a custom op that computes nothing forward and hands
/// `grad` itself back (two element-wise passes fewer per term).
fn inject(value: &Tensor, grad: &Tensor) -> Result<Tensor> {
    if crate::kernels::cpu_kernels_apply(value) && crate::kernels::cpu_kernels_apply(grad) {
        return Ok(value.apply_op1(InjectGradient(grad.clone()))?);
    }
    Ok((value * grad)?.sum_all()?)
}

/// See [`inject`]; its forward value is 0.
struct InjectGradient(Tensor);

impl candle_core::CustomOp1 for InjectGradient {
    fn name(&self) -> &'static str {
        "kusari-inject-gradient"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        Ok((
            candle_core::CpuStorage::F32(vec![0.0]),
            candle_core::Shape::from(()),
        ))
    }

    fn bwd(
        &self,
        _: &Tensor,
        _: &Tensor,
        upstream: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let scale = upstream
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
        if scale == 1.0 {
            Ok(Some(self.0.clone()))
        } else {
            Ok(Some(self.0.affine(scale, 0.0)?))
        }
    }
}
