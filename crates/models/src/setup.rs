//! From a [`Config`] to a runnable updater: [`Nets`] builds G and D with
//! their own parameter stores and optimizers, [`Nets::step`] the training
//! step for an objective, and [`Nets::updater`] wires both into a
//! [`StandardUpdater`].
//!
//! Every random stream derives from one seed: `init/gen` and `init/dis` for
//! the weights, `update` for noise and dropout masks, and the iterator's own
//! `iterator` stream for the shuffle. The same seed on the same device gives
//! bit-identical runs.

use anyhow::Result;
use candle_core::Device;
use kusari_trainer::{
    ConcatExamples, Dataset, Example, Optimizer, Rng, SerialIterator, StandardUpdater,
};

use crate::config::{Config, DisHead};
use crate::nets::{Discriminator, Generator};
use crate::objective::{self, Objective};
use crate::step::{AdversarialStep, StepOptions};

/// The random stream G's initial weights come from.
pub const INIT_GEN_STREAM: &str = "init/gen";
/// The random stream D's initial weights come from.
pub const INIT_DIS_STREAM: &str = "init/dis";
/// The random stream of the step's noise and dropout masks.
pub const UPDATE_STREAM: &str = "update";

/// The updater [`Nets::updater`] builds.
pub type Updater<D> = StandardUpdater<D, ConcatExamples, AdversarialStep>;

/// G and D of one experiment. Clones share parameters, so an extension can
/// sample from a clone of `gen` while the step trains it.
#[derive(Clone)]
pub struct Nets {
    /// G (model `gen`).
    pub gen: Generator,
    /// D (model `dis`).
    pub dis: Discriminator,
}

impl Nets {
    /// Validates `config` and builds freshly initialized nets on `device`,
    /// D with the head its objective reads (an auto-encoder for EBGAN, a
    /// logit for the others).
    pub fn build(config: &Config, device: &Device, seed: u64) -> Result<Self> {
        Self::build_for(config, config.objective.head(), device, seed)
    }

    /// The same with D's head chosen by the caller: for an objective of
    /// your own, `Nets::build_for(&config, objective.head(), …)`.
    pub fn build_for(config: &Config, head: DisHead, device: &Device, seed: u64) -> Result<Self> {
        config.validate()?;
        let model = &config.model;
        let gen = Generator::new(model, device, &mut Rng::derived(seed, INIT_GEN_STREAM))?;
        let dis = Discriminator::new(
            model,
            head,
            device,
            &mut Rng::derived(seed, INIT_DIS_STREAM),
        )?;
        Ok(Self { gen, dis })
    }

    /// G's and D's optimizers, in that order, as the config sets them
    /// (Adam, or RMSProp).
    pub fn optimizers(&self, config: &Config) -> Result<(Box<dyn Optimizer>, Box<dyn Optimizer>)> {
        Ok((
            config.gen_optimizer.build(self.gen.params().parameters())?,
            config.dis_optimizer.build(self.dis.params().parameters())?,
        ))
    }

    /// The step for `config`'s own objective, drawing noise and dropout
    /// masks from the seed's `update` stream.
    pub fn step(&self, config: &Config, seed: u64) -> Result<AdversarialStep> {
        self.step_with(objective::from_config(&config.objective), config, seed)
    }

    /// The step for any objective (D's head must be the one it reads), with
    /// `config`'s D steps and clip.
    pub fn step_with(
        &self,
        objective: Box<dyn Objective>,
        config: &Config,
        seed: u64,
    ) -> Result<AdversarialStep> {
        let options = StepOptions {
            dis_steps: config.dis_steps,
            dis_weight_clip: config.dis_weight_clip,
        };
        AdversarialStep::new(
            self.gen.clone(),
            self.dis.clone(),
            objective,
            options,
            Rng::derived(seed, UPDATE_STREAM),
        )
    }

    /// A [`StandardUpdater`] over `iterator` with models `gen` and `dis`,
    /// optimizers `gen` and `dis`, and the step for `config`'s objective.
    pub fn updater<D>(
        &self,
        config: &Config,
        iterator: SerialIterator<D>,
        device: &Device,
        seed: u64,
    ) -> Result<Updater<D>>
    where
        D: Dataset<Example = Example>,
    {
        let step = self.step(config, seed)?;
        self.updater_with(step, config, iterator, device)
    }

    /// The same around a step of your own (from [`Nets::step_with`]).
    pub fn updater_with<D>(
        &self,
        step: AdversarialStep,
        config: &Config,
        iterator: SerialIterator<D>,
        device: &Device,
    ) -> Result<Updater<D>>
    where
        D: Dataset<Example = Example>,
    {
        let (gen_opt, dis_opt) = self.optimizers(config)?;
        Ok(
            StandardUpdater::new(iterator, ConcatExamples, device.clone(), step)
                .with_model("gen", self.gen.params().clone())
                .with_model("dis", self.dis.params().clone())
                .with_optimizer("gen", gen_opt)
                .with_optimizer("dis", dis_opt),
        )
    }
}
