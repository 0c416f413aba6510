//! The training loop as a whole: extension order, error paths, graceful
//! stops, several optimizers per update, and exact resume.

use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use kusari_trainer::prelude::*;
use kusari_trainer::{Ending, Status};

type Log = Arc<Mutex<Vec<String>>>;

/// y = 2x + 1 on 100 points; two one-parameter models, "slope" and "offset",
/// each with its own optimizer.
fn toy_data() -> Result<Arc<ArrayDataset>> {
    let mut values = Vec::new();
    for i in 0..100 {
        let x = i as f32 / 100.0;
        values.extend_from_slice(&[x, 2.0 * x + 1.0]);
    }
    Ok(Arc::new(ArrayDataset::new(values, &[2], None)?))
}

struct TwoModels {
    slope: candle_core::Var,
    offset: candle_core::Var,
}

impl UpdateCore<Batch> for TwoModels {
    fn update_core(&mut self, batch: Batch, ctx: &mut UpdateContext<'_>) -> Result<()> {
        let x = batch.values.narrow(1, 0, 1)?;
        let y = batch.values.narrow(1, 1, 1)?;
        let predict = |slope: &Tensor, offset: &Tensor| -> Result<Tensor> {
            Ok(x.broadcast_mul(slope)?.broadcast_add(offset)?)
        };
        // Each model's step sees the other as a constant (detached), as a GAN's two players do.
        let loss_slope = (predict(self.slope.as_tensor(), &self.offset.as_tensor().detach())?
            - &y)?
            .sqr()?
            .mean_all()?;
        let loss_offset = (predict(&self.slope.as_tensor().detach(), self.offset.as_tensor())?
            - &y)?
            .sqr()?
            .mean_all()?;
        let grads_slope = loss_slope.backward()?;
        let grads_offset = loss_offset.backward()?;
        ctx.optimizers.get_mut("slope")?.step(&grads_slope)?;
        ctx.optimizers.get_mut("offset")?.step(&grads_offset)?;
        with_prefix("main", || report("loss", &loss_slope))?;
        Ok(())
    }
}

fn toy_trainer(
    out: &std::path::Path,
    stop: impl Trigger + 'static,
    seed: u64,
) -> Result<Trainer<impl Updater>> {
    let iterator = SerialIterator::new(toy_data()?, 10, true, seed)?;
    let slope = ParamStore::new();
    let offset = ParamStore::new();
    let core = TwoModels {
        slope: slope.parameter("w", Tensor::zeros(1, DType::F32, &Device::Cpu)?)?,
        offset: offset.parameter("b", Tensor::zeros(1, DType::F32, &Device::Cpu)?)?,
    };
    let config = AdamConfig {
        lr: 0.05,
        ..Default::default()
    };
    let updater = StandardUpdater::new(iterator, ConcatExamples, Device::Cpu, core)
        .with_optimizer("slope", Adam::new(slope.parameters(), config)?)
        .with_optimizer("offset", Adam::new(offset.parameters(), config)?)
        .with_model("slope", slope)
        .with_model("offset", offset);
    let mut trainer = Trainer::new(updater, stop, out);
    trainer.handle_signals(false);
    Ok(trainer)
}

fn recorder(log: &Log) -> impl Extension {
    let log = log.clone();
    make_extension(
        "record",
        IntervalTrigger::epochs(1.0),
        Priority::READER,
        move |ctx| {
            let loss = ctx
                .observation()
                .scalar("main/loss")?
                .expect("loss reported");
            log.lock().unwrap().push(format!("{} {loss}", ctx.epoch()));
            Ok(())
        },
    )
}

#[test]
fn two_optimizers_drive_the_loop_to_a_lower_loss() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut trainer = toy_trainer(dir.path(), IntervalTrigger::epochs(30.0), 1)?;
    let log: Log = Default::default();
    trainer.extend(recorder(&log));
    assert_eq!(trainer.run()?, Ending::Completed);

    let updater = trainer.updater();
    assert_eq!(updater.iteration(), 300);
    assert_eq!(updater.epoch(), 30);
    let lines = log.lock().unwrap().clone();
    assert_eq!(lines.len(), 30, "one record per epoch");
    let loss = |line: &String| line.split(' ').nth(1).unwrap().parse::<f64>().unwrap();
    let (first, last) = (loss(&lines[0]), loss(lines.last().unwrap()));
    assert!(last < first / 100.0, "loss went from {first} to {last}");
    Ok(())
}

