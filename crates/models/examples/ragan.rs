//! A new objective in one file: the relativistic average GAN
//! (Jolicoeur-Martineau 2018) on the seed's nets and MNIST, with the log,
//! the table, the progress bar, image grids, snapshots and resume.
//!
//! cargo run --release -p kusari-models --example ragan -- [OUT] [EPOCHS]
use std::sync::Arc;

use anyhow::Result;
use candle_core::Device;
use kusari_models::extensions::StandardExtensions;
use kusari_models::objective::{softplus, DisOutputs, Losses, Objective};
use kusari_models::{Config, DisHead, Nets};
use kusari_trainer::datasets::{mnist, PixelRange, Split};
use kusari_trainer::extensions::latest_snapshot;
use kusari_trainer::{IntervalTrigger, SerialIterator, State, Trainer};

/// D asks how much more real a real image looks than the average fake, and
/// the other way round; G wants the opposite answers.
pub struct RaGan;

impl Objective for RaGan {
    fn name(&self) -> &str {
        "ragan"
    }
    fn head(&self) -> DisHead {
        DisHead::Logit
    }
    fn losses(&self, d: &DisOutputs) -> Result<Losses> {
        // C(x) − E C(G(z)) and C(G(z)) − E C(x), as logits of "more real than".
        let real = d.real.broadcast_sub(&d.fake.mean_all()?)?;
        let fake = d.fake.broadcast_sub(&d.real.mean_all()?)?;
        // −log σ(t) = softplus(−t), −log(1 − σ(t)) = softplus(t).
        let dis = (softplus(&real.neg()?)?.mean_all()? + softplus(&fake)?.mean_all()?)?;
        let gen = (softplus(&fake.neg()?)?.mean_all()? + softplus(&real)?.mean_all()?)?;
        Ok(Losses::new(dis, gen))
    }
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let out = args.next().unwrap_or_else(|| "result/ragan".into());
    let epochs: f64 = args.next().map_or(Ok(20.0), |e| e.parse())?;
    let (config, seed, device) = (Config::seed_gan(), 0, Device::Cpu);
    // $MNIST_DIR, else data/mnist (downloaded there when absent).
    let mnist = mnist::load_or_download(None, Split::Train)?.to_dataset(PixelRange::MinusOneOne)?;
    let nets = Nets::build_for(&config, RaGan.head(), &device, seed)?;
    let step = nets.step_with(Box::new(RaGan), &config, seed)?;
    let batches = SerialIterator::new(Arc::new(mnist), config.batch_size, true, seed)?;
    let updater = nets.updater_with(step, &config, batches, &device)?; // Adam for G and D
    let mut trainer = Trainer::new(updater, IntervalTrigger::epochs(epochs), &out);
    StandardExtensions::new(seed).add_to(&mut trainer, &nets)?;
    if let Some(snapshot) = latest_snapshot(out.as_ref())? {
        trainer.load_state(&State::load(&snapshot, &device)?)?;
    }
    trainer.run()?;
    Ok(())
}
