//! The ready-made extensions on a toy run: 12 examples, batch 4 (3
//! iterations per epoch), fitting y = 3x with one weight, while the update
//! reports values the tests control.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use kusari_trainer::extensions::{
    latest_snapshot, tensorboard, write_image_grid, FailOnNonNumber, LogEntry, LogReport,
    NonFiniteValue, PlotReport, PrintReport, ProgressBar, Snapshot, TensorBoardReport, XAxis,
};
use kusari_trainer::prelude::*;
use kusari_trainer::trigger::Unit;
use kusari_trainer::Ending;
use serde_json::Value;

const ITERATIONS_PER_EPOCH: u64 = 3;

/// The toy updater and its weight. It reports `main/loss`, `main/it` (the
/// iteration), `main/sq` (its square), `main/odd` (on odd iterations only)
/// and, at iteration `nan_at`, `main/bad` = NaN.
fn toy_updater(nan_at: Option<u64>) -> Result<(impl Updater + 'static, ParamStore)> {
    let xs: Vec<f32> = (0..12).map(|i| i as f32 / 12.0).collect();
    let dataset = ArrayDataset::new(xs, &[1], None)?;
    let iterator = SerialIterator::new(Arc::new(dataset), 4, true, 7)?;
    let params = ParamStore::new();
    let w = params.parameter("w", Tensor::zeros(1, DType::F32, &Device::Cpu)?)?;
    let optimizer = Adam::new(
        params.parameters(),
        AdamConfig {
            lr: 0.05,
            ..Default::default()
        },
    )?;
    let core = move |batch: Batch, ctx: &mut UpdateContext<'_>| -> Result<()> {
        let x = batch.values.flatten_all()?;
        let loss = (x.broadcast_mul(&w)? - (&x * 3.0)?)?.sqr()?.mean_all()?;
        report("main/loss", &loss)?;
        let it = ctx.iteration as f64;
        report("main/it", it)?;
        report("main/sq", it * it)?;
        if ctx.iteration % 2 == 1 {
            report("main/odd", it)?;
        }
        if Some(ctx.iteration) == nan_at {
            report("main/bad", f64::NAN)?;
        }
        ctx.optimizers.get_mut("main")?.backward_step(&loss)
    };
    let updater = StandardUpdater::new(iterator, ConcatExamples, Device::Cpu, core)
        .with_model("main", params.clone())
        .with_optimizer("main", optimizer);
    Ok((updater, params))
}

fn toy_trainer(
    out: &Path,
    epochs: f64,
    nan_at: Option<u64>,
) -> Result<(Trainer<impl Updater + 'static>, ParamStore)> {
    let (updater, params) = toy_updater(nan_at)?;
    let mut trainer = Trainer::new(updater, IntervalTrigger::epochs(epochs), out);
    trainer.handle_signals(false);
    Ok((trainer, params))
}

/// Stops the run through its stop handle once `iteration` is done.
fn stop_at<U: Updater + 'static>(trainer: &mut Trainer<U>, iteration: u64) {
    let stop = trainer.stop_handle();
    trainer.extend(make_extension(
        "stopper",
        IntervalTrigger::iterations(1),
        Priority::WRITER,
        move |ctx| {
            if ctx.iteration() == iteration {
                stop.request_stop();
            }
            Ok(())
        },
    ));
}

fn weight(params: &ParamStore) -> Result<Vec<f32>> {
    Ok(params
        .get("w")
        .expect("toy model has w")
        .as_tensor()
        .to_vec1()?)
}

fn read_log(path: &Path) -> Result<Vec<LogEntry>> {
    Ok(serde_json::from_slice(&std::fs::read(path)?)?)
}

fn names_in(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    names.sort();
    Ok(names)
}

fn without_elapsed(mut entries: Vec<LogEntry>) -> Vec<LogEntry> {
    for e in &mut entries {
        assert!(e
            .remove("elapsed_time")
            .and_then(|v| v.as_f64())
            .is_some_and(|t| t >= 0.0));
    }
    entries
}

