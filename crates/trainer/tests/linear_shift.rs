//! [`LinearShift`] on a toy run (12 examples, batch 4: 3 iterations per
//! epoch) whose update reports the learning rate it was given.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use kusari_trainer::extensions::{latest_snapshot, LinearShift, LogReport, ShiftSpan, Snapshot};
use kusari_trainer::prelude::*;
use kusari_trainer::Ending;

const BASE_RATE: f64 = 0.08;

fn toy_trainer(out: &std::path::Path, iterations: u64) -> Result<Trainer<impl Updater + 'static>> {
    let xs: Vec<f32> = (0..12).map(|i| i as f32 / 12.0).collect();
    let iterator = SerialIterator::new(Arc::new(ArrayDataset::new(xs, &[1], None)?), 4, true, 1)?;
    let params = ParamStore::new();
    let w = params.parameter("w", Tensor::zeros(1, DType::F32, &Device::Cpu)?)?;
    let core = move |batch: Batch, ctx: &mut UpdateContext<'_>| -> Result<()> {
        let optimizer = ctx.optimizers.get_mut("main")?;
        report("main/lr", optimizer.learning_rate())?;
        let x = batch.values.flatten_all()?;
        let loss = (x.broadcast_mul(&w)? - &x)?.sqr()?.mean_all()?;
        optimizer.backward_step(&loss)
    };
    let updater = StandardUpdater::new(iterator, ConcatExamples, Device::Cpu, core)
        .with_model("main", params.clone())
        .with_optimizer("main", Sgd::new(params.parameters(), BASE_RATE));
    let mut trainer = Trainer::new(updater, IntervalTrigger::iterations(iterations), out);
    trainer.handle_signals(false);
    trainer.extend(LogReport::new().trigger(IntervalTrigger::iterations(1)));
    Ok(trainer)
}

fn logged_rates(out: &std::path::Path) -> Result<Vec<f64>> {
    let log: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join("log"))?)?;
    Ok(log
        .iter()
        .map(|e| e["main/lr"].as_f64().expect("main/lr logged"))
        .collect())
}

fn assert_close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
    }
}

#[test]
fn the_rate_falls_in_a_line_over_the_iterations_then_stays() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut trainer = toy_trainer(dir.path(), 6)?;
    trainer.extend(LinearShift::new(1.0, 0.0, ShiftSpan::Iterations(4))?);
    trainer.run()?;
    let want: Vec<f64> = [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
        .iter()
        .map(|f| f * BASE_RATE)
        .collect();
    assert_close(&logged_rates(dir.path())?, &want);
    Ok(())
}

/// Six iterations shifting the rate from 1 to 0.5 of its value, with a snapshot after each.
fn shifted_trainer(out: &std::path::Path) -> Result<Trainer<impl Updater + 'static>> {
    let mut trainer = toy_trainer(out, 6)?;
    trainer.extend(LinearShift::new(1.0, 0.5, ShiftSpan::Iterations(6))?);
    trainer
        .extend(Snapshot::new())
        .trigger(IntervalTrigger::iterations(1));
    Ok(trainer)
}

#[test]
fn a_resumed_run_continues_the_line() -> Result<()> {
    let straight = tempfile::tempdir()?;
    shifted_trainer(straight.path())?.run()?;

    let resumed = tempfile::tempdir()?;
    let mut first = shifted_trainer(resumed.path())?;
    let stop = first.stop_handle();
    first.extend(make_extension(
        "stopper",
        IntervalTrigger::iterations(4),
        Priority::WRITER,
        move |_| {
            stop.request_stop();
            Ok(())
        },
    ));
    assert_eq!(first.run()?, Ending::Interrupted);
    let latest = latest_snapshot(resumed.path())?.expect("a snapshot");
    let mut second = shifted_trainer(resumed.path())?;
    second.load_snapshot(&latest, &Device::Cpu)?;
    second.run()?;
    // The resumed optimizer held a shifted rate; the shift must not compound it.
    assert_close(
        &logged_rates(resumed.path())?,
        &logged_rates(straight.path())?,
    );
    Ok(())
}

#[test]
fn a_time_span_reads_the_training_time() -> Result<()> {
    let shift = LinearShift::new(2.0, 0.0, ShiftSpan::Time(Duration::from_secs(100)))?;
    assert!((shift.factor(7, Duration::from_secs(25)) - 1.5).abs() < 1e-12);
    assert_eq!(shift.factor(7, Duration::from_secs(500)), 0.0);
    Ok(())
}

#[test]
fn bad_shifts_are_refused_with_the_reason() {
    let err = LinearShift::new(1.0, f64::NAN, ShiftSpan::Iterations(3)).unwrap_err();
    assert!(err.to_string().contains("finite"), "{err}");
    let err = LinearShift::new(1.0, 0.0, ShiftSpan::Iterations(0)).unwrap_err();
    assert!(err.to_string().contains("at least one iteration"), "{err}");
    let err = LinearShift::new(1.0, 0.0, ShiftSpan::Time(Duration::ZERO)).unwrap_err();
    assert!(err.to_string().contains("above zero"), "{err}");
}
