//! Fully connected layer, initialized as Chainer's `Linear`.

use anyhow::Result;
use candle_core::{Device, Tensor, Var};
use kusari_trainer::{ParamStore, Rng};

use super::init;
use super::spectral::{effective_weight, SpectralNorm, WeightLayout};
use crate::config::Init;

/// `y = x W + b` on `[N, in]` inputs.
///
/// `W` is stored `[in, out]` (Chainer stores its transpose): candle's matmul
/// gradient for `W` then comes out contiguous, and accumulating it is a
/// plain vector add instead of a strided one (several times faster at the
/// seed's 3200×3200).
#[derive(Clone)]
pub struct Linear {
    weight: Var,
    bias: Var,
    spectral: Option<SpectralNorm>,
}

impl Linear {
    /// Registers `weight` and `bias` in `params`.
    pub fn new(
        params: &ParamStore,
        inputs: usize,
        outputs: usize,
        init: &Init,
        rng: &mut Rng,
        device: &Device,
    ) -> Result<Self> {
        let weight = params.parameter(
            "weight",
            init::weight((inputs, outputs), inputs, init, rng, device)?,
        )?;
        let bias = params.parameter("bias", init::zeros(outputs, device)?)?;
        Ok(Self {
            weight,
            bias,
            spectral: None,
        })
    }

    /// The same layer with its weight spectrally normalized, the power
    /// iteration's vectors registered in `params` and drawn from `rng`.
    pub fn with_spectral_norm(mut self, params: &ParamStore, rng: &mut Rng) -> Result<Self> {
        let layout = WeightLayout::Linear;
        self.spectral = Some(SpectralNorm::for_weight(params, layout, &self.weight, rng)?);
        Ok(self)
    }

    /// `[N, in]` → `[N, out]` (in evaluation mode, if spectrally normalized).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self
            .forward_group(std::slice::from_ref(x), false)?
            .remove(0))
    }

    /// Every batch of `xs` through the layer, with one weight for them all
    /// (one power iteration in training under spectral normalization).
    pub fn forward_group(&self, xs: &[Tensor], train: bool) -> Result<Vec<Tensor>> {
        let w = effective_weight(self.spectral.as_ref(), &self.weight, train)?;
        xs.iter()
            .map(|x| linear(x, &w, self.bias.as_tensor()))
            .collect()
    }

    /// The weight `[in, out]`.
    pub fn weight(&self) -> &Var {
        &self.weight
    }

    /// The bias `[out]`.
    pub fn bias(&self) -> &Var {
        &self.bias
    }

    /// The weight's spectral normalization, if it has one.
    pub fn spectral_norm(&self) -> Option<&SpectralNorm> {
        self.spectral.as_ref()
    }
}

/// `x W + b` for `W` of shape `[in, out]`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if crate::kernels::cpu_kernels_apply(x) {
        return Ok(crate::kernels::affine::affine(x, weight, bias)?);
    }
    Ok(x.matmul(weight)?.broadcast_add(bias)?)
}
