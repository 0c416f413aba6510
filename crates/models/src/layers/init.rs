//! Weight initialization from the init generator.

use anyhow::Result;
use candle_core::{Device, Shape, Tensor};
use kusari_trainer::Rng;

use crate::config::Init;

/// A weight tensor of `shape` drawn from N(0, init.std(fan_in)).
pub fn weight(
    shape: impl Into<Shape>,
    fan_in: usize,
    init: &Init,
    rng: &mut Rng,
    device: &Device,
) -> Result<Tensor> {
    Ok(rng.normal_tensor(shape, 0.0, init.std(fan_in) as f32, device)?)
}

/// A zero bias of `len` values.
pub fn zeros(len: usize, device: &Device) -> Result<Tensor> {
    Ok(Tensor::zeros(len, candle_core::DType::F32, device)?)
}
