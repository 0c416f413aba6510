//! Adversarial objectives as plug-ins: an [`Objective`] states D's loss and
//! G's loss from what D made of the real and the fake batch, with ordinary
//! candle ops on those small tensors, and the values it wants reported.
//! Everything below the losses — noise, both nets' forward and backward
//! passes, batch-norm strategies, optimizers, threads, the CPU kernels — is
//! the training step's (`step::AdversarialStep`).
//!
//! A least-squares GAN, say, is all of this:
//!
//! ```
//! use anyhow::Result;
//! use kusari_models::objective::{DisOutputs, Losses, Objective};
//! use kusari_models::DisHead;
//!
//! struct LeastSquares;
//!
//! impl Objective for LeastSquares {
//!     fn name(&self) -> &str {
//!         "least-squares"
//!     }
//!     fn head(&self) -> DisHead {
//!         DisHead::Logit
//!     }
//!     fn losses(&self, d: &DisOutputs) -> Result<Losses> {
//!         let dis = ((d.real.affine(1.0, -1.0)?.sqr()?.mean_all()?
//!             + d.fake.sqr()?.mean_all()?)? * 0.5)?;
//!         let gen = (d.fake.affine(1.0, -1.0)?.sqr()?.mean_all()? * 0.5)?;
//!         Ok(Losses::new(dis, gen))
//!     }
//! }
//! ```
//!
//! The step differentiates the losses with candle's autograd with respect
//! to D's outputs (and codes, and the fake images) only, and carries those
//! gradients back through D and G itself.

mod ebgan;
mod gan;
mod hinge;
mod lsgan;
mod wgan;

pub use ebgan::{energy, pull_away, Ebgan};
pub use gan::{sigmoid_cross_entropy, softplus, Gan};
pub use hinge::Hinge;
pub use lsgan::Lsgan;
pub use wgan::Wgan;

use anyhow::{bail, Result};
use candle_core::Tensor;

use crate::config::{DisHead, ObjectiveConfig};

/// An adversarial objective: D's and G's losses from D's outputs.
pub trait Objective: Send + Sync {
    /// A short name, for logs and errors.
    fn name(&self) -> &str;

    /// The D this objective reads: logits, or EBGAN's auto-encoder.
    fn head(&self) -> DisHead;

    /// `L_D` and `L_G` (0-d tensors) from D's outputs on one real and one
    /// fake batch, and any other values to report. Called once per D step;
    /// on steps that train D alone, `L_G` is not used.
    fn losses(&self, d: &DisOutputs) -> Result<Losses>;
}

/// What D made of a real and a fake batch, and the batches themselves. The
/// step hands these over as leaves of a small graph of their own: a loss may
/// combine them freely with candle's ops.
#[derive(Clone)]
pub struct DisOutputs {
    /// D on the real batch: logits `[N]`, or reconstructions `[N, C, H, W]`
    /// for [`DisHead::AutoEncoder`].
    pub real: Tensor,
    /// D on the fake batch, as `real`.
    pub fake: Tensor,
    /// D's code S of the real batch (its body's last hidden layer: `[N, K]`
    /// for the MLP, `[N, C, h, w]` or `[N, code_dim]` for conv nets).
    pub real_code: Tensor,
    /// D's code S of the fake batch.
    pub fake_code: Tensor,
    /// The real batch `[N, C, H, W]` (a constant).
    pub real_images: Tensor,
    /// The fake batch G(z) `[N, C, H, W]`; `L_G` may depend on it directly
    /// (EBGAN's energy compares it with its reconstruction).
    pub fake_images: Tensor,
}

impl DisOutputs {
    /// D's gradient with respect to its input at `images`, as a tensor a
    /// loss could differentiate again: what a gradient penalty (WGAN-GP at
    /// interpolates, R1 at the real batch) needs. kusari's step and CPU
    /// kernels compute D's gradients without a graph of their own, so this
    /// always fails, at the first step, with an error that names the
    /// alternatives (spectral normalization, weight clipping), rather than
    /// letting a penalty train as if it were zero.
    pub fn gradient_at(&self, images: &Tensor) -> Result<Tensor> {
        let _ = images;
        bail!("{}", crate::kernels::NO_SECOND_ORDER)
    }
}