/// A `Write` whose contents the test can read afterwards.
#[derive(Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn sorted_keys(entry: &LogEntry) -> Vec<&str> {
    let mut keys: Vec<&str> = entry.keys().map(String::as_str).collect();
    keys.sort();
    keys
}

fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let values: Vec<f64> = values.into_iter().collect();
    values.iter().sum::<f64>() / values.len() as f64
}

#[test]
fn log_report_writes_interval_means() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut trainer, _) = toy_trainer(dir.path(), 4.0, None)?;
    // Every 4 iterations while epochs are 3 long: intervals and epochs disagree.
    let log = LogReport::new().trigger(IntervalTrigger::iterations(4));
    let entries = log.entries();
    trainer.extend(log);
    trainer.extend(LogReport::new().keys(["main/it"]).file_name("log_it"));
    assert_eq!(trainer.run()?, Ending::Completed);

    let written = read_log(&dir.path().join("log"))?;
    assert_eq!(written, entries.to_vec());
    assert_eq!(written.len(), 3, "12 iterations, one entry every 4");
    for (k, entry) in written.iter().enumerate() {
        let last = 4 * (k as u64 + 1);
        let its: Vec<u64> = (last - 3..=last).collect();
        assert_eq!(
            sorted_keys(entry),
            [
                "elapsed_time",
                "epoch",
                "iteration",
                "main/it",
                "main/loss",
                "main/odd",
                "main/sq"
            ],
        );
        assert_eq!(entry["iteration"], Value::from(last));
        assert_eq!(entry["epoch"], Value::from(last / ITERATIONS_PER_EPOCH));
        assert_eq!(
            entry["main/it"].as_f64(),
            Some(mean(its.iter().map(|&i| i as f64)))
        );
        assert_eq!(
            entry["main/sq"].as_f64(),
            Some(mean(its.iter().map(|&i| (i * i) as f64)))
        );
        let odd = mean(its.iter().filter(|&&i| i % 2 == 1).map(|&i| i as f64));
        assert_eq!(entry["main/odd"].as_f64(), Some(odd));
        assert!(entry["main/loss"].as_f64().is_some_and(|l| l > 0.0));
    }

    // The default interval is an epoch; chosen keys only.
    let by_epoch = read_log(&dir.path().join("log_it"))?;
    assert_eq!(by_epoch.len(), 4);
    for (e, entry) in by_epoch.iter().enumerate() {
        assert_eq!(
            sorted_keys(entry),
            ["elapsed_time", "epoch", "iteration", "main/it"]
        );
        assert_eq!(entry["epoch"], Value::from(e as u64 + 1));
        assert_eq!(entry["main/it"].as_f64(), Some(3.0 * e as f64 + 2.0));
    }
    let names = names_in(dir.path())?;
    assert_eq!(names, ["log", "log_it"], "temporary files must not survive");
    Ok(())
}

#[test]
fn resumed_run_continues_exactly() -> Result<()> {
    let epochs = 5.0; // 15 iterations
    let with_extensions = |trainer: &mut Trainer<_>| {
        trainer.extend(LogReport::new().trigger(IntervalTrigger::iterations(4)));
        trainer.extend(Snapshot::new());
    };

    let straight = tempfile::tempdir()?;
    let (mut trainer, params) = toy_trainer(straight.path(), epochs, None)?;
    with_extensions(&mut trainer);
    trainer.run()?;
    let straight_log = read_log(&straight.path().join("log"))?;
    let straight_w = weight(&params)?;

    let resumed = tempfile::tempdir()?;
    let (mut first, _) = toy_trainer(resumed.path(), epochs, None)?;
    with_extensions(&mut first);
    // Mid-epoch and mid-log-interval: the snapshot must carry the partial interval.
    stop_at(&mut first, 7);
    assert_eq!(first.run()?, Ending::Interrupted);
    assert_eq!(read_log(&resumed.path().join("log"))?.len(), 1);

    let latest = latest_snapshot(resumed.path())?.expect("the interrupted run left a snapshot");
    assert_eq!(latest, resumed.path().join("snapshot_iter_7"));
    let (mut second, params) = toy_trainer(resumed.path(), epochs, None)?;
    with_extensions(&mut second);
    second.load_snapshot(&latest, &Device::Cpu)?;
    assert_eq!(second.updater().iteration(), 7);
    assert_eq!(second.run()?, Ending::Completed);
    assert_eq!(second.updater().iteration(), 15);

    let resumed_log = read_log(&resumed.path().join("log"))?;
    // Entries at 4, 8, 12, and the completed run's last stretch (13–15).
    assert_eq!(resumed_log.len(), 4);
    assert_eq!(resumed_log[3]["iteration"], 15);
    assert_eq!(without_elapsed(resumed_log), without_elapsed(straight_log));
    assert_eq!(weight(&params)?, straight_w);
    Ok(())
}

