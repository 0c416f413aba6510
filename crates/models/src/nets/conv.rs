//! DCGAN-style convolutional nets for square images whose size halves down
//! to 4–7 pixels (28×28 → 14 → 7; 64×64 → 32 → 16 → 8 → 4):
//!
//! - G: z → Linear to `units·2^(k−1)` maps of the smallest size → BatchNorm →
//!   ReLU → (k−1) × [4×4 stride-2 transposed conv halving the channels,
//!   BatchNorm, ReLU] → transposed conv to the image's channels → output
//!   activation.
//! - D body (the encoder): conv to `units` maps (leaky ReLU, no BatchNorm,
//!   as DCGAN) → (k−1) × [conv doubling the channels, BatchNorm, dropout,
//!   leaky ReLU]. Its output maps are the code S; with `code_dim` > 0 a
//!   Linear from the flattened maps to `code_dim` values is the code instead.
//!   The maps alone let the auto-encoder copy any local pattern, malformed
//!   digits included; a narrow code makes it learn the shapes.
//! - EBGAN D's decoder mirrors G's upsampling path from the code (after a
//!   Linear back to the maps, BatchNorm and ReLU when the code is
//!   `code_dim` wide). GAN D's head is a Linear from the flattened code to one
//!   logit.

use anyhow::Result;
use candle_core::Device;
use kusari_trainer::{ParamStore, Rng};

use super::stack::{Stack, StackBuilder};
use crate::config::{ConvStages as Stages, ModelConfig};
use crate::layers::conv::ConvGeometry;
use crate::layers::Activation;

const G: ConvGeometry = ConvGeometry::HALVE_OR_DOUBLE;

/// Channels of the feature maps at stage `i` (0: largest maps).
fn channels(units: usize, i: usize) -> usize {
    units << i
}

/// G: z → images.
pub fn generator(
    c: &ModelConfig,
    params: ParamStore,
    rng: &mut Rng,
    device: &Device,
) -> Result<Stack> {
    let s = Stages::of(c.image)?;
    let g = &c.gen;
    let top = channels(g.units, s.count - 1);
    let mut b = StackBuilder::new(params, g.init, rng, device)
        .linear(c.z_dim, top * s.smallest * s.smallest)?
        .reshape(&[top, s.smallest, s.smallest])
        .batch_norm(top)?
        .activation(Activation::Relu);
    for i in (1..s.count).rev() {
        let out = channels(g.units, i - 1);
        b = b
            .deconv(channels(g.units, i), out, G)?
            .batch_norm(out)?
            .activation(Activation::Relu);
    }
    Ok(b.deconv(g.units, c.image.channels, G)?
        .activation(g.output.into())
        .build())
}

/// The encoder and the size of its (flattened) code.
pub fn encoder(
    c: &ModelConfig,
    params: ParamStore,
    rng: &mut Rng,
    device: &Device,
) -> Result<(Stack, usize)> {
    let s = Stages::of(c.image)?;
    let d = &c.dis;
    let act = Activation::LeakyRelu(d.leaky_slope);
    let sn = super::spectral_rng(c, rng, "enc");
    let mut b = StackBuilder::new(params, d.init, rng, device)
        .spectral_norm(sn)
        .conv(c.image.channels, d.units, G)?
        .dropout(d.dropout)
        .activation(act);
    for i in 1..s.count {
        let out = channels(d.units, i);
        b = b
            .conv(channels(d.units, i - 1), out, G)?
            .batch_norm(out)?
            .dropout(d.dropout)
            .activation(act);
    }
    let maps = channels(d.units, s.count - 1) * s.smallest * s.smallest;
    if d.code_dim == 0 {
        return Ok((b.build(), maps));
    }
    let b = b.reshape(&[maps]).linear(maps, d.code_dim)?;
    Ok((b.build(), d.code_dim))
}

/// The EBGAN decoder: code maps → image.
pub fn decoder(
    c: &ModelConfig,
    params: ParamStore,
    rng: &mut Rng,
    device: &Device,
) -> Result<Stack> {
    let s = Stages::of(c.image)?;
    let d = &c.dis;
    let sn = super::spectral_rng(c, rng, "dec");
    let mut b = StackBuilder::new(params, d.init, rng, device).spectral_norm(sn);
    if d.code_dim > 0 {
        let top = channels(d.units, s.count - 1);
        b = b
            .linear(d.code_dim, top * s.smallest * s.smallest)?
            .reshape(&[top, s.smallest, s.smallest])
            .batch_norm(top)?
            .activation(Activation::Relu);
    }
    for i in (1..s.count).rev() {
        let out = channels(d.units, i - 1);
        b = b
            .deconv(channels(d.units, i), out, G)?
            .batch_norm(out)?
            .activation(Activation::Relu);
    }
    Ok(b.deconv(d.units, c.image.channels, G)?.build())
}

/// The GAN head: the flattened code of `code` values (as [`encoder`]
/// returns its size) → one logit.
pub fn logit_head(
    c: &ModelConfig,
    code: usize,
    params: ParamStore,
    rng: &mut Rng,
    device: &Device,
) -> Result<Stack> {
    let sn = super::spectral_rng(c, rng, "head");
    Ok(StackBuilder::new(params, c.dis.init, rng, device)
        .spectral_norm(sn)
        .reshape(&[code])
        .linear(code, 1)?
        .build())
}
