use anyhow::Result;
use candle_core::Tensor;
use kusari_trainer::{report, Batch, Rng, State, UpdateContext, UpdateCore};

use super::sigmoid_cross_entropy;
use crate::fast::in_own_pool;
use crate::layers::Phase;
use crate::nets::{Generator, LogitDiscriminator};

/// Label D gives real images (the seed's convention).
const REAL: f64 = 0.0;
/// Label D gives fakes.
const FAKE: f64 = 1.0;

/// The losses of one GAN forward pass (0-d tensors attached to the graph).
pub struct GanLosses {
    /// `CE(D(x), 0) + CE(D(G(z)), 1)`.
    pub dis: Tensor,
    /// `CE(D(G(z)), 0)`.
    pub gen: Tensor,
}

/// The GAN update rule: one forward pass, both gradient sets, one step of
/// `"dis"` and one of `"gen"`. Reports `dis/loss` and `gen/loss`.
pub struct GanUpdater {
    gen: Generator,
    dis: LogitDiscriminator,
    rng: Rng,
}

impl GanUpdater {
    /// `rng` supplies the noise z and D's dropout masks.
    pub fn new(gen: Generator, dis: LogitDiscriminator, rng: Rng) -> Self {
        Self { gen, dis, rng }
    }

    /// The G this rule trains (sharing parameters with the `gen` model).
    pub fn generator(&self) -> &Generator {
        &self.gen
    }

    /// The D this rule trains (sharing parameters with the `dis` model).
    pub fn discriminator(&self) -> &LogitDiscriminator {
        &self.dis
    }

    /// One forward pass on the real batch and a fake batch of the same size.
    pub fn losses(&mut self, real: &Tensor) -> Result<GanLosses> {
        let n = real.dim(0)?;
        let z = self.gen.sample_z(n, &mut self.rng)?;
        let fake = self.gen.forward(&z, &mut Phase::Train(&mut self.rng))?;
        let (real_logits, fake_logits) =
            self.dis
                .forward_pair(real, &fake, &mut Phase::Train(&mut self.rng))?;
        let dis = (sigmoid_cross_entropy(&real_logits, REAL)?
            + sigmoid_cross_entropy(&fake_logits, FAKE)?)?;
        let gen = sigmoid_cross_entropy(&fake_logits, REAL)?;
        Ok(GanLosses { dis, gen })
    }
}

impl UpdateCore<Batch> for GanUpdater {
    fn update_core(&mut self, batch: Batch, ctx: &mut UpdateContext<'_>) -> Result<()> {
        let optimizers = &mut *ctx.optimizers;
        let losses = in_own_pool(|| -> Result<GanLosses> {
            let losses = self.losses(&batch.values)?;
            // The two backward passes share no gradient: side by side they
            // keep both cores busy where each alone runs many ops on one thread.
            let (dis_grads, gen_grads) =
                rayon::join(|| losses.dis.backward(), || losses.gen.backward());
            let (dis_grads, gen_grads) = (dis_grads?, gen_grads?);
            optimizers.get_mut("dis")?.step(&dis_grads)?;
            optimizers.get_mut("gen")?.step(&gen_grads)?;
            Ok(losses)
        })?;
        report("dis/loss", &losses.dis)?;
        report("gen/loss", &losses.gen)?;
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
