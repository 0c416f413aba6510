//! Seconds per training iteration of the MLP EBGAN-PT (or GAN) on synthetic
//! MNIST-shaped data, and of one Adam step over G's parameters.
//!
//! ```sh
//! cargo run --release -p kusari-models --example step_timing -- [units_g] [units_d] [iterations] [gan]
//! ```
//! Defaults: the seed's 3200 / 1024, 10 timed iterations after 2 warm-ups.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Device;
use kusari_models::{Config, ModelConfig, Nets};
use kusari_trainer::reporter::{scope, Observation};
use kusari_trainer::{ArrayDataset, Optimizer, SerialIterator, Updater};

fn arg<T: std::str::FromStr>(i: usize, default: T) -> Result<T> {
    match std::env::args().nth(i) {
        Some(s) => s
            .parse()
            .ok()
            .with_context(|| format!("argument {i} (`{s}`) is not a number")),
        None => Ok(default),
    }
}

fn main() -> Result<()> {
    let units_g: usize = arg(1, 3200)?;
    let units_d: usize = arg(2, 1024)?;
    let iterations: usize = arg(3, 10)?;
    let gan = std::env::args().nth(4).as_deref() == Some("gan");

    let mut config = if gan {
        Config::seed_gan()
    } else {
        Config::default()
    };
    config.model = ModelConfig::mlp_with_units(units_g, units_d);
    let device = Device::Cpu;
    let n = 1000;
    let values: Vec<f32> = (0..n * 784)
        .map(|i| ((i * 7919) % 256) as f32 / 127.5 - 1.0)
        .collect();
    let dataset = ArrayDataset::new(values, &[1, 28, 28], None)?;
    let nets = Nets::build(&config, &device, 0)?;
    let iterator = SerialIterator::new(Arc::new(dataset), config.batch_size, true, 0)?;
    let mut updater = nets.updater(&config, iterator, &device, 0)?;
    let observation = Observation::new();
    let mut step = || scope(&observation, || updater.update());
    for _ in 0..2 {
        step()?;
    }
    let start = Instant::now();
    for _ in 0..iterations {
        step()?;
    }
    let per_iter = start.elapsed().as_secs_f64() / iterations as f64;
    let objective = config.objective.name();
    println!(
        "{objective} MLP G {units_g} / D {units_d}, batch {}: {per_iter:.3} s/iter ({} G + {} D parameters); dis/loss {:.4} gen/loss {:.4}",
        config.batch_size,
        nets.gen.params().parameter_count(),
        nets.dis.params().parameter_count(),
        observation.scalar("dis/loss")?.unwrap_or(f64::NAN),
        observation.scalar("gen/loss")?.unwrap_or(f64::NAN),
    );

    // One Adam step over G's parameters alone, with gradients of a cheap loss.
    let (mut adam, _) = nets.optimizers(&config)?;
    let adam = &mut adam;
    let loss = nets
        .gen
        .params()
        .parameters()
        .iter()
        .map(|(_, v)| v.as_tensor().sum_all())
        .try_fold(candle_core::Tensor::new(0f32, &device)?, |acc, s| acc + s?)?;
    let grads = loss.backward()?;
    adam.step(&grads)?;
    let start = Instant::now();
    let steps = 5;
    for _ in 0..steps {
        adam.step(&grads)?;
    }
    println!(
        "Adam step over {} parameters: {:.4} s",
        nets.gen.params().parameter_count(),
        start.elapsed().as_secs_f64() / steps as f64
    );
    Ok(())
}
