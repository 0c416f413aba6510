use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use kusari_trainer::{ParamStore, Rng, State};

use super::stack::Stack;
use super::{conv, mlp};
use crate::config::{Arch, ImageShape, ModelConfig};
use crate::layers::Phase;

/// Where a trainer snapshot keeps G's parameters and buffers (the updater's model `gen`).
pub const GEN_IN_SNAPSHOT: &str = "updater/models/gen";

/// The name under which `kusari train --gen-ema` registers the
/// [`kusari_trainer::extensions::MovingAverage`] of G's weights.
pub const GEN_AVERAGE_EXTENSION: &str = "gen_average";

/// Where a trainer snapshot keeps the moving average of G's weights, when the run kept one.
pub const GEN_AVERAGE_IN_SNAPSHOT: &str = "extensions/gen_average/average";

/// Which of G's weights to take from a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenWeights {
    /// The weights being trained.
    Live,
    /// Their moving average (`kusari train --gen-ema`).
    Average,
}

impl GenWeights {
    /// The average where the snapshot holds one, else the live weights.
    pub fn best_in(snapshot: &State) -> Self {
        if snapshot.has_child(GEN_AVERAGE_IN_SNAPSHOT) {
            Self::Average
        } else {
            Self::Live
        }
    }
}

/// G: noise `z ~ U(−1, 1)^z_dim` → images `[N, C, H, W]`.
#[derive(Clone)]
pub struct Generator {
    params: ParamStore,
    net: Stack,
    z_dim: usize,
    image: ImageShape,
    device: Device,
}

impl Generator {
    /// A freshly initialized generator with its own [`ParamStore`], weights drawn from `rng`.
    pub fn new(config: &ModelConfig, device: &Device, rng: &mut Rng) -> Result<Self> {
        config.validate()?;
        let params = ParamStore::new();
        let net = match config.arch {
            Arch::Mlp => mlp::generator(config, params.clone(), rng, device)?,
            Arch::Conv => conv::generator(config, params.clone(), rng, device)?,
        };
        Ok(Self {
            params,
            net,
            z_dim: config.z_dim,
            image: config.image,
            device: device.clone(),
        })
    }

    /// G's parameters (trained) and BatchNorm running statistics (buffers).
    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    /// Size of the noise z.
    pub fn z_dim(&self) -> usize {
        self.z_dim
    }

    /// The images G makes, `[C, H, W]`.
    pub fn image_shape(&self) -> ImageShape {
        self.image
    }

    /// Where G's parameters live.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// G's layers.
    pub fn stack(&self) -> &Stack {
        &self.net
    }

    /// `n` noise vectors `[n, z_dim]`, uniform in [−1, 1), drawn from `rng`.
    pub fn sample_z(&self, n: usize, rng: &mut Rng) -> Result<Tensor> {
        Ok(rng.uniform_tensor((n, self.z_dim), -1.0, 1.0, &self.device)?)
    }

    /// Images for noise `z` (`[N, z_dim]`). Training uses batch statistics and
    /// updates the running ones; evaluation uses the running ones.
    pub fn forward(&self, z: &Tensor, phase: &mut Phase<'_>) -> Result<Tensor> {
        if z.rank() != 2 || z.dim(1)? != self.z_dim {
            bail!(
                "G expects noise of shape [N, {}], got {:?}",
                self.z_dim,
                z.dims()
            );
        }
        self.net.forward_one(z, phase)
    }

    /// `n` images from fresh noise drawn from `rng`, in evaluation mode.
    pub fn sample(&self, n: usize, rng: &mut Rng) -> Result<Tensor> {
        let z = self.sample_z(n, rng)?;
        self.forward(&z, &mut Phase::Eval)
    }

    /// Loads G's parameters and buffers from a whole trainer snapshot (its
    /// [`GEN_IN_SNAPSHOT`] part), as sampling from a trained run needs.
    pub fn load_snapshot(&self, snapshot: &State) -> Result<()> {
        self.load_snapshot_weights(snapshot, GenWeights::Live)
    }

    /// Loads the live weights or their moving average from a trainer snapshot.
    pub fn load_snapshot_weights(&self, snapshot: &State, weights: GenWeights) -> Result<()> {
        if !snapshot.has_child(GEN_IN_SNAPSHOT) {
            bail!("the snapshot holds no generator (`{GEN_IN_SNAPSHOT}`): it is not a kusari GAN/EBGAN snapshot");
        }
        let (key, what) = match weights {
            GenWeights::Live => (GEN_IN_SNAPSHOT, "the snapshot's generator"),
            GenWeights::Average => {
                if !snapshot.has_child(GEN_AVERAGE_IN_SNAPSHOT) {
                    bail!("the snapshot holds no average of G's weights: its run was trained without --gen-ema; sample its live weights instead");
                }
                (GEN_AVERAGE_IN_SNAPSHOT, "the snapshot's average of G")
            }
        };
        self.params
            .load_state(&snapshot.child(key), what)
            .context("loading G from the snapshot")
    }
}