#[test]
fn snapshots_keep_the_newest() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut trainer, _) = toy_trainer(dir.path(), 6.0, None)?;
    trainer.extend(Snapshot::new().keep_last(2));
    trainer.run()?;
    assert_eq!(
        names_in(dir.path())?,
        ["snapshot_iter_15", "snapshot_iter_18"]
    );
    assert_eq!(
        latest_snapshot(dir.path())?,
        Some(dir.path().join("snapshot_iter_18"))
    );
    let state = kusari_trainer::State::load(&dir.path().join("snapshot_iter_18"), &Device::Cpu)?;
    assert_eq!(state.get::<u64>("iteration")?, 18);
    Ok(())
}

#[test]
fn an_interrupted_run_snapshots_where_it_stopped() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut trainer, _) = toy_trainer(dir.path(), 10.0, None)?;
    trainer.extend(Snapshot::new());
    stop_at(&mut trainer, 5);
    assert_eq!(trainer.run()?, Ending::Interrupted);
    assert_eq!(
        names_in(dir.path())?,
        ["snapshot_iter_3", "snapshot_iter_5"]
    );
    let state = kusari_trainer::State::load(&dir.path().join("snapshot_iter_5"), &Device::Cpu)?;
    assert_eq!(state.get::<u64>("iteration")?, 5);

    // Stopping right after a regular snapshot writes no second one.
    let dir = tempfile::tempdir()?;
    let (mut trainer, _) = toy_trainer(dir.path(), 10.0, None)?;
    trainer.extend(Snapshot::new());
    stop_at(&mut trainer, 6);
    trainer.run()?;
    assert_eq!(
        names_in(dir.path())?,
        ["snapshot_iter_3", "snapshot_iter_6"]
    );
    Ok(())
}

#[test]
fn a_non_finite_value_fails_the_run_after_a_failure_snapshot() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut trainer, _) = toy_trainer(dir.path(), 10.0, Some(5))?;
    trainer.extend(FailOnNonNumber::new());
    trainer.extend(Snapshot::new());
    let error = trainer.run().expect_err("NaN must stop the run");
    let non_finite = error
        .downcast_ref::<NonFiniteValue>()
        .unwrap_or_else(|| panic!("not a NonFiniteValue: {error:#}"));
    assert_eq!(non_finite.key, "main/bad");
    assert_eq!(non_finite.iteration, 5);
    assert!(non_finite.value.is_nan());
    let message = format!("{error:#}");
    for part in [
        "`main/bad` is NaN at iteration 5",
        "lower learning rate",
        "snapshot",
    ] {
        assert!(message.contains(part), "{message}");
    }
    assert_eq!(
        names_in(dir.path())?,
        ["failure_snapshot_iter_5", "snapshot_iter_3"]
    );
    assert_eq!(
        latest_snapshot(dir.path())?,
        Some(dir.path().join("snapshot_iter_3"))
    );

    // Checking chosen keys only ignores the others.
    let dir = tempfile::tempdir()?;
    let (mut trainer, _) = toy_trainer(dir.path(), 3.0, Some(5))?;
    trainer.extend(FailOnNonNumber::new().keys(["main/loss", "main/it"]));
    assert_eq!(trainer.run()?, Ending::Completed);
    Ok(())
}