#[test]
fn each_optimizer_counts_its_own_steps() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut trainer = toy_trainer(dir.path(), IntervalTrigger::iterations(7), 1)?;
    trainer.run()?;
    let state = trainer.state()?;
    let optimizers = state.child("updater").child("optimizers");
    assert_eq!(optimizers.child("slope").get::<u64>("steps")?, 7);
    assert_eq!(optimizers.child("offset").get::<u64>("steps")?, 7);
    Ok(())
}

#[test]
fn extensions_run_in_priority_order() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut trainer = toy_trainer(dir.path(), IntervalTrigger::iterations(2), 1)?;
    let order: Log = Default::default();
    for (name, priority) in [
        ("reader", Priority::READER),
        ("writer", Priority::WRITER),
        ("last", Priority::LAST),
        ("editor", Priority::EDITOR),
    ] {
        let order = order.clone();
        trainer.extend(make_extension(
            name,
            IntervalTrigger::iterations(1),
            priority,
            move |ctx| {
                order
                    .lock()
                    .unwrap()
                    .push(format!("{}:{name}", ctx.iteration()));
                Ok(())
            },
        ));
    }
    trainer.run()?;
    let order = order.lock().unwrap().clone();
    assert_eq!(
        order,
        vec![
            "1:writer", "1:editor", "1:reader", "1:last", "2:writer", "2:editor", "2:reader",
            "2:last"
        ]
    );
    Ok(())
}

#[test]
fn duplicate_names_get_suffixes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut trainer = toy_trainer(dir.path(), IntervalTrigger::iterations(1), 1)?;
    for _ in 0..3 {
        trainer.extend(make_extension(
            "same",
            IntervalTrigger::iterations(1),
            Priority::READER,
            |_| Ok(()),
        ));
    }
    trainer
        .extend(make_extension(
            "x",
            IntervalTrigger::iterations(1),
            Priority::READER,
            |_| Ok(()),
        ))
        .name("same");
    assert_eq!(
        trainer.extension_names(),
        vec!["same", "same_1", "same_2", "same_3"]
    );
    Ok(())
}

/// Records which hooks ran and with what ending.
struct Hooks(Log);

impl Extension for Hooks {
    fn name(&self) -> String {
        "hooks".into()
    }
    fn initialize(&mut self, _ctx: &mut Context<'_>) -> Result<()> {
        self.0.lock().unwrap().push("initialize".into());
        Ok(())
    }
    fn call(&mut self, _ctx: &mut Context<'_>) -> Result<()> {
        Ok(())
    }
    fn on_error(&mut self, _ctx: &mut Context<'_>, error: &anyhow::Error) -> Result<()> {
        self.0
            .lock()
            .unwrap()
            .push(format!("on_error: {}", error.root_cause()));
        Ok(())
    }
    fn finalize(&mut self, ctx: &mut Context<'_>, ending: Ending) -> Result<()> {
        self.0
            .lock()
            .unwrap()
            .push(format!("finalize {ending:?} at {}", ctx.iteration()));
        Ok(())
    }
}

#[test]
fn finalize_runs_when_update_core_fails_and_the_error_reaches_the_caller() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let iterator = SerialIterator::new(toy_data()?, 10, false, 0)?;
    let core = |_batch: Batch, ctx: &mut UpdateContext<'_>| -> Result<()> {
        if ctx.iteration == 3 {
            bail!("the loss exploded");
        }
        Ok(())
    };
    let updater = StandardUpdater::new(iterator, ConcatExamples, Device::Cpu, core);
    let mut trainer = Trainer::new(updater, IntervalTrigger::iterations(10), dir.path());
    trainer.handle_signals(false);
    let log: Log = Default::default();
    trainer.extend(Hooks(log.clone()));
    let err = trainer.run().unwrap_err();
    assert!(format!("{err:#}").contains("the loss exploded"), "{err:#}");
    assert!(format!("{err:#}").contains("iteration 3"), "{err:#}");
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        vec![
            "initialize",
            "on_error: the loss exploded",
            "finalize Failed at 2"
        ]
    );
    Ok(())
}

