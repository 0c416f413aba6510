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

pub use discriminator::{AutoEncoder, Discriminator, Encoded, LogitDiscriminator};
pub use generator::{
    GenWeights, Generator, GEN_AVERAGE_EXTENSION, GEN_AVERAGE_IN_SNAPSHOT, GEN_IN_SNAPSHOT,
};

use anyhow::{bail, Result};
use candle_core::Tensor;

use crate::config::ImageShape;

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