#[test]
fn print_report_aligns_columns() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut trainer, _) = toy_trainer(dir.path(), 3.0, None)?;
    let log = LogReport::new();
    let out = SharedBuffer::default();
    let columns = [
        "epoch",
        "iteration",
        "main/it",
        "main/a_long_key_name",
        "elapsed_time",
    ];
    let print = PrintReport::new(log.entries(), columns).to(out.clone());
    // Registered before the log: it must still run after it.
    trainer.extend(print);
    trainer.extend(log);
    trainer.run()?;

    let text = out.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    // Column starts, from the widths: max(12, name length) plus 2 spaces.
    let widths: Vec<usize> = columns.iter().map(|c| c.len().max(12)).collect();
    let starts: Vec<usize> = widths
        .iter()
        .scan(0, |at, w| Some(std::mem::replace(at, *at + w + 2)))
        .collect();
    for (c, &start) in columns.iter().zip(&starts) {
        assert_eq!(&lines[0][start..start + c.len()], *c, "{text}");
    }
    for (e, line) in lines[1..].iter().enumerate() {
        let cell = |j: usize| {
            line.get(starts[j]..(starts[j] + widths[j]).min(line.len()))
                .unwrap_or("")
                .trim()
        };
        assert_eq!(cell(0), (e + 1).to_string(), "{text}");
        assert_eq!(cell(1), (3 * (e + 1)).to_string(), "{text}");
        assert_eq!(cell(2), (3 * e + 2).to_string(), "{text}");
        assert_eq!(cell(3), "", "a key never reported prints blank: {text}");
        assert!(cell(4).parse::<f64>().is_ok(), "{text}");
        for j in 1..columns.len() {
            assert_eq!(&line[starts[j] - 2..starts[j]], "  ", "{text}");
        }
    }
    Ok(())
}

#[test]
fn progress_prints_plain_lines_with_eta() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut trainer, _) = toy_trainer(dir.path(), 5.0, None)?;
    let out = SharedBuffer::default();
    trainer.extend(
        ProgressBar::new()
            .lines_to(out.clone())
            .line_every_iterations(5),
    );
    trainer.run()?;
    let text = out.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].starts_with("iteration 5/15 (33.3%) · epoch 1 · "),
        "{text}"
    );
    assert!(
        lines[1].starts_with("iteration 10/15 (66.7%) · epoch 3 · "),
        "{text}"
    );
    assert!(lines[1].contains(" it/s · ETA 0:00:0"), "{text}");
    assert!(
        lines[3].starts_with("finished at iteration 15/15 (100.0%) · epoch 5"),
        "{text}"
    );
    Ok(())
}

#[test]
fn plot_report_writes_a_png_of_the_configured_size() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut trainer, _) = toy_trainer(dir.path(), 4.0, None)?;
    let log = LogReport::new().trigger(IntervalTrigger::iterations(1));
    let entries = log.entries();
    trainer.extend(log);
    trainer.extend(PlotReport::new(entries.clone(), ["main/loss", "main/odd"]).size(500, 320));
    trainer.extend(
        PlotReport::new(entries, ["main/it"])
            .file_name("it.png")
            .x_axis(XAxis::Iteration),
    );
    trainer.run()?;

    for (name, size) in [("loss.png", (500, 320)), ("it.png", (640, 480))] {
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(
            dir.path().join(name),
        )?));
        let mut reader = decoder.read_info()?;
        let mut pixels = vec![0; reader.output_buffer_size().expect("small image")];
        let info = reader.next_frame(&mut pixels)?;
        assert_eq!((info.width, info.height), size, "{name}");
        assert_eq!(info.color_type, png::ColorType::Rgb);
        let rgb: Vec<&[u8]> = pixels.chunks_exact(3).collect();
        // The first series is drawn in its color, and text and axes in black.
        let first_color = rgb.iter().filter(|p| **p == [31, 119, 180]).count();
        assert!(
            first_color > 200,
            "{name}: {first_color} pixels of the first series"
        );
        assert!(
            rgb.iter().filter(|p| **p == [0, 0, 0]).count() > 200,
            "{name}: no axes or text"
        );
    }
    Ok(())
}

