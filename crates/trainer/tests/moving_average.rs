//! [`MovingAverage`] on a toy run whose update sets the model's only
//! parameter to the iteration number and its buffer to twice that, so the
//! average has a closed form.

use std::sync::{Arc, Mutex};

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use kusari_trainer::extensions::{latest_snapshot, MovingAverage, Snapshot};
use kusari_trainer::prelude::*;
use kusari_trainer::{Ending, State};

const DECAY: f64 = 0.8;

/// The model's store: parameter `w` and buffer `b`, both `[2]`.
fn model() -> Result<ParamStore> {
    let store = ParamStore::new();
    store.parameter("w", Tensor::zeros(2, DType::F32, &Device::Cpu)?)?;
    store.buffer("b", Tensor::zeros(2, DType::F32, &Device::Cpu)?)?;
    Ok(store)
}

fn scalar(store: &ParamStore, name: &str) -> Result<f64> {
    Ok(store
        .get(name)
        .expect("a variable")
        .as_tensor()
        .get(0)?
        .to_scalar::<f32>()? as f64)
}

/// A run of `iterations` updates averaging the model into a store it returns,
/// and the averages seen after each iteration.
fn averaged_run(
    out: &std::path::Path,
    iterations: u64,
    stop_after: Option<u64>,
) -> Result<(Trainer<impl Updater + 'static>, Arc<Mutex<Vec<f64>>>)> {
    let iterator = SerialIterator::new(
        Arc::new(ArrayDataset::new(vec![0.0; 4], &[1], None)?),
        2,
        true,
        0,
    )?;
    let live = model()?;
    let average = model()?;
    let (w, b) = (live.get("w").unwrap(), live.get("b").unwrap());
    let core = move |_: Batch, ctx: &mut UpdateContext<'_>| -> Result<()> {
        let n = ctx.iteration as f32;
        w.set(&Tensor::new(&[n, n], &Device::Cpu)?)?;
        b.set(&Tensor::new(&[2.0 * n, 2.0 * n], &Device::Cpu)?)?;
        Ok(())
    };
    let updater = StandardUpdater::new(iterator, ConcatExamples, Device::Cpu, core)
        .with_model("main", live.clone());
    let mut trainer = Trainer::new(updater, IntervalTrigger::iterations(iterations), out);
    trainer.handle_signals(false);
    trainer.extend(MovingAverage::new(live, average.clone(), DECAY)?.named("main_average"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let reader = average.clone();
    trainer.extend(make_extension(
        "reader",
        IntervalTrigger::iterations(1),
        Priority::WRITER,
        move |_| {
            log.lock().unwrap().push(scalar(&reader, "w")?);
            Ok(())
        },
    ));
    trainer
        .extend(Snapshot::new())
        .trigger(IntervalTrigger::iterations(1));
    if let Some(k) = stop_after {
        let stop = trainer.stop_handle();
        trainer.extend(make_extension(
            "stopper",
            IntervalTrigger::iterations(k),
            Priority::READER,
            move |_| {
                stop.request_stop();
                Ok(())
            },
        ));
    }
    Ok((trainer, seen))
}

/// The closed form: the average starts at the initial 0, then mixes in 1, 2, 3, ….
fn expected(iterations: u64, average: &MovingAverage) -> Vec<f64> {
    let mut a = 0.0;
    (0..iterations)
        .map(|k| {
            let d = average.decay_at(k);
            a = d * a + (1.0 - d) * (k + 1) as f64;
            a
        })
        .collect()
}

fn assert_close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
    }
}

#[test]
fn the_average_follows_the_warmed_up_decay_and_readers_see_this_iteration() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut trainer, seen) = averaged_run(dir.path(), 8, None)?;
    trainer.run()?;
    let reference = MovingAverage::new(model()?, model()?, DECAY)?;
    // Warm-up: the first steps weigh the new weights heavily, then the decay caps at 0.8.
    assert_eq!(reference.decay_at(0), 0.1);
    assert_eq!(reference.decay_at(100), DECAY);
    let want = expected(8, &reference);
    assert_close(&seen.lock().unwrap(), &want);
    // Buffers are averaged the same way (the buffer is 2 × the parameter).
    let snapshot = State::load(
        &latest_snapshot(dir.path())?.expect("a snapshot"),
        &Device::Cpu,
    )?;
    let b = snapshot
        .tensor("extensions/main_average/average/b")?
        .get(0)?
        .to_scalar::<f32>()? as f64;
    assert!(
        (b - 2.0 * want[7]).abs() < 1e-4,
        "buffer {b} vs {}",
        2.0 * want[7]
    );
    Ok(())
}

#[test]
fn a_resumed_run_continues_the_average_exactly() -> Result<()> {
    let straight = tempfile::tempdir()?;
    let (mut trainer, seen_straight) = averaged_run(straight.path(), 6, None)?;
    trainer.run()?;

    let resumed = tempfile::tempdir()?;
    let (mut first, seen_first) = averaged_run(resumed.path(), 6, Some(4))?;
    assert_eq!(first.run()?, Ending::Interrupted);
    let latest = latest_snapshot(resumed.path())?.expect("a snapshot");
    let (mut second, seen_second) = averaged_run(resumed.path(), 6, None)?;
    second.load_snapshot(&latest, &Device::Cpu)?;
    second.run()?;
    let mut resumed_seen = seen_first.lock().unwrap().clone();
    assert_eq!(resumed_seen.len(), 4);
    resumed_seen.extend(seen_second.lock().unwrap().iter());
    let straight_seen = seen_straight.lock().unwrap().clone();
    assert_eq!(resumed_seen, straight_seen, "bit for bit");
    Ok(())
}

#[test]
fn bad_settings_are_refused_with_the_reason() -> Result<()> {
    for decay in [1.0, -0.1, f64::NAN] {
        let err = MovingAverage::new(model()?, model()?, decay).unwrap_err();
        assert!(err.to_string().contains("[0, 1)"), "{err}");
    }
    let other = ParamStore::new();
    other.parameter("w", Tensor::zeros(3, DType::F32, &Device::Cpu)?)?;
    let err = MovingAverage::new(model()?, other, 0.9).unwrap_err();
    assert!(err.to_string().contains("same variables"), "{err}");
    Ok(())
}
