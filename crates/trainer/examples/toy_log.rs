//! A toy run with the standard extensions, to see what they write.
//!
//! `cargo run -p kusari-trainer --release --example toy_log -- OUT`
//!
//! Fits y = 3x with one weight by Adam: 64 examples, batch 16 (4 iterations
//! an epoch), 20 epochs. Writes `OUT/log`, `OUT/loss.png` and snapshots, and
//! prints the log as a table. `docs/log-format.md` shows its log.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use candle_core::{DType, Device, Tensor};
use kusari_trainer::extensions::{
    FailOnNonNumber, LogReport, PlotReport, PrintReport, ProgressBar, Snapshot,
};
use kusari_trainer::prelude::*;

fn main() -> Result<()> {
    let out = std::env::args()
        .nth(1)
        .context("usage: toy_log OUT (the folder to write the log, plot and snapshots into)")?;

    let xs: Vec<f32> = (0..64).map(|i| i as f32 / 64.0).collect();
    let dataset = ArrayDataset::new(xs, &[1], None)?;
    let iterator = SerialIterator::new(Arc::new(dataset), 16, true, 0)?;
    let params = ParamStore::new();
    let w = params.parameter("w", Tensor::zeros(1, DType::F32, &Device::Cpu)?)?;
    let optimizer = Adam::new(
        params.parameters(),
        AdamConfig {
            lr: 0.1,
            ..Default::default()
        },
    )?;
    let core = move |batch: Batch, ctx: &mut UpdateContext<'_>| -> Result<()> {
        let x = batch.values.flatten_all()?;
        let loss = (x.broadcast_mul(&w)? - (&x * 3.0)?)?.sqr()?.mean_all()?;
        report("main/loss", &loss)?;
        report("main/w", w.as_tensor().mean_all()?)?;
        ctx.optimizers.get_mut("main")?.backward_step(&loss)
    };
    let updater = StandardUpdater::new(iterator, ConcatExamples, Device::Cpu, core)
        .with_model("main", params.clone())
        .with_optimizer("main", optimizer);

    let mut trainer = Trainer::new(updater, IntervalTrigger::epochs(20.0), &out);
    let log = LogReport::new();
    let entries = log.entries();
    let progress = ProgressBar::new();
    let rows = progress.line_writer();
    trainer.extend(log);
    trainer.extend(
        PrintReport::new(
            entries.clone(),
            ["epoch", "iteration", "main/loss", "main/w", "elapsed_time"],
        )
        .to(rows),
    );
    trainer.extend(PlotReport::new(entries, ["main/loss", "main/w"]));
    trainer.extend(progress);
    trainer.extend(FailOnNonNumber::new());
    trainer.extend(Snapshot::new().keep_last(2));
    trainer.run()?;
    Ok(())
}
