use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use kusari_trainer::{ParamStore, Rng};

use super::stack::Stack;
use super::{check_images, conv, mlp};
use crate::config::{Arch, BnStrategy, DisHead, ImageShape, ModelConfig};
use crate::layers::Phase;

/// What EBGAN's D gives for a batch.
#[derive(Clone)]
pub struct Encoded {
    /// `[N, C, H, W]`, compared with the input to get the energy.
    pub reconstruction: Tensor,
    /// The encoder output S (`[N, units]` for the MLP, `[N, C', h, w]` for conv).
    pub code: Tensor,
}

/// EBGAN's D: an auto-encoder whose reconstruction error is the energy.
#[derive(Clone)]
pub struct AutoEncoder {
    params: ParamStore,
    encoder: Stack,
    decoder: Stack,
    batch_norm: BnStrategy,
    image: ImageShape,
}

impl AutoEncoder {
    /// Freshly initialized, with its own [`ParamStore`] (`enc/…`, `dec/…`).
    pub fn new(config: &ModelConfig, device: &Device, rng: &mut Rng) -> Result<Self> {
        config.validate()?;
        let params = ParamStore::new();
        let (encoder, decoder) = match config.arch {
            Arch::Mlp => (
                mlp::encoder(config, params.sub("enc"), rng, device)?.0,
                mlp::decoder(config, params.sub("dec"), rng, device)?,
            ),
            Arch::Conv => (
                conv::encoder(config, params.sub("enc"), rng, device)?.0,
                conv::decoder(config, params.sub("dec"), rng, device)?,
            ),
        };
        Ok(Self {
            params,
            encoder,
            decoder,
            batch_norm: config.dis.batch_norm,
            image: config.image,
        })
    }

    /// D's parameters and BatchNorm running statistics.
    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    /// How batch normalization treats the real and the fake batch.
    pub fn batch_norm(&self) -> BnStrategy {
        self.batch_norm
    }

    /// The encoder (images → code) and the decoder (code → reconstruction).
    pub fn stacks(&self) -> (&Stack, &Stack) {
        (&self.encoder, &self.decoder)
    }

    /// The images D sees.
    pub fn image_shape(&self) -> ImageShape {
        self.image
    }

    fn run(&self, xs: Vec<Tensor>, phase: &mut Phase<'_>) -> Result<Vec<Encoded>> {
        let codes = self.encoder.forward(xs, self.batch_norm, phase)?;
        let recons = self
            .decoder
            .forward(codes.clone(), self.batch_norm, phase)?;
        Ok(codes
            .into_iter()
            .zip(recons)
            .map(|(code, reconstruction)| Encoded {
                reconstruction,
                code,
            })
            .collect())
    }

    /// One batch of images through the auto-encoder.
    pub fn forward(&self, x: &Tensor, phase: &mut Phase<'_>) -> Result<Encoded> {
        check_images(x, self.image, "D's input")?;
        Ok(self.run(vec![x.clone()], phase)?.remove(0))
    }

    /// The real and the fake batch in one pass, batch normalization following
    /// the configured [`BnStrategy`].
    pub fn forward_pair(
        &self,
        real: &Tensor,
        fake: &Tensor,
        phase: &mut Phase<'_>,
    ) -> Result<(Encoded, Encoded)> {
        run_pair(real, fake, self.image, |xs| self.run(xs, phase))
    }

    /// Reconstructions of `x` in evaluation mode (running statistics, no dropout).
    pub fn reconstruct(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward(x, &mut Phase::Eval)?.reconstruction)
    }
}

/// A logit D (GAN, LSGAN, hinge, WGAN): the same body as the auto-encoder's
/// encoder, then one logit.
#[derive(Clone)]
pub struct LogitDiscriminator {
    params: ParamStore,
    body: Stack,
    head: Stack,
    batch_norm: BnStrategy,
    image: ImageShape,
}

impl LogitDiscriminator {
    /// Freshly initialized, with its own [`ParamStore`] (`enc/…`, `head/…`).
    pub fn new(config: &ModelConfig, device: &Device, rng: &mut Rng) -> Result<Self> {
        config.validate()?;
        let params = ParamStore::new();
        let (body, head) = match config.arch {
            Arch::Mlp => (
                mlp::encoder(config, params.sub("enc"), rng, device)?.0,
                mlp::logit_head(config, params.sub("head"), rng, device)?,
            ),
            Arch::Conv => {
                let (body, code) = conv::encoder(config, params.sub("enc"), rng, device)?;
                let head = conv::logit_head(config, code, params.sub("head"), rng, device)?;
                (body, head)
            }
        };
        Ok(Self {
            params,
            body,
            head,
            batch_norm: config.dis.batch_norm,
            image: config.image,
        })
    }

    /// D's parameters and BatchNorm running statistics.
    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    /// The body (images → code) and the head (code → logit).
    pub fn stacks(&self) -> (&Stack, &Stack) {
        (&self.body, &self.head)
    }

    fn run_with_codes(&self, xs: Vec<Tensor>, phase: &mut Phase<'_>) -> Result<Vec<Judgement>> {
        let codes = self.body.forward(xs, self.batch_norm, phase)?;
        let logits = self.head.forward(codes.clone(), self.batch_norm, phase)?;
        codes
            .into_iter()
            .zip(logits)
            .map(|(code, logit)| {
                Ok(Judgement {
                    output: logit.flatten_all()?,
                    code,
                })
            })
            .collect()
    }

    fn run(&self, xs: Vec<Tensor>, phase: &mut Phase<'_>) -> Result<Vec<Tensor>> {
        let judged = self.run_with_codes(xs, phase)?;
        Ok(judged.into_iter().map(|j| j.output).collect())
    }

