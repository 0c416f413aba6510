//! The EBGAN-PT step on a GPU against the CPU: built from the same seed and
//! restarted from the CPU's state before each step (through a snapshot, so
//! snapshots move between devices), every step gives the same losses within
//! 1e-4 relative; the CUDA updater runs the autograd engine (the
//! fused engine is CPU-only), and every parameter stays on the GPU, so no op
//! fell back to the host.
//!
//! Lockstep, because free-running runs drift apart: Adam's first steps move
//! each parameter by about ±lr whatever its gradient's size, so rounding
//! differences in near-zero gradients become visible in the losses within a
//! few iterations (the CPU's fast and reference paths, which agree to 1e-6
//! on one step, differ by 4e-4 at the third iteration of the seed's run).
//!
//! Built only with the `cuda` feature (`cargo xtask build-cuda -p
//! kusari-models -- --test cuda_agreement`); without a usable GPU it says
//! so and passes, as the MNIST tests do without `MNIST_DIR`.
#![cfg(feature = "cuda")]

mod common;

use std::sync::Arc;

use anyhow::Result;
use candle_core::Device;
use kusari_models::{Config, ModelConfig, Nets};
use kusari_trainer::reporter::{scope, Observation};
use kusari_trainer::{ArrayDataset, SerialIterator, Updater};

use common::synthetic;

type Updaters = kusari_models::setup::Updater<ArrayDataset>;

const KEYS: [&str; 3] = ["dis/loss", "gen/loss", "gen/pt"];
const STEPS: usize = 5;
const SEED: u64 = 7;
const TOLERANCE: f64 = 1e-4;

/// The seed's nets (four hidden layers, BatchNorm, dropout, pull-away term)
/// at widths small enough for a quick CPU run.
fn config() -> Config {
    Config {
        model: ModelConfig::mlp_with_units(256, 128),
        ..Config::default()
    }
}

fn updater(config: &Config, device: &Device) -> Result<Updaters> {
    let nets = Nets::build(config, device, SEED)?;
    let data = synthetic(4 * config.batch_size, config.model.image);
    let iterator = SerialIterator::new(Arc::new(data), config.batch_size, true, SEED)?;
    nets.updater(config, iterator, device, SEED)
}

fn losses(updater: &mut Updaters) -> Result<[f64; 3]> {
    let observation = Observation::new();
    scope(&observation, || updater.update())?;
    let mut out = [0.0; 3];
    for (slot, key) in out.iter_mut().zip(KEYS) {
        *slot = observation.scalar(key)?.expect("the EBGAN step reports it");
    }
    Ok(out)
}

fn uses_fast_step(updater: &Updaters) -> bool {
    updater.core().uses_fused_step()
}

#[test]
fn cuda_steps_match_the_cpu() -> Result<()> {
    let gpu = match Device::new_cuda(0) {
        Ok(gpu) => gpu,
        Err(e) => {
            eprintln!("skipped: no usable GPU ({e})");
            return Ok(());
        }
    };
    let config = config();
    let mut cpu = updater(&config, &Device::Cpu)?;
    let mut cuda = updater(&config, &gpu)?;
    assert!(
        !uses_fast_step(&cuda),
        "on CUDA the updater must take the candle-ops path"
    );
    for step in 0..STEPS {
        cuda.load_state(&cpu.state()?)?;
        let (want, got) = (losses(&mut cpu)?, losses(&mut cuda)?);
        for ((key, w), g) in KEYS.iter().zip(want).zip(got) {
            eprintln!("step {step} {key}: cpu {w:.8} cuda {g:.8}");
            assert!(
                (g - w).abs() <= TOLERANCE * w.abs().max(1e-3),
                "step {step} {key}: cuda {g} cpu {w} differ by more than {TOLERANCE} relative"
            );
        }
    }
    for (model, params) in cuda.models().iter() {
        for (name, var, _) in params.all() {
            assert!(
                var.device().is_cuda(),
                "{model}/{name} left the GPU: it is on {:?}",
                var.device()
            );
        }
    }
    Ok(())
}
