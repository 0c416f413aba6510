use anyhow::{Context, Result};
use candle_core::{DType, Tensor, Var};
use kusari_trainer::{report, Batch, Optimizers, Rng, State, UpdateContext, UpdateCore};

use super::{energy, pull_away};
use crate::config::EbganConfig;
use crate::fast::{in_own_pool, input_gradients_only, FastEbgan, Profile};
use crate::layers::Phase;
use crate::nets::{AutoEncoder, Generator};

/// The losses of one EBGAN forward pass (all 0-d tensors still attached to the graph).
pub struct EbganLosses {
    /// `L_D = E(x) + relu(m − E(G(z)))`.
    pub dis: Tensor,
    /// `L_G = E(G(z)) + pt_weight · PT`.
    pub gen: Tensor,
    /// The pull-away term of the fake batch's codes (unweighted).
    pub pull_away: Tensor,
    /// `E(x)`.
    pub real_energy: Tensor,
    /// `E(G(z))`.
    pub fake_energy: Tensor,
}

/// The EBGAN(-PT) update rule: one forward pass of G and D per batch, both
/// gradient sets from it, then one step of D's optimizer (`"dis"`) and one
/// of G's (`"gen"`).
///
/// Reports `dis/loss`, `gen/loss`, `gen/pt`, `dis/real_energy` and
/// `dis/fake_energy`. Noise and dropout masks come from the updater's own
/// generator, whose state goes into snapshots.
///
/// For MLP nets on the CPU the step runs on the hand-written fast path
/// ([`crate::fast`]), which gives the same losses to float rounding;
/// [`EbganUpdater::with_reference_step`] keeps the candle-ops path.
pub struct EbganUpdater {
    gen: Generator,
    dis: AutoEncoder,
    config: EbganConfig,
    rng: Rng,
    fast: Option<Box<FastEbgan>>,
}

impl EbganUpdater {
    /// `rng` supplies the noise z and D's dropout masks (e.g.
    /// `Rng::derived(seed, "update")`).
    pub fn new(gen: Generator, dis: AutoEncoder, config: EbganConfig, rng: Rng) -> Self {
        let fast = FastEbgan::new(&gen, &dis, config).map(Box::new);
        Self {
            gen,
            dis,
            config,
            rng,
            fast,
        }
    }

    /// The same rule on the candle-ops reference path, never the fast one.
    pub fn with_reference_step(mut self) -> Self {
        self.fast = None;
        self
    }

    /// Whether steps run on the fast CPU path (when the optimizers allow).
    pub fn uses_fast_step(&self) -> bool {
        self.fast.is_some()
    }

    /// Time per phase of the fast path's steps, if it is in use.
    pub fn fast_profile(&self) -> Option<&Profile> {
        self.fast.as_deref().map(FastEbgan::profile)
    }

    /// The fast path, if in use (e.g. to reset its profile or count its work).
    pub fn fast_step_mut(&mut self) -> Option<&mut FastEbgan> {
        self.fast.as_deref_mut()
    }

    /// Margin, PT weight and variant.
    pub fn config(&self) -> &EbganConfig {
        &self.config
    }

    /// The G this rule trains (sharing parameters with the `gen` model).
    pub fn generator(&self) -> &Generator {
        &self.gen
    }

    /// The D this rule trains (sharing parameters with the `dis` model).
    pub fn discriminator(&self) -> &AutoEncoder {
        &self.dis
    }

    /// One forward pass on the real batch `real` (`[N, C, H, W]`) and a fake
    /// batch of the same size.
    pub fn losses(&mut self, real: &Tensor) -> Result<EbganLosses> {
        let fake = self.generate(real.dim(0)?)?;
        self.losses_on(real, &fake)
    }

    /// A fake batch of `n` images, G in training mode.
    fn generate(&mut self, n: usize) -> Result<Tensor> {
        let z = self.gen.sample_z(n, &mut self.rng)?;
        self.gen.forward(&z, &mut Phase::Train(&mut self.rng))
    }

    /// Whether `relu(m − E(G(z)))` passes a gradient: `m − E(G(z)) ≥ 0`, as
    /// candle differentiates relu (its derivative at 0 is 1).
    fn hinge_is_active(&self, fake_energy: &Tensor) -> Result<bool> {
        // The same op as L_D's, so the same rounding decides.
        let margin_term = fake_energy
            .affine(-1.0, self.config.margin)?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        // A NaN takes the full path, so that it reaches D's gradients as before.
        Ok(margin_term >= 0.0 || !margin_term.is_finite())
    }

