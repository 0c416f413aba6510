//! The judge's network: a small LeNet-style classifier for 28×28 digits.
//!
//! ```text
//! [N,1,28,28] → standardize → conv5×5 32 → maxpool 2 → ReLU → conv5×5 64 → maxpool 2 → ReLU
//!             → fc 1024→128 → ReLU  (the 128 "penultimate features")
//!             → dropout 0.5 (training only) → fc 128→10 (logits)
//! ```

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor, Var};
use kusari_trainer::{ParamStore, Rng};

/// Width of the penultimate layer: the features FID compares.
pub const FEATURES: usize = 128;
/// Number of classes (digits).
pub const CLASSES: usize = 10;
/// Side of the square images the network takes.
pub const IMAGE_SIDE: usize = 28;

const CONV1: usize = 32;
const CONV2: usize = 64;
const KERNEL: usize = 5;
/// 28 → conv 24 → pool 12 → conv 8 → pool 4.
const SIDE1: usize = IMAGE_SIDE - KERNEL + 1;
const SIDE2: usize = SIDE1 / 2 - KERNEL + 1;
const FLAT: usize = CONV2 * (SIDE2 / 2) * (SIDE2 / 2);
const DROPOUT: f32 = 0.5;
/// MNIST's pixel mean and standard deviation on the `[-1, 1]` scale
/// (0.1307 and 0.3081 on `[0, 1]`): inputs are standardized with them.
const PIXEL_MEAN: f64 = 2.0 * 0.1307 - 1.0;
const PIXEL_STD: f64 = 2.0 * 0.3081;

/// The classifier's weights, registered in a [`ParamStore`].
///
/// Activations are kept channels-last and each convolution is an explicit
/// patch gather (`index_select`) followed by one matrix product: on the CPU
/// that trains several times faster than candle's `conv2d`, whose backward
/// pass goes through a slow transposed convolution.
#[derive(Debug, Clone)]
pub struct LeNet {
    conv1_w: Var,
    conv1_b: Var,
    conv2_w: Var,
    conv2_b: Var,
    fc1_w: Var,
    fc1_b: Var,
    fc2_w: Var,
    fc2_b: Var,
    /// Pixel indices of every 5×5 patch of a 28×28 image, patch-major.
    patches1: Tensor,
    /// The same for the 12×12 maps after the first pooling.
    patches2: Tensor,
}

/// He-normal weights (std √(gain/fan_in)).
fn he(rng: &mut Rng, dims: &[usize], fan_in: usize, gain: f32, device: &Device) -> Result<Tensor> {
    let std = (gain / fan_in as f32).sqrt();
    Ok(rng.normal_tensor(dims, 0.0, std, device)?)
}

/// Flat indices into a `side×side` map of every `KERNEL×KERNEL` patch with
/// stride 1: output position major, kernel offset minor.
fn patch_indices(side: usize, device: &Device) -> Result<Tensor> {
    let out = side - KERNEL + 1;
    let mut idx = Vec::with_capacity(out * out * KERNEL * KERNEL);
    for oy in 0..out {
        for ox in 0..out {
            for ky in 0..KERNEL {
                for kx in 0..KERNEL {
                    idx.push(((oy + ky) * side + ox + kx) as u32);
                }
            }
        }
    }
    Ok(Tensor::from_vec(idx, out * out * KERNEL * KERNEL, device)?)
}

/// 2×2 max pooling of a channels-last `[N, side, side, C]` map.
///
/// Each window's maximum is picked by `argmax` and `gather`, so the gradient
/// goes to one element even where a window holds equal values — common on
/// MNIST's flat background, where a `max` reduction would hand every tied
/// element the full gradient.
fn max_pool(x: &Tensor) -> Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    let x = x.reshape((n, h / 2, 2, w / 2, 2, c))?;
    let pick = |x: &Tensor, dim: usize| -> Result<Tensor> {
        let index = x.argmax_keepdim(dim)?;
        Ok(x.gather(&index, dim)?.squeeze(dim)?)
    };
    let x = pick(&x, 4)?;
    pick(&x, 2)
}

