//! The networks: [`Generator`] and the two discriminators ([`AutoEncoder`]
//! for EBGAN, [`LogitDiscriminator`] for GAN), each owning its [`ParamStore`],
//! in an MLP ([`mlp`], the seed) or a convolutional ([`conv`]) family.
//!
//! [`ParamStore`]: kusari_trainer::ParamStore

pub mod conv;
mod discriminator;
mod generator;
pub mod mlp;
pub mod stack;

pub use discriminator::{AutoEncoder, Discriminator, Encoded, Judgement, LogitDiscriminator};
pub use generator::{
    GenWeights, Generator, GEN_AVERAGE_EXTENSION, GEN_AVERAGE_IN_SNAPSHOT, GEN_IN_SNAPSHOT,
};

use anyhow::{bail, Result};
use candle_core::Tensor;
use kusari_trainer::Rng;

use crate::config::{ImageShape, ModelConfig};

/// The generator of the power iteration's vectors for D's `part`, when D
/// is spectrally normalized: derived from `rng`'s state without drawing from
/// it, so that D's weights are those of the same seed without it.
pub(crate) fn spectral_rng(config: &ModelConfig, rng: &Rng, part: &str) -> Option<Rng> {
    config.dis.spectral_norm.then(|| {
        let seed = Rng::from_state(rng.state()).next_u64();
        Rng::derived(seed, &format!("spectral-norm/{part}"))
    })
}

/// Checks that `x` is a batch of `[N, C, H, W]` images of `image`'s shape.
pub(crate) fn check_images(x: &Tensor, image: ImageShape, what: &str) -> Result<()> {
    let dims = x.dims();
    if dims.len() != 4 || dims[1..] != image.dims() {
        bail!(
            "{what} has shape {dims:?} but the model was built for [N, {}, {}, {}] images; \
             set the model's image shape (or --arch / data options) to match the data",
            image.channels,
            image.height,
            image.width
        );
    }
    Ok(())
}
