//! The fast CPU path of the EBGAN(-PT) training step for the MLP nets.
//!
//! The candle-ops path ([`crate::ebgan::EbganUpdater::losses`] and candle's
//! autograd) stays the reference, the path for conv nets and the CUDA path.
//! For MLP nets on the CPU, [`FastEbgan`] computes the same step by hand:
//! matrix products by a small-matrix AVX2 kernel (or `gemm` without AVX2)
//! on fixed blocks split over rayon's threads, fused
//! column-parallel kernels for bias, BatchNorm, dropout and activations
//! (forward and backward), the weight gradient computed tile by tile and
//! applied by Adam at once, and buffers reused across iterations.
//!
//! The candle-ops path itself runs three kinds of layer on kusari's CPU
//! kernels for f32, as candle custom ops with their gradients: convolutions
//! ([`conv`]), training-mode BatchNorm ([`channel_norm`]) and activations
//! ([`activation`]), each tested against candle's own ops.
//!
//! The updater picks it automatically; `KUSARI_STEP=reference` in the
//! environment (or [`crate::EbganUpdater::with_reference_step`]) forces the
//! candle path. Both paths draw the same noise and dropout masks, so their
//! losses agree to float rounding (about 1e-6 relative per step) and their
//! snapshots are interchangeable. Sums run over fixed blocks whose sizes
//! depend only on the layer shapes, so a run repeats bit for bit whatever
//! the thread count.

pub(crate) mod activation;
mod batch_norm;
pub(crate) mod channel_norm;
mod columns;
pub(crate) mod conv;
mod dense;
mod grad_scope;
mod losses;
mod matmul;
mod pool;
mod profile;
mod simd;
mod small_gemm;
mod step;
mod storage;
#[cfg(test)]
mod testing;
mod weight_update;

pub use grad_scope::input_gradients_only;
pub use pool::in_own_pool;
pub use profile::{Profile, PHASES};
pub use step::{FastEbgan, FastLosses};

use anyhow::{bail, Result};

/// Whether the CPU kernels behind the candle-ops layers (convolutions,
/// BatchNorm, activations) can run on `x`: an f32 tensor on the CPU.
pub(crate) fn cpu_kernels_apply(x: &candle_core::Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32
}

/// Which implementation of the training step to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPath {
    /// The fast path where it applies (MLP nets on the CPU), else the reference.
    Auto,
    /// Always the candle-ops reference path.
    Reference,
}

/// The environment variable that chooses the step's implementation.
pub const STEP_ENV: &str = "KUSARI_STEP";

impl StepPath {
    /// From `KUSARI_STEP`: unset, `auto` or `fast` → [`StepPath::Auto`];
    /// `reference` → [`StepPath::Reference`].
    pub fn from_env() -> Result<Self> {
        match std::env::var(STEP_ENV) {
            Err(std::env::VarError::NotPresent) => Ok(Self::Auto),
            Ok(v) => match v.trim() {
                "" | "auto" | "fast" => Ok(Self::Auto),
                "reference" => Ok(Self::Reference),
                other => bail!("{STEP_ENV}={other} is not understood; use `auto` or `reference`"),
            },
            Err(e) => bail!("{STEP_ENV} is not readable: {e}"),
        }
    }
}