impl LeNet {
    /// Registers freshly initialized weights in `params`, drawing from `rng`.
    pub fn new(params: &ParamStore, rng: &mut Rng, device: &Device) -> Result<Self> {
        let zeros = |n: usize| Tensor::zeros(n, candle_core::DType::F32, device);
        let k2 = KERNEL * KERNEL;
        Ok(Self {
            conv1_w: params.parameter("conv1/weight", he(rng, &[k2, CONV1], k2, 2.0, device)?)?,
            conv1_b: params.parameter("conv1/bias", zeros(CONV1)?)?,
            conv2_w: params.parameter(
                "conv2/weight",
                he(rng, &[k2 * CONV1, CONV2], k2 * CONV1, 2.0, device)?,
            )?,
            conv2_b: params.parameter("conv2/bias", zeros(CONV2)?)?,
            fc1_w: params
                .parameter("fc1/weight", he(rng, &[FLAT, FEATURES], FLAT, 2.0, device)?)?,
            fc1_b: params.parameter("fc1/bias", zeros(FEATURES)?)?,
            fc2_w: params.parameter(
                "fc2/weight",
                he(rng, &[FEATURES, CLASSES], FEATURES, 1.0, device)?,
            )?,
            fc2_b: params.parameter("fc2/bias", zeros(CLASSES)?)?,
            patches1: patch_indices(IMAGE_SIDE, device)?,
            patches2: patch_indices(SIDE1 / 2, device)?,
        })
    }

    /// The penultimate features `[N, 128]` (after ReLU) of images `[N, 1, 28, 28]`.
    ///
    /// With `train`, the graph reaches the weights for back-propagation;
    /// without, the weights enter detached and no gradient graph is kept.
    pub fn features(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        let (n, c, h, w) = images.dims4()?;
        ensure!(
            c == 1 && h == IMAGE_SIDE && w == IMAGE_SIDE,
            "the judge takes [N, 1, 28, 28] images, got {:?}",
            images.dims()
        );
        let p = |v: &Var| {
            if train {
                v.as_tensor().clone()
            } else {
                v.as_tensor().detach()
            }
        };
        let k2 = KERNEL * KERNEL;

        let x = images.reshape((n, IMAGE_SIDE * IMAGE_SIDE))?;
        let x = ((x - PIXEL_MEAN)? * (1.0 / PIXEL_STD))?;
        let cols = x
            .index_select(&self.patches1, 1)?
            .reshape((n * SIDE1 * SIDE1, k2))?;
        let y = cols
            .matmul(&p(&self.conv1_w))?
            .broadcast_add(&p(&self.conv1_b))?;
        let y = max_pool(&y.reshape((n, SIDE1, SIDE1, CONV1))?)?.relu()?;

        let side = SIDE1 / 2;
        let x = y.reshape((n, side * side, CONV1))?;
        let cols = x
            .index_select(&self.patches2, 1)?
            .reshape((n * SIDE2 * SIDE2, k2 * CONV1))?;
        let y = cols
            .matmul(&p(&self.conv2_w))?
            .broadcast_add(&p(&self.conv2_b))?;
        let y = max_pool(&y.reshape((n, SIDE2, SIDE2, CONV2))?)?.relu()?;

        let h = y
            .reshape((n, FLAT))?
            .matmul(&p(&self.fc1_w))?
            .broadcast_add(&p(&self.fc1_b))?;
        Ok(h.relu()?)
    }

    /// Class logits `[N, 10]` from penultimate features; `dropout` (training
    /// only) draws the inverted-dropout mask.
    pub fn logits(&self, features: &Tensor, dropout: Option<&mut Rng>) -> Result<Tensor> {
        let train = dropout.is_some();
        let h = match dropout {
            Some(rng) => {
                let mask = rng.dropout_mask(features.shape(), DROPOUT, features.device())?;
                (features * mask)?
            }
            None => features.clone(),
        };
        let (w, b) = if train {
            (
                self.fc2_w.as_tensor().clone(),
                self.fc2_b.as_tensor().clone(),
            )
        } else {
            (
                self.fc2_w.as_tensor().detach(),
                self.fc2_b.as_tensor().detach(),
            )
        };
        Ok(h.matmul(&w)?.broadcast_add(&b)?)
    }
}
