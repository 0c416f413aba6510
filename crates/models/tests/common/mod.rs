//! Tiny configs, synthetic data and a run recorder shared by the tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use candle_core::Device;
use kusari_models::{Config, ImageShape, ModelConfig, Nets, ObjectiveConfig};
use kusari_trainer::prelude::*;
use kusari_trainer::Priority;

/// Reported values of one iteration, by key.
pub type Reports = BTreeMap<String, f64>;

/// A trainer as [`trainer`] builds it.
pub type TestTrainer = Trainer<kusari_models::setup::Updater<ArrayDataset>>;

/// Every iteration's reports, as the recording extension fills them.
pub type ReportLog = Arc<Mutex<Vec<Reports>>>;

/// The seed's nets at toy widths on 8×8 images.
pub fn tiny_config(objective: ObjectiveConfig) -> Config {
    let mut c = Config::seed_with(objective);
    c.model = ModelConfig::mlp_with_units(24, 16);
    c.model.image = ImageShape {
        channels: 1,
        height: 8,
        width: 8,
    };
    c.model.gen.layers = 2;
    c.model.dis.layers = 2;
    c.batch_size = 10;
    c
}

/// `n` images of `image`'s shape with values in [−1, 1]: blobs whose place
/// depends on the index, so the batches differ.
pub fn synthetic(n: usize, image: ImageShape) -> ArrayDataset {
    let len = image.len();
    let mut values = Vec::with_capacity(n * len);
    for i in 0..n {
        for k in 0..len {
            let phase = (k as f32 * 0.37 + i as f32 * 1.3).sin();
            values.push(phase.clamp(-1.0, 1.0));
        }
    }
    ArrayDataset::new(values, &image.dims(), None).expect("valid synthetic dataset")
}

/// A trainer over `dataset` that stops after `iterations` and records every
/// iteration's reports into the returned list.
pub fn trainer(
    config: &Config,
    dataset: ArrayDataset,
    seed: u64,
    iterations: u64,
    out: &Path,
) -> Result<(TestTrainer, ReportLog, Nets)> {
    let device = Device::Cpu;
    let nets = Nets::build(config, &device, seed)?;
    let iterator = SerialIterator::new(Arc::new(dataset), config.batch_size, true, seed)?;
    let updater = nets.updater(config, iterator, &device, seed)?;
    let mut trainer = Trainer::new(updater, IntervalTrigger::iterations(iterations), out);
    trainer.handle_signals(false);
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    trainer.extend(make_extension(
        "record",
        IntervalTrigger::iterations(1),
        Priority::WRITER,
        move |ctx| {
            let obs = ctx.observation();
            let mut reports = Reports::new();
            for key in obs.keys() {
                reports.insert(key.clone(), obs.scalar(&key)?.expect("reported"));
            }
            sink.lock().unwrap().push(reports);
            Ok(())
        },
    ));
    Ok((trainer, log, nets))
}

/// Runs `iterations` from scratch and returns every iteration's reports.
pub fn run(
    config: &Config,
    dataset: ArrayDataset,
    seed: u64,
    iterations: u64,
) -> Result<Vec<Reports>> {
    let dir = tempfile::tempdir()?;
    let (mut trainer, log, _) = trainer(config, dataset, seed, iterations, dir.path())?;
    trainer.run()?;
    let reports = log.lock().unwrap().clone();
    assert_eq!(reports.len() as u64, iterations);
    Ok(reports)
}

/// Every value of every variable in `params`, by name.
pub fn values(params: &ParamStore) -> Result<BTreeMap<String, Vec<f32>>> {
    params
        .parameters()
        .into_iter()
        .map(|(name, var)| Ok((name, var.flatten_all()?.to_vec1::<f32>()?)))
        .collect()
}
