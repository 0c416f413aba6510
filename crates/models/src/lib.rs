#![warn(missing_docs)]
//! # kusari-models
//!
//! Adversarial training on [`kusari_trainer`]: the seed's MLP nets and
//! DCGAN-style conv nets, every choice the EBGAN blog asks about as a
//! [`Config`] field, objectives as plug-ins ([`Objective`]: EBGAN-PT, GAN,
//! LSGAN, hinge, WGAN, or your own) on one fast training step
//! ([`AdversarialStep`]), and runs that repeat bit for bit.
//!
//! Build the nets from a config and a seed, get a
//! [`StandardUpdater`](kusari_trainer::StandardUpdater), and train:
//!
//! ```
//! use std::sync::Arc;
//! use anyhow::Result;
//! use candle_core::Device;
//! use kusari_models::{Config, ImageShape, ModelConfig, Nets};
//! use kusari_trainer::prelude::*;
//!
//! # fn main() -> Result<()> {
//! // A tiny EBGAN-PT on 64 synthetic 4×4 gray images in [−1, 1].
//! let mut config = Config::default();
//! config.model = ModelConfig::mlp_with_units(32, 16);
//! config.model.image = ImageShape { channels: 1, height: 4, width: 4 };
//! config.batch_size = 8;
//! let values: Vec<f32> = (0..64 * 16).map(|i| (i % 7) as f32 / 3.0 - 1.0).collect();
//! let dataset = ArrayDataset::new(values, &[1, 4, 4], None)?;
//!
//! let (device, seed) = (Device::Cpu, 0);
//! let nets = Nets::build(&config, &device, seed)?;
//! let iterator = SerialIterator::new(Arc::new(dataset), config.batch_size, true, seed)?;
//! let updater = nets.updater(&config, iterator, &device, seed)?;
//!
//! let out = std::env::temp_dir().join("kusari-models-doc-example");
//! let mut trainer = Trainer::new(updater, IntervalTrigger::iterations(5), &out);
//! trainer.handle_signals(false);
//! trainer.extend(make_extension("check", IntervalTrigger::iterations(1), Priority::READER, |ctx| {
//!     for key in ["dis/loss", "gen/loss", "gen/pt"] {
//!         assert!(ctx.observation().scalar(key)?.is_some_and(f64::is_finite));
//!     }
//!     Ok(())
//! }));
//! trainer.run()?;
//!
//! // Eight samples from G in evaluation mode, as `[N, C, H, W]`.
//! let images = nets.gen.sample(8, &mut Rng::new(1))?;
//! assert_eq!(images.dims(), &[8, 1, 4, 4]);
//! # Ok(())
//! # }
//! ```

pub mod config;
pub mod eval;
pub mod extensions;
pub mod kernels;
pub mod layers;
pub mod nets;
pub mod objective;
pub mod setup;
pub mod step;

pub use config::{
    Arch, BnStrategy, Config, ConvStages, DisConfig, DisHead, EbganConfig, GenConfig, ImageShape,
    Init, ModelConfig, ObjectiveConfig, OptimizerConfig, OutputActivation, PtVariant,
};
pub use layers::Phase;
pub use nets::{
    AutoEncoder, Discriminator, Encoded, GenWeights, Generator, Judgement, LogitDiscriminator,
    GEN_AVERAGE_EXTENSION, GEN_AVERAGE_IN_SNAPSHOT, GEN_IN_SNAPSHOT,
};
pub use objective::{DisOutputs, Losses, Objective};
pub use setup::Nets;
pub use step::{AdversarialStep, StepOptions};
