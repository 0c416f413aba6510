//! The building blocks of the nets, each behind small functions so a faster
//! kernel can replace one without touching the nets.
//!
//! Layers act on a *group* of batches (`&[Tensor]`): usually one batch, but a
//! discriminator sees the real and the fake batch together so that its
//! [`BatchNorm`] can follow a [`BnStrategy`]. Every other layer treats the
//! batches of a group independently.

pub mod activation;
pub mod batch_norm;
pub mod conv;
pub mod dropout;
pub mod init;
pub mod linear;
pub mod spectral;

pub use activation::Activation;
pub use batch_norm::BatchNorm;
pub use conv::{Conv2d, Deconv2d};
pub use linear::Linear;
pub use spectral::SpectralNorm;

use anyhow::Result;
use candle_core::Tensor;
use kusari_trainer::Rng;

use crate::config::BnStrategy;

/// Training (batch statistics, dropout masks from the given generator,
/// running statistics updated) or evaluation (running statistics, no dropout).
pub enum Phase<'a> {
    /// Training, drawing dropout masks from this generator.
    Train(&'a mut Rng),
    /// Evaluation: deterministic, no state changes.
    Eval,
}

impl Phase<'_> {
    /// Whether this is [`Phase::Train`].
    pub fn is_train(&self) -> bool {
        matches!(self, Phase::Train(_))
    }
}

/// One step of a net.
#[derive(Clone)]
pub enum Layer {
    /// Fully connected.
    Linear(Linear),
    /// 2-D convolution.
    Conv(Conv2d),
    /// 2-D transposed convolution.
    Deconv(Deconv2d),
    /// Batch normalization (following the group's [`BnStrategy`]).
    BatchNorm(BatchNorm),
    /// Inverted dropout with this ratio (identity in evaluation).
    Dropout(f32),
    /// An elementwise nonlinearity.
    Activation(Activation),
    /// Reshapes each example to these dimensions (the batch axis is kept).
    Reshape(Vec<usize>),
}

impl Layer {
    /// Applies the layer to every batch of `xs`.
    pub fn forward(
        &self,
        xs: Vec<Tensor>,
        bn: BnStrategy,
        phase: &mut Phase<'_>,
    ) -> Result<Vec<Tensor>> {
        match self {
            Layer::BatchNorm(b) => b.forward(&xs, bn, phase),
            Layer::Dropout(ratio) => xs
                .iter()
                .map(|x| dropout::dropout(x, *ratio, phase))
                .collect(),
            Layer::Linear(l) => l.forward_group(&xs, phase.is_train()),
            Layer::Conv(c) => c.forward_group(&xs, phase.is_train()),
            Layer::Deconv(d) => d.forward_group(&xs, phase.is_train()),
            Layer::Activation(a) => xs.iter().map(|x| a.apply(x)).collect(),
            Layer::Reshape(dims) => xs
                .iter()
                .map(|x| {
                    let mut shape = vec![x.dim(0)?];
                    shape.extend_from_slice(dims);
                    Ok(x.reshape(shape)?)
                })
                .collect(),
        }
    }
}