/// The losses of one D step and the values to report with them.
pub struct Losses {
    /// `L_D`, which trains D (0-d).
    pub dis: Tensor,
    /// `L_G`, which trains G (0-d).
    pub gen: Tensor,
    /// Further values (0-d tensors) reported under their keys, such as
    /// `gen/pt`; `dis/loss` and `gen/loss` are reported for every objective.
    pub reports: Vec<(String, Tensor)>,
}

impl Losses {
    /// `L_D` and `L_G` with nothing else to report.
    pub fn new(dis: Tensor, gen: Tensor) -> Self {
        Self {
            dis,
            gen,
            reports: Vec::new(),
        }
    }

    /// Reports `value` under `key` (e.g. `gen/pt`) besides the losses.
    pub fn report(mut self, key: impl Into<String>, value: Tensor) -> Self {
        self.reports.push((key.into(), value));
        self
    }
}

/// The built-in objective a configuration names.
pub fn from_config(config: &ObjectiveConfig) -> Box<dyn Objective> {
    match config {
        ObjectiveConfig::Gan => Box::new(Gan),
        ObjectiveConfig::Ebgan(e) => Box::new(Ebgan::new(*e)),
        ObjectiveConfig::Lsgan => Box::new(Lsgan),
        ObjectiveConfig::Hinge => Box::new(Hinge),
        ObjectiveConfig::Wgan => Box::new(Wgan),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use anyhow::Result;
    use candle_core::{Device, Tensor, Var};

    use super::{DisOutputs, Losses};

    /// Outputs from literal logits (codes and images are placeholders).
    pub fn logits(real: &[f32], fake: &[f32]) -> Result<DisOutputs> {
        let dev = Device::Cpu;
        let images = Tensor::zeros((real.len(), 1, 1, 1), candle_core::DType::F32, &dev)?;
        Ok(DisOutputs {
            real: Tensor::new(real, &dev)?,
            fake: Tensor::new(fake, &dev)?,
            real_code: images.flatten_from(1)?,
            fake_code: images.flatten_from(1)?,
            real_images: images.clone(),
            fake_images: images,
        })
    }

    /// The losses as numbers.
    pub fn values(l: &Losses) -> Result<(f64, f64)> {
        Ok((
            f64::from(l.dis.to_scalar::<f32>()?),
            f64::from(l.gen.to_scalar::<f32>()?),
        ))
    }

    /// ∂L/∂(real, fake) for logits given as variables.
    pub fn logit_grads(
        objective: &dyn super::Objective,
        real: &[f32],
        fake: &[f32],
    ) -> Result<[Vec<f32>; 4]> {
        let mut d = logits(real, fake)?;
        let (r, f) = (Var::new(real, &Device::Cpu)?, Var::new(fake, &Device::Cpu)?);
        d.real = r.as_tensor().clone();
        d.fake = f.as_tensor().clone();
        let l = objective.losses(&d)?;
        let (gd, gg) = (l.dis.backward()?, l.gen.backward()?);
        let get = |g: &candle_core::backprop::GradStore, v: &Var, n: usize| -> Result<Vec<f32>> {
            Ok(match g.get(v) {
                Some(t) => t.to_vec1()?,
                None => vec![0.0; n],
            })
        };
        Ok([
            get(&gd, &r, real.len())?,
            get(&gd, &f, fake.len())?,
            get(&gg, &r, real.len())?,
            get(&gg, &f, fake.len())?,
        ])
    }

    /// Asserts each value is within 1e-5 of the hand-worked one.
    pub fn assert_near(got: &[f32], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (g, w) in got.iter().zip(want) {
            assert!(
                (f64::from(*g) - w).abs() < 1e-5,
                "{what}: {got:?} vs {want:?}"
            );
        }
    }
}
