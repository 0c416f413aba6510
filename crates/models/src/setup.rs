//! From a [`Config`] to a runnable updater: [`Nets`] builds G and D with
//! their own parameter stores, [`Core`] is the matching update rule, and
//! [`Nets::updater`] wires both into a [`StandardUpdater`].
//!
//! Every random stream derives from one seed: `init/gen` and `init/dis` for
//! the weights, `update` for noise and dropout masks, and the iterator's own
//! `iterator` stream for the shuffle. The same seed on the same device gives
//! bit-identical runs.

use anyhow::{Context, Result};
use candle_core::Device;
use kusari_trainer::{
    Adam, Batch, ConcatExamples, Dataset, Example, Rng, SerialIterator, StandardUpdater, State,
    UpdateContext, UpdateCore,
};

use crate::config::{Config, Objective};
use crate::ebgan::EbganUpdater;
use crate::gan::GanUpdater;
use crate::nets::{AutoEncoder, Discriminator, Generator, LogitDiscriminator};

/// The random stream G's initial weights come from.
pub const INIT_GEN_STREAM: &str = "init/gen";
/// The random stream D's initial weights come from.
pub const INIT_DIS_STREAM: &str = "init/dis";
/// The random stream of the updater's noise and dropout masks.
pub const UPDATE_STREAM: &str = "update";

/// G and D of one experiment. Clones share parameters, so an extension can
/// sample from a clone of `gen` while the updater trains it.
#[derive(Clone)]
pub struct Nets {
    /// G (model `gen`).
    pub gen: Generator,
    /// D (model `dis`).
    pub dis: Discriminator,
}

impl Nets {
    /// Validates `config` and builds freshly initialized nets on `device`:
    /// an auto-encoder D for EBGAN, a logit D for GAN.
    pub fn build(config: &Config, device: &Device, seed: u64) -> Result<Self> {
        config.validate()?;
        let model = &config.model;
        let gen = Generator::new(model, device, &mut Rng::derived(seed, INIT_GEN_STREAM))?;
        let mut dis_rng = Rng::derived(seed, INIT_DIS_STREAM);
        let dis = match config.objective {
            Objective::Gan => {
                Discriminator::Logit(LogitDiscriminator::new(model, device, &mut dis_rng)?)
            }
            Objective::Ebgan(_) => {
                Discriminator::AutoEncoder(AutoEncoder::new(model, device, &mut dis_rng)?)
            }
        };
        Ok(Self { gen, dis })
    }

    /// Adam for G and for D, in that order, with the config's settings.
    pub fn optimizers(&self, config: &Config) -> Result<(Adam, Adam)> {
        Ok((
            Adam::new(self.gen.params().parameters(), config.gen_adam)?,
            Adam::new(self.dis.params().parameters(), config.dis_adam)?,
        ))
    }

    /// The update rule for `config.objective`, drawing noise and dropout
    /// masks from the seed's `update` stream.
    pub fn core(&self, config: &Config, seed: u64) -> Result<Core> {
        let rng = Rng::derived(seed, UPDATE_STREAM);
        Ok(match (&config.objective, &self.dis) {
            (Objective::Ebgan(e), Discriminator::AutoEncoder(d)) => {
                Core::Ebgan(EbganUpdater::new(self.gen.clone(), d.clone(), *e, rng))
            }
            (Objective::Gan, Discriminator::Logit(d)) => Core::Gan(GanUpdater::new(self.gen.clone(), d.clone(), rng)),
            _ => anyhow::bail!(
                "the nets were built for another objective than {:?}; build them from the same config",
                config.objective
            ),
        })
    }

    /// A [`StandardUpdater`] over `iterator` with models `gen` and `dis`,
    /// optimizers `gen` and `dis`, and the objective's [`Core`].
    pub fn updater<D>(
        &self,
        config: &Config,
        iterator: SerialIterator<D>,
        device: &Device,
        seed: u64,
    ) -> Result<StandardUpdater<D, ConcatExamples, Core>>
    where
        D: Dataset<Example = Example>,
    {
        let (gen_opt, dis_opt) = self.optimizers(config)?;
        Ok(StandardUpdater::new(
            iterator,
            ConcatExamples,
            device.clone(),
            self.core(config, seed)?,
        )
        .with_model("gen", self.gen.params().clone())
        .with_model("dis", self.dis.params().clone())
        .with_optimizer("gen", gen_opt)
        .with_optimizer("dis", dis_opt))
    }
}

/// Either update rule, as [`Nets::core`] builds it.
pub enum Core {
    /// [`Objective::Gan`].
    Gan(GanUpdater),
    /// [`Objective::Ebgan`].
    Ebgan(EbganUpdater),
}

impl UpdateCore<Batch> for Core {
    fn update_core(&mut self, batch: Batch, ctx: &mut UpdateContext<'_>) -> Result<()> {
        match self {
            Core::Gan(c) => c.update_core(batch, ctx),
            Core::Ebgan(c) => c.update_core(batch, ctx),
        }
    }

    fn state(&self) -> Result<State> {
        match self {
            Core::Gan(c) => c.state(),
            Core::Ebgan(c) => c.state(),
        }
    }

    fn load_state(&mut self, state: &State) -> Result<()> {
        match self {
            Core::Gan(c) => c.load_state(state),
            Core::Ebgan(c) => c.load_state(state),
        }
        .context("restoring the update rule's random state")
    }
}
