use anyhow::Result;
use candle_core::Tensor;
use kusari_trainer::{report, Batch, Rng, State, UpdateContext, UpdateCore};

use super::{energy, pull_away};
use crate::config::EbganConfig;
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
pub struct EbganUpdater {
    gen: Generator,
    dis: AutoEncoder,
    config: EbganConfig,
    rng: Rng,
}

impl EbganUpdater {
    /// `rng` supplies the noise z and D's dropout masks (e.g.
    /// `Rng::derived(seed, "update")`).
    pub fn new(gen: Generator, dis: AutoEncoder, config: EbganConfig, rng: Rng) -> Self {
        Self {
            gen,
            dis,
            config,
            rng,
        }
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
        let n = real.dim(0)?;
        let z = self.gen.sample_z(n, &mut self.rng)?;
        let fake = self.gen.forward(&z, &mut Phase::Train(&mut self.rng))?;
        let (real_out, fake_out) =
            self.dis
                .forward_pair(real, &fake, &mut Phase::Train(&mut self.rng))?;

        let real_energy = energy(&real_out.reconstruction, real)?;
        let fake_energy = energy(&fake_out.reconstruction, &fake)?;
        // The fake batch is not detached: one graph serves both losses. D's
        // optimizer holds only D's variables, so L_D's gradients with respect
        // to G are computed but never applied.
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
        let losses = self.losses(&batch.values)?;
        // Both gradient sets come from the same forward pass, before either net changes.
        let dis_grads = losses.dis.backward()?;
        let gen_grads = losses.gen.backward()?;
        ctx.optimizers.get_mut("dis")?.step(&dis_grads)?;
        ctx.optimizers.get_mut("gen")?.step(&gen_grads)?;

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