#[test]
fn image_grids_have_the_expected_size_and_values() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let decode = |path: &Path| -> Result<(u32, u32, png::ColorType, Vec<u8>)> {
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path)?));
        let mut reader = decoder.read_info()?;
        let mut pixels = vec![0; reader.output_buffer_size().expect("small image")];
        let info = reader.next_frame(&mut pixels)?;
        pixels.truncate(info.buffer_size());
        Ok((info.width, info.height, info.color_type, pixels))
    };

    // 5 gray 4x3 images, 3 columns: 2 rows.
    let gray = Tensor::zeros((5, 1, 4, 3), DType::F32, &Device::Cpu)?.affine(1.0, -1.0)?;
    let path = dir.path().join("gray.png");
    write_image_grid(&path, &gray, 3, (-1.0, 1.0))?;
    let (w, h, color, pixels) = decode(&path)?;
    assert_eq!(
        (w, h, color),
        (3 * 3 + 2, 2 * 4 + 1, png::ColorType::Grayscale)
    );
    assert_eq!(pixels[0], 0, "-1 maps to black");
    assert_eq!(pixels[3], 255, "the gap between tiles is white");

    // 2 RGB 4x4 images with 4 columns asked: one row of 2.
    let values: Vec<f32> = (0..2 * 3 * 16)
        .map(|i| if i % 16 == 0 { 2.0 } else { 0.0 })
        .collect();
    let rgb = Tensor::from_vec(values, (2, 3, 4, 4), &Device::Cpu)?;
    let path = dir.path().join("rgb.png");
    write_image_grid(&path, &rgb, 4, (-1.0, 1.0))?;
    let (w, h, color, pixels) = decode(&path)?;
    assert_eq!((w, h, color), (2 * 4 + 1, 4, png::ColorType::Rgb));
    assert_eq!(
        &pixels[..6],
        &[255, 255, 255, 128, 128, 128],
        "2 clamps to 255, 0 maps to 128"
    );

    let err = write_image_grid(
        &path,
        &Tensor::zeros((1, 2, 4, 4), DType::F32, &Device::Cpu)?,
        1,
        (0.0, 1.0),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("1 (gray) or 3 (RGB) channels"),
        "{err}"
    );
    let err = write_image_grid(&path, &gray, 3, (1.0, 1.0)).unwrap_err();
    assert!(err.to_string().contains("low < high"), "{err}");
    assert_eq!(names_in(dir.path())?, ["gray.png", "rgb.png"]);
    Ok(())
}

#[test]
fn context_knows_the_planned_length() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut trainer, _) = toy_trainer(dir.path(), 2.0, None)?;
    let seen = Arc::new(Mutex::new(None));
    let record = seen.clone();
    trainer.extend(make_extension(
        "length",
        IntervalTrigger::iterations(1),
        Priority::READER,
        move |ctx| {
            let length = ctx
                .training_length()
                .expect("an interval stop trigger has a length");
            *record.lock().unwrap() = Some((
                length.unit,
                length.period,
                ctx.planned_iterations(),
                ctx.extension_name().to_string(),
            ));
            Ok(())
        },
    ));
    trainer.run()?;
    assert_eq!(
        *seen.lock().unwrap(),
        Some((Unit::Epoch, 2.0, Some(6.0), "length".to_string()))
    );
    Ok(())
}

/// `(tag, step, value)` of scalars.
type Scalars = Vec<(String, u64, f32)>;

/// Every scalar in the run's event files, and how many files there are.
fn tensorboard_scalars(dir: &Path) -> Result<(usize, Scalars)> {
    let files = tensorboard::event_files(dir)?;
    let mut scalars = vec![];
    for file in &files {
        let events = tensorboard::read_events(file)?;
        assert_eq!(
            events[0].file_version.as_deref(),
            Some("brain.Event:2"),
            "an event file opens with its version"
        );
        for event in events {
            for value in event.values {
                if let tensorboard::SummaryKind::Scalar(v) = value.kind {
                    scalars.push((value.tag, event.step, v));
                }
            }
        }
    }
    Ok((files.len(), scalars))
}