#[test]
fn a_stop_request_ends_gracefully_with_finalize() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut trainer = toy_trainer(dir.path(), IntervalTrigger::iterations(100), 1)?;
    let log: Log = Default::default();
    trainer.extend(Hooks(log.clone()));
    let stop = trainer.stop_handle();
    trainer.extend(make_extension(
        "ctrl-c",
        IntervalTrigger::iterations(5),
        Priority::READER,
        move |_| {
            stop.request_stop();
            Ok(())
        },
    ));
    assert_eq!(trainer.run()?, Ending::Interrupted);
    assert_eq!(trainer.updater().iteration(), 5);
    assert_eq!(
        log.lock().unwrap().last().unwrap(),
        "finalize Interrupted at 5"
    );
    Ok(())
}

#[test]
fn an_extension_error_stops_the_run() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut trainer = toy_trainer(dir.path(), IntervalTrigger::iterations(100), 1)?;
    trainer.extend(make_extension(
        "fails",
        IntervalTrigger::iterations(4),
        Priority::READER,
        |_| bail!("disk full"),
    ));
    let err = trainer.run().unwrap_err();
    assert!(
        format!("{err:#}").contains("extension `fails`: disk full"),
        "{err:#}"
    );
    assert_eq!(trainer.updater().iteration(), 4);
    Ok(())
}

#[test]
fn an_unwritable_output_folder_is_a_clear_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, b"")?;
    let mut trainer = toy_trainer(&file.join("out"), IntervalTrigger::iterations(1), 1)?;
    let err = trainer.run().unwrap_err().to_string();
    assert!(
        err.contains("cannot create output folder") && err.contains("--out"),
        "{err}"
    );
    Ok(())
}

fn parameters(trainer: &mut Trainer<impl Updater + 'static>) -> Result<Vec<f32>> {
    let state = trainer.state()?;
    let models = state.child("updater").child("models");
    Ok(vec![
        models.tensor("slope/w")?.to_vec1::<f32>()?[0],
        models.tensor("offset/b")?.to_vec1::<f32>()?[0],
    ])
}

#[test]
fn a_resumed_run_continues_exactly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let trace = |log: &Log| {
        let log = log.clone();
        make_extension(
            "trace",
            IntervalTrigger::iterations(1),
            Priority::READER,
            move |ctx| {
                let loss = ctx.observation().scalar("main/loss")?.unwrap();
                log.lock().unwrap().push(format!(
                    "{} {} {loss:?}",
                    ctx.iteration(),
                    ctx.epoch_detail()
                ));
                Ok(())
            },
        )
    };

    let full_log: Log = Default::default();
    let mut full = toy_trainer(&dir.path().join("full"), IntervalTrigger::iterations(25), 3)?;
    full.extend(trace(&full_log));
    full.run()?;

    let first_log: Log = Default::default();
    let mut first = toy_trainer(&dir.path().join("a"), IntervalTrigger::iterations(13), 3)?;
    first.extend(trace(&first_log));
    first.run()?;
    let snapshot = dir.path().join("a/snapshot");
    first.save_snapshot(&snapshot)?;

    let second_log: Log = Default::default();
    let mut second = toy_trainer(&dir.path().join("b"), IntervalTrigger::iterations(25), 99)?;
    second.extend(trace(&second_log));
    second.load_snapshot(&snapshot, &Device::Cpu)?;
    second.run()?;

    let mut stitched = first_log.lock().unwrap().clone();
    stitched.extend(second_log.lock().unwrap().iter().cloned());
    assert_eq!(stitched, *full_log.lock().unwrap());
    assert_eq!(parameters(&mut second)?, parameters(&mut full)?);
    Ok(())
}

#[test]
fn a_snapshot_of_another_model_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut trainer = toy_trainer(dir.path(), IntervalTrigger::iterations(2), 1)?;
    trainer.run()?;
    let path = dir.path().join("snap");
    trainer.save_snapshot(&path)?;

    let iterator = SerialIterator::new(toy_data()?, 10, true, 0)?;
    let other = ParamStore::new();
    other.parameter("w", Tensor::zeros(3, DType::F32, &Device::Cpu)?)?;
    let updater = StandardUpdater::new(
        iterator,
        ConcatExamples,
        Device::Cpu,
        |_: Batch, _: &mut UpdateContext<'_>| Ok(()),
    )
    .with_model("slope", other);
    let mut mismatched = Trainer::new(updater, IntervalTrigger::iterations(2), dir.path());
    let err = format!(
        "{:#}",
        mismatched.load_snapshot(&path, &Device::Cpu).unwrap_err()
    );
    assert!(err.contains("different architecture"), "{err}");
    Ok(())
}

