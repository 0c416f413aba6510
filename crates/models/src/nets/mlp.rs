//! The seed's fully connected nets (the Chainer EBGAN-PT blog's):
//!
//! - G: z → L × [Linear units, BatchNorm, ReLU] → Linear C·H·W → output activation.
//! - D body (the encoder): C·H·W → L × [Linear units, BatchNorm, dropout,
//!   leaky ReLU]; its last hidden layer is the code S.
//! - EBGAN D's decoder: K × [Linear units, BatchNorm, leaky ReLU] (K = 0 in
//!   the seed) → Linear C·H·W. GAN D's head: Linear 1.
//!
//! Images enter and leave as `[N, C, H, W]`; the nets flatten them inside.

use anyhow::Result;
use candle_core::Device;
use kusari_trainer::{ParamStore, Rng};

use super::stack::{Stack, StackBuilder};
use crate::config::ModelConfig;
use crate::layers::Activation;

/// G: z → images.
pub fn generator(
    c: &ModelConfig,
    params: ParamStore,
    rng: &mut Rng,
    device: &Device,
) -> Result<Stack> {
    let g = &c.gen;
    let mut b = StackBuilder::new(params, g.init, rng, device);
    let mut width = c.z_dim;
    for _ in 0..g.layers {
        b = b
            .linear(width, g.units)?
            .batch_norm(g.units)?
            .activation(Activation::Relu);
        width = g.units;
    }
    Ok(b.linear(width, c.image.len())?
        .activation(g.output.into())
        .reshape(&c.image.dims())
        .build())
}

/// The encoder and the width of its code.
pub fn encoder(
    c: &ModelConfig,
    params: ParamStore,
    rng: &mut Rng,
    device: &Device,
) -> Result<(Stack, usize)> {
    let d = &c.dis;
    let sn = super::spectral_rng(c, rng, "enc");
    let mut b = StackBuilder::new(params, d.init, rng, device)
        .spectral_norm(sn)
        .reshape(&[c.image.len()]);
    let mut width = c.image.len();
    for _ in 0..d.layers {
        b = b
            .linear(width, d.units)?
            .batch_norm(d.units)?
            .dropout(d.dropout)
            .activation(Activation::LeakyRelu(d.leaky_slope));
        width = d.units;
    }
    Ok((b.build(), width))
}

/// The EBGAN decoder: code → image.
pub fn decoder(
    c: &ModelConfig,
    params: ParamStore,
    rng: &mut Rng,
    device: &Device,
) -> Result<Stack> {
    let d = &c.dis;
    let sn = super::spectral_rng(c, rng, "dec");
    let mut b = StackBuilder::new(params, d.init, rng, device).spectral_norm(sn);
    for _ in 0..d.decoder_layers {
        b = b
            .linear(d.units, d.units)?
            .batch_norm(d.units)?
            .activation(Activation::LeakyRelu(d.leaky_slope));
    }
    Ok(b.linear(d.units, c.image.len())?
        .reshape(&c.image.dims())
        .build())
}

/// The GAN head: code → one logit.
pub fn logit_head(
    c: &ModelConfig,
    params: ParamStore,
    rng: &mut Rng,
    device: &Device,
) -> Result<Stack> {
    let sn = super::spectral_rng(c, rng, "head");
    Ok(StackBuilder::new(params, c.dis.init, rng, device)
        .spectral_norm(sn)
        .linear(c.dis.units, 1)?
        .build())
}
