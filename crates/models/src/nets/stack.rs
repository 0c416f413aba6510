//! [`Stack`]: a sequence of [`Layer`]s, and [`StackBuilder`], which names
//! and initializes their parameters (`linear0/weight`, `bn0/gamma`, ...).

use std::collections::BTreeMap;

use anyhow::Result;
use candle_core::{Device, Tensor};
use kusari_trainer::{ParamStore, Rng};

use crate::config::{BnStrategy, Init};
use crate::layers::conv::ConvGeometry;
use crate::layers::{Activation, BatchNorm, Conv2d, Deconv2d, Layer, Linear, Phase};

/// Layers applied in order.
#[derive(Clone)]
pub struct Stack {
    layers: Vec<Layer>,
}

impl Stack {
    /// Runs every batch of `xs` through the layers; `bn` says how batch
    /// normalization treats several batches (see [`BnStrategy`]).
    pub fn forward(
        &self,
        xs: Vec<Tensor>,
        bn: BnStrategy,
        phase: &mut Phase<'_>,
    ) -> Result<Vec<Tensor>> {
        self.layers
            .iter()
            .try_fold(xs, |xs, layer| layer.forward(xs, bn, phase))
    }

    /// [`Stack::forward`] for one batch.
    pub fn forward_one(&self, x: &Tensor, phase: &mut Phase<'_>) -> Result<Tensor> {
        let mut out = self.forward(vec![x.clone()], BnStrategy::Separate, phase)?;
        Ok(out.remove(0))
    }

    /// The layers, in order.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }
}

/// Appends layers, registering their parameters in a [`ParamStore`] under
/// numbered names and drawing initial weights from `rng`.
pub struct StackBuilder<'a> {
    params: ParamStore,
    init: Init,
    rng: &'a mut Rng,
    device: Device,
    counts: BTreeMap<&'static str, usize>,
    layers: Vec<Layer>,
    /// Draws the power iteration's vectors when weights are spectrally normalized.
    spectral: Option<Rng>,
}

impl<'a> StackBuilder<'a> {
    /// An empty stack whose parameters go into `params`, weights drawn from `init` with `rng`.
    pub fn new(params: ParamStore, init: Init, rng: &'a mut Rng, device: &Device) -> Self {
        Self {
            params,
            init,
            rng,
            device: device.clone(),
            counts: BTreeMap::new(),
            layers: Vec::new(),
            spectral: None,
        }
    }

    /// Spectrally normalizes the weights of the layers added from now on
    /// (Linear, conv, transposed conv), their vectors drawn from `rng`;
    /// `None` leaves them as they are.
    pub fn spectral_norm(mut self, rng: Option<Rng>) -> Self {
        self.spectral = rng;
        self
    }

    fn scope(&mut self, kind: &'static str) -> ParamStore {
        let n = self.counts.entry(kind).or_insert(0);
        let name = format!("{kind}{n}");
        *n += 1;
        self.params.sub(&name)
    }

    /// A fully connected layer (`linearN/…`).
    pub fn linear(mut self, inputs: usize, outputs: usize) -> Result<Self> {
        let p = self.scope("linear");
        let mut l = Linear::new(&p, inputs, outputs, &self.init, self.rng, &self.device)?;
        if let Some(rng) = &mut self.spectral {
            l = l.with_spectral_norm(&p, rng)?;
        }
        self.layers.push(Layer::Linear(l));
        Ok(self)
    }

    /// A convolution (`convN/…`).
    pub fn conv(mut self, inputs: usize, outputs: usize, geometry: ConvGeometry) -> Result<Self> {
        let p = self.scope("conv");
        let mut l = Conv2d::new(
            &p,
            inputs,
            outputs,
            geometry,
            &self.init,
            self.rng,
            &self.device,
        )?;
        if let Some(rng) = &mut self.spectral {
            l = l.with_spectral_norm(&p, rng)?;
        }
        self.layers.push(Layer::Conv(l));
        Ok(self)
    }

    /// A transposed convolution (`deconvN/…`).
    pub fn deconv(mut self, inputs: usize, outputs: usize, geometry: ConvGeometry) -> Result<Self> {
        let p = self.scope("deconv");
        let mut l = Deconv2d::new(
            &p,
            inputs,
            outputs,
            geometry,
            &self.init,
            self.rng,
            &self.device,
        )?;
        if let Some(rng) = &mut self.spectral {
            l = l.with_spectral_norm(&p, rng)?;
        }
        self.layers.push(Layer::Deconv(l));
        Ok(self)
    }

    /// Batch normalization over `channels` (`bnN/…`).
    pub fn batch_norm(mut self, channels: usize) -> Result<Self> {
        let p = self.scope("bn");
        let l = BatchNorm::new(&p, channels, &self.device)?;
        self.layers.push(Layer::BatchNorm(l));
        Ok(self)
    }

    /// Dropout with `ratio` (nothing is added for ratio 0).
    pub fn dropout(mut self, ratio: f64) -> Self {
        if ratio > 0.0 {
            self.layers.push(Layer::Dropout(ratio as f32));
        }
        self
    }

    /// An activation (nothing is added for the identity).
    pub fn activation(mut self, a: Activation) -> Self {
        if a != Activation::Identity {
            self.layers.push(Layer::Activation(a));
        }
        self
    }

    /// Reshapes each example to `dims`.
    pub fn reshape(mut self, dims: &[usize]) -> Self {
        self.layers.push(Layer::Reshape(dims.to_vec()));
        self
    }

    /// The finished stack.
    pub fn build(self) -> Stack {
        Stack {
            layers: self.layers,
        }
    }
}