#[test]
fn triggers_see_the_status_of_the_iteration() -> Result<()> {
    // 100 examples, batch 30 (Fill): epoch rolls over on iteration 4.
    let dir = tempfile::tempdir()?;
    let iterator = SerialIterator::new(toy_data()?, 30, false, 0)?;
    let updater = StandardUpdater::new(
        iterator,
        ConcatExamples,
        Device::Cpu,
        |_: Batch, _: &mut UpdateContext<'_>| Ok(()),
    );
    let mut trainer = Trainer::new(updater, IntervalTrigger::iterations(8), dir.path());
    trainer.handle_signals(false);
    let seen: Log = Default::default();
    let s = seen.clone();
    struct Spy(Log);
    impl Trigger for Spy {
        fn check(&mut self, status: &Status<'_>) -> Result<bool> {
            self.0.lock().unwrap().push(format!(
                "{}:{}:{}",
                status.iteration, status.epoch, status.is_new_epoch
            ));
            Ok(status.is_new_epoch)
        }
    }
    let fired: Log = Default::default();
    let f = fired.clone();
    trainer.extend(make_extension(
        "epoch",
        Spy(s),
        Priority::READER,
        move |ctx| {
            f.lock().unwrap().push(ctx.iteration().to_string());
            Ok(())
        },
    ));
    trainer.run()?;
    assert_eq!(seen.lock().unwrap()[3], "4:1:true");
    assert_eq!(*fired.lock().unwrap(), vec!["4", "7"]);
    Ok(())
}

/// An update that draws two more batches from the iterator (as K critic
/// steps do): epochs count all three, and the updater says which updates
/// crossed an epoch's end, so epoch triggers fire on them.
#[test]
fn an_update_may_draw_several_batches() -> Result<()> {
    // 12 examples in batches of 2: 6 batches an epoch, 3 per update.
    let data = || -> Result<Arc<ArrayDataset>> {
        let values: Vec<f32> = (0..12).map(|i| i as f32).collect();
        Ok(Arc::new(ArrayDataset::new(values, &[1], None)?))
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let core = move |batch: Batch, ctx: &mut UpdateContext<'_>| -> Result<()> {
        let err = ctx.next_batch::<String>().unwrap_err().to_string();
        assert!(err.contains("String"), "{err}");
        let drawn = [
            batch,
            ctx.next_batch::<Batch>()?,
            ctx.next_batch::<Batch>()?,
        ];
        for b in drawn {
            sink.lock()
                .unwrap()
                .extend(b.values.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(())
    };
    let iterator = SerialIterator::new(data()?, 2, false, 0)?;
    let mut updater = StandardUpdater::new(iterator, ConcatExamples, Device::Cpu, core);
    let mut marks = Vec::new();
    for _ in 0..4 {
        updater.update()?;
        marks.push((
            updater.epoch(),
            updater.is_new_epoch(),
            updater.previous_epoch_detail(),
        ));
    }
    // A refused type draws nothing: every example was seen twice.
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_by(f32::total_cmp);
    let twice: Vec<f32> = (0..24).map(|i| (i / 2) as f32).collect();
    assert_eq!(seen, twice);
    assert_eq!(
        marks,
        vec![
            (0, false, Some(0.0)),
            (1, true, Some(0.5)),
            (1, false, Some(1.0)),
            (2, true, Some(1.5)),
        ]
    );
    // The record survives a snapshot.
    let mut fresh = StandardUpdater::new(
        SerialIterator::new(data()?, 2, false, 0)?,
        ConcatExamples,
        Device::Cpu,
        |_: Batch, _: &mut UpdateContext<'_>| Ok(()),
    );
    fresh.load_state(&updater.state()?)?;
    assert_eq!(
        (
            fresh.epoch(),
            fresh.is_new_epoch(),
            fresh.previous_epoch_detail()
        ),
        (2, true, Some(1.5))
    );
    Ok(())
}