    /// One step on the candle-ops path: both nets' gradients from one
    /// forward pass, then both updates; returns the losses for the report.
    fn reference_step(
        &mut self,
        real: &Tensor,
        optimizers: &mut Optimizers,
    ) -> Result<EbganLosses> {
        let fake = self.generate(real.dim(0)?)?;
        // D sees the fake batch as a leaf of its own: L_D's backward pass
        // stops there instead of running through G for gradients nobody
        // applies, and L_G's yields ∂L_G/∂fake, which one backward pass
        // through G turns into G's gradients.
        let fake_leaf = Var::from_tensor(&fake.detach())?;
        let losses = self.losses_on(real, fake_leaf.as_tensor())?;
        // Both gradient sets come from the same forward pass, before either net changes.
        let dis_loss = if self.hinge_is_active(&losses.fake_energy)? {
            &losses.dis
        } else {
            // The hinge is zero, and so is every gradient that reaches D
            // through the fake batch: L_D is E(x) alone. Its backward pass
            // skips D's fake half, which gives the same gradients bit for
            // bit (adding the zeros changes no float) for half the pass's work.
            &losses.real_energy
        };
        let gen_loss = &losses.gen;
        // The two backward passes share no gradient, so they run side by
        // side: each is a chain of small ops, many of them on one thread,
        // and together they keep both cores busy. The grad scope is a
        // thread's flag, so it lives inside the second closure: the first
        // runs on this thread, which may run the second whole while it
        // waits (setting and clearing the flag in between), but never the
        // other way round, which would cost D its weights' gradients.
        let (dis_grads, gen_grads) = rayon::join(
            || dis_loss.backward(),
            || -> Result<_> {
                // Only ∂L_G/∂fake is used from this pass, not D's weight gradients.
                let mut through_dis = input_gradients_only(|| gen_loss.backward())?;
                let fake_grad = through_dis
                    .remove(fake_leaf.as_tensor())
                    .context("L_G has no gradient with respect to the fake batch")?;
                Ok((&fake * fake_grad.detach())?.sum_all()?.backward()?)
            },
        );
        let (dis_grads, gen_grads) = (dis_grads?, gen_grads?);
        optimizers.get_mut("dis")?.step(&dis_grads)?;
        optimizers.get_mut("gen")?.step(&gen_grads)?;
        Ok(losses)
    }

    /// D's forward pass on `real` and `fake`, and the losses.
    fn losses_on(&mut self, real: &Tensor, fake: &Tensor) -> Result<EbganLosses> {
        let (real_out, fake_out) =
            self.dis
                .forward_pair(real, fake, &mut Phase::Train(&mut self.rng))?;

        let real_energy = energy(&real_out.reconstruction, real)?;
        let fake_energy = energy(&fake_out.reconstruction, fake)?;
        let dis = (&real_energy + fake_energy.affine(-1.0, self.config.margin)?.relu()?)?;
        let pt = pull_away(&fake_out.code, self.config.pt)?;
        let gen = (&fake_energy + (&pt * self.config.pt_weight)?)?;
        Ok(EbganLosses {
            dis,
            gen,
            pull_away: pt,
            real_energy,
            fake_energy,
        })
    }
}

impl UpdateCore<Batch> for EbganUpdater {
    fn update_core(&mut self, batch: Batch, ctx: &mut UpdateContext<'_>) -> Result<()> {
        if let Some(fast) = self.fast.as_mut().filter(|f| f.can_step(ctx.optimizers)) {
            let l = fast.step(&batch.values, &mut self.rng, ctx.optimizers)?;
            report("dis/loss", l.dis)?;
            report("gen/loss", l.gen)?;
            report("gen/pt", l.pull_away)?;
            report("dis/real_energy", l.real_energy)?;
            report("dis/fake_energy", l.fake_energy)?;
            return Ok(());
        }
        let real = &batch.values;
        let optimizers = &mut *ctx.optimizers;
        let losses = in_own_pool(|| self.reference_step(real, optimizers))?;
        report("dis/loss", &losses.dis)?;
        report("gen/loss", &losses.gen)?;
        report("gen/pt", &losses.pull_away)?;
        report("dis/real_energy", &losses.real_energy)?;
        report("dis/fake_energy", &losses.fake_energy)?;
        Ok(())
    }

    fn state(&self) -> Result<State> {
        let mut state = State::new();
        state.put("rng", &self.rng.state())?;
        Ok(state)
    }

    fn load_state(&mut self, state: &State) -> Result<()> {
        self.rng = Rng::from_state(state.get("rng")?);
        Ok(())
    }
}