    /// Logits `[N]` for one batch.
    pub fn forward(&self, x: &Tensor, phase: &mut Phase<'_>) -> Result<Tensor> {
        check_images(x, self.image, "D's input")?;
        Ok(self.run(vec![x.clone()], phase)?.remove(0))
    }

    /// Logits for the real and the fake batch in one pass, batch
    /// normalization following the configured [`BnStrategy`].
    pub fn forward_pair(
        &self,
        real: &Tensor,
        fake: &Tensor,
        phase: &mut Phase<'_>,
    ) -> Result<(Tensor, Tensor)> {
        run_pair(real, fake, self.image, |xs| self.run(xs, phase))
    }
}

/// Checks both batches, runs them as one group and splits the outputs.
fn run_pair<T>(
    real: &Tensor,
    fake: &Tensor,
    image: ImageShape,
    run: impl FnOnce(Vec<Tensor>) -> Result<Vec<T>>,
) -> Result<(T, T)> {
    check_images(real, image, "the real batch")?;
    check_images(fake, image, "the fake batch")?;
    let mut out = run(vec![real.clone(), fake.clone()])?.into_iter();
    match (out.next(), out.next()) {
        (Some(real), Some(fake)) => Ok((real, fake)),
        _ => bail!("D returned fewer outputs than the two batches it was given"),
    }
}

/// What D makes of one batch: its output (logits `[N]`, or EBGAN's
/// reconstructions `[N, C, H, W]`) and its body's code S (the last hidden
/// layer: `[N, units]` for the MLP, the last feature maps or the
/// `code_dim` values for conv nets).
#[derive(Clone)]
pub struct Judgement {
    /// Logits `[N]` or reconstructions `[N, C, H, W]`.
    pub output: Tensor,
    /// The code S.
    pub code: Tensor,
}

/// Either discriminator, as `Nets` holds it.
#[derive(Clone)]
pub enum Discriminator {
    /// A logit D (GAN, LSGAN, hinge, WGAN).
    Logit(LogitDiscriminator),
    /// EBGAN's D.
    AutoEncoder(AutoEncoder),
}

impl Discriminator {
    /// A freshly initialized D with the given head, weights drawn from `rng`.
    pub fn new(
        config: &ModelConfig,
        head: DisHead,
        device: &Device,
        rng: &mut Rng,
    ) -> Result<Self> {
        Ok(match head {
            DisHead::Logit => Discriminator::Logit(LogitDiscriminator::new(config, device, rng)?),
            DisHead::AutoEncoder => {
                Discriminator::AutoEncoder(AutoEncoder::new(config, device, rng)?)
            }
        })
    }

    /// Which head D has.
    pub fn head(&self) -> DisHead {
        match self {
            Discriminator::Logit(_) => DisHead::Logit,
            Discriminator::AutoEncoder(_) => DisHead::AutoEncoder,
        }
    }

    /// D's parameters and BatchNorm running statistics.
    pub fn params(&self) -> &ParamStore {
        match self {
            Discriminator::Logit(d) => d.params(),
            Discriminator::AutoEncoder(d) => d.params(),
        }
    }

    /// The body (images → code) and the head (code → logit or reconstruction).
    pub fn stacks(&self) -> (&Stack, &Stack) {
        match self {
            Discriminator::Logit(d) => d.stacks(),
            Discriminator::AutoEncoder(d) => d.stacks(),
        }
    }

    /// How batch normalization treats the real and the fake batch.
    pub fn batch_norm(&self) -> BnStrategy {
        match self {
            Discriminator::Logit(d) => d.batch_norm,
            Discriminator::AutoEncoder(d) => d.batch_norm,
        }
    }

    /// The images D sees.
    pub fn image_shape(&self) -> ImageShape {
        match self {
            Discriminator::Logit(d) => d.image,
            Discriminator::AutoEncoder(d) => d.image,
        }
    }

    /// The real and the fake batch in one pass (batch normalization
    /// following the configured [`BnStrategy`]): D's outputs and codes.
    pub fn judge_pair(
        &self,
        real: &Tensor,
        fake: &Tensor,
        phase: &mut Phase<'_>,
    ) -> Result<(Judgement, Judgement)> {
        match self {
            Discriminator::Logit(d) => {
                run_pair(real, fake, d.image, |xs| d.run_with_codes(xs, phase))
            }
            Discriminator::AutoEncoder(d) => {
                let (r, f) = d.forward_pair(real, fake, phase)?;
                let judged = |e: Encoded| Judgement {
                    output: e.reconstruction,
                    code: e.code,
                };
                Ok((judged(r), judged(f)))
            }
        }
    }

    /// EBGAN's auto-encoder, or `None` for a logit D.
    pub fn auto_encoder(&self) -> Option<&AutoEncoder> {
        match self {
            Discriminator::AutoEncoder(d) => Some(d),
            Discriminator::Logit(_) => None,
        }
    }

    /// The logit D, or `None` for EBGAN's auto-encoder.
    pub fn logit(&self) -> Option<&LogitDiscriminator> {
        match self {
            Discriminator::Logit(d) => Some(d),
            Discriminator::AutoEncoder(_) => None,
        }
    }

    /// EBGAN's D reconstructs images (evaluation mode); GAN's D cannot.
    pub fn reconstruct(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Discriminator::AutoEncoder(d) => d.reconstruct(x),
            Discriminator::Logit(_) => {
                bail!("reconstruction needs an EBGAN discriminator (an auto-encoder); this run trained a logit D")
            }
        }
    }
}