#[test]
fn tensorboard_holds_the_logs_means_and_a_resumed_run_writes_each_step_once() -> Result<()> {
    let epochs = 5.0; // 15 iterations
    let with_extensions = |trainer: &mut Trainer<_>| {
        let log = LogReport::new().trigger(IntervalTrigger::iterations(4));
        let entries = log.entries();
        trainer.extend(log);
        trainer.extend(TensorBoardReport::new(entries).every_iteration(true));
        trainer.extend(Snapshot::new());
    };

    let straight = tempfile::tempdir()?;
    let (mut trainer, _) = toy_trainer(straight.path(), epochs, None)?;
    with_extensions(&mut trainer);
    trainer.run()?;
    let (files, straight_scalars) = tensorboard_scalars(straight.path())?;
    assert_eq!(files, 1);
    // Every number of every log entry, at the entry's iteration.
    let log = read_log(&straight.path().join("log"))?;
    let mut expected = vec![];
    for entry in &log {
        let step = entry["iteration"].as_u64().unwrap();
        for (key, value) in entry {
            if key != "iteration" {
                expected.push((key.clone(), step, value.as_f64().unwrap() as f32));
            }
        }
    }
    let interval: Vec<_> = straight_scalars
        .iter()
        .filter(|(tag, _, _)| !tag.starts_with("iteration/"))
        .cloned()
        .collect();
    assert_eq!(interval, expected);
    let per_iteration = straight_scalars
        .iter()
        .filter(|(tag, _, _)| tag == "iteration/main/loss")
        .count();
    assert_eq!(per_iteration, 15);

    // Interrupted at 7 (mid-interval), then a crash after the snapshot
    // appends what the resumed run will write again: the resume cuts it off.
    let resumed = tempfile::tempdir()?;
    let (mut first, _) = toy_trainer(resumed.path(), epochs, None)?;
    with_extensions(&mut first);
    stop_at(&mut first, 7);
    assert_eq!(first.run()?, Ending::Interrupted);
    let file = tensorboard::event_files(resumed.path())?.remove(0);
    let mut bytes = std::fs::read(&file)?;
    let tail = bytes[bytes.len() - 60..].to_vec();
    bytes.extend_from_slice(&tail);
    std::fs::write(&file, &bytes)?;
    let latest = latest_snapshot(resumed.path())?.expect("a snapshot");
    let (mut second, _) = toy_trainer(resumed.path(), epochs, None)?;
    with_extensions(&mut second);
    second.load_snapshot(&latest, &Device::Cpu)?;
    assert_eq!(second.run()?, Ending::Completed);
    let (files, resumed_scalars) = tensorboard_scalars(resumed.path())?;
    assert_eq!(files, 1, "the resumed run continues the same file");
    let timeless = |scalars: Scalars| -> Scalars {
        scalars
            .into_iter()
            .filter(|(tag, _, _)| tag != "elapsed_time")
            .collect()
    };
    assert_eq!(timeless(resumed_scalars), timeless(straight_scalars));
    Ok(())
}

/// Sleeps at every call; counts as training time or not.
struct Slow {
    training: bool,
}

impl Extension for Slow {
    fn name(&self) -> String {
        "slow".into()
    }
    fn counts_as_training_time(&self) -> bool {
        self.training
    }
    fn call(&mut self, _ctx: &mut Context<'_>) -> Result<()> {
        std::thread::sleep(std::time::Duration::from_millis(50));
        Ok(())
    }
}

#[test]
fn time_in_extensions_that_are_not_training_is_left_out_of_the_clock() -> Result<()> {
    let mut elapsed = vec![];
    for training in [true, false] {
        let dir = tempfile::tempdir()?;
        let (mut trainer, _) = toy_trainer(dir.path(), 2.0, None)?; // 6 iterations
        trainer.extend(Slow { training });
        trainer.run()?;
        elapsed.push(trainer.elapsed().as_secs_f64());
    }
    assert!(elapsed[0] >= 0.3, "six 50 ms calls count: {elapsed:?}");
    assert!(
        elapsed[1] < 0.15,
        "six 50 ms calls do not count: {elapsed:?}"
    );
    Ok(())
}
