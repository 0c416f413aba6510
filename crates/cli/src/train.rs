//! `kusari train`: resolve the configuration, build data, nets, updater and
//! extensions, and run the trainer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use kusari_models::extensions::{GeneratedImages, StandardExtensions};
use kusari_models::{Generator, Nets, ObjectiveConfig, GEN_AVERAGE_EXTENSION};
use kusari_trainer::datasets::{image_folder::ImageFolder, mnist, Split};
use kusari_trainer::extensions::{
    latest_snapshot, LinearShift, MovingAverage, NonFiniteValue, ShiftSpan,
};
use kusari_trainer::fsutil::{ensure_writable_dir, write_atomic};
use kusari_trainer::{
    AnyOf, ArrayDataset, Dataset, Ending, IntervalTrigger, Rng, SerialIterator, State, TimeTrigger,
    Trainer, Trigger, Unit, Updater,
};

use crate::args::{DatasetKind, LrDecay, TrainArgs};
use crate::config::{apply_flags, default_out_dir, DataConfig, RunConfig, SNAPSHOT_KEY};
use kusari_trainer::device::parse_device as device_from_flag;

/// Runs `kusari train` and returns how the run ended.
pub fn run(args: &TrainArgs) -> Result<Ending> {
    let device = device_from_flag(&args.device)?;
    let (config, out, resume) = resolve(args, &device)?;
    ensure_writable_dir(&out)?;
    write_atomic(
        &out.join("args.json"),
        &serde_json::to_vec_pretty(&args_json(&config, &out, &device))?,
    )?;

    let dataset = load_dataset(&config)?;
    let nets = Nets::build(&config.model, &device, config.seed)?;
    let iterator = SerialIterator::new(
        Arc::new(dataset.clone()),
        config.model.batch_size,
        true,
        config.seed,
    )
    .context("setting up the batches (check --batch-size)")?;
    let updater = nets.updater(&config.model, iterator, &device, config.seed)?;

    let mut trainer = Trainer::new(updater, stop_trigger(&config), &out);
    trainer
        .metadata_mut()
        .insert(SNAPSHOT_KEY.into(), serde_json::to_value(&config)?);
    add_extensions(&mut trainer, &config, &nets, &dataset)?;

    if let Some((path, state)) = &resume {
        trainer
            .load_state(state)
            .with_context(|| format!("resuming from {}", path.display()))?;
        if config.lr_decay == LrDecay::None {
            // The snapshot may hold rates a decay had lowered; without one,
            // the run goes on at the configured rates.
            let optimizers = trainer.updater_mut().optimizers_mut();
            optimizers
                .get_mut("gen")?
                .set_learning_rate(config.model.gen_optimizer.lr());
            optimizers
                .get_mut("dis")?
                .set_learning_rate(config.model.dis_optimizer.lr());
        }
        eprintln!(
            "resuming from {} (iteration {})",
            path.display(),
            trainer.updater().iteration()
        );
    }
    eprintln!("writing to {}", out.display());
    match trainer.run() {
        Ok(ending) => {
            if ending == Ending::Interrupted {
                eprintln!(
                    "stopped; continue with: kusari train {} --out {} --resume",
                    config.kind,
                    out.display()
                );
            }
            Ok(ending)
        }
        Err(e) => {
            if let Some(nf) = e.downcast_ref::<NonFiniteValue>() {
                let last = latest_snapshot(&out).ok().flatten();
                let hint = match last {
                    Some(p) => format!("the last good snapshot is {}", p.display()),
                    None => "no snapshot was written before it".to_string(),
                };
                bail!("{nf}; {hint}");
            }
            Err(e)
        }
    }
}

/// A snapshot to resume from: its path and contents.
type Resume = Option<(PathBuf, State)>;

/// The run's configuration, output folder, and the snapshot to resume from.
fn resolve(args: &TrainArgs, device: &Device) -> Result<(RunConfig, PathBuf, Resume)> {
    let Some(resume) = &args.resume else {
        let arch = match &args.arch {
            Some(a) => a.parse()?,
            None => crate::presets::default_arch(args.preset),
        };
        let data = DataConfig {
            dataset: args.dataset.unwrap_or(DatasetKind::Mnist),
            data_dir: args.data_dir.clone(),
            image_size: args.image_size.unwrap_or(64),
            pixel_range: kusari_trainer::datasets::PixelRange::MinusOneOne,
        };
        let mut config = RunConfig::preset(args.model, args.preset, arch, &data);
        apply_flags(&mut config, args, false)?;
        let out = args.out.clone().unwrap_or_else(default_out_dir);
        if latest_snapshot(&out)?.is_some() {
            bail!(
                "{} already holds snapshots of another run; continue it with --resume, \
                 or choose a new folder with --out",
                out.display()
            );
        }
        return Ok((config, out, None));
    };
    let (path, out) = if let Some(resume) = resume {
        let out = match &args.out {
            Some(out) => out.clone(),
            None => resume
                .parent()
                .map(Path::to_path_buf)
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or_else(|| PathBuf::from(".")),
        };
        (resume.clone(), out)
    } else {
        let Some(out) = &args.out else {
            bail!("--resume without a path resumes the newest snapshot in --out; give --out DIR or a snapshot path");
        };
        let Some(path) = latest_snapshot(out)? else {
            bail!(
                "there is no snapshot in {} to resume from (snapshots are folders named snapshot_iter_N)",
                out.display()
            );
        };
        (path, out.clone())
    };
    let state = State::load(&path, device)?;
    let mut config = config_from_snapshot(&state, &path)?;
    if config.kind != args.model {
        bail!(
            "{} is a snapshot of `kusari train {}`, not `{}`",
            path.display(),
            config.kind,
            args.model
        );
    }
    apply_flags(&mut config, args, true)?;
    Ok((config, out, Some((path, state))))
}

/// The run configuration a snapshot was written with.
pub fn config_from_snapshot(state: &State, path: &Path) -> Result<RunConfig> {
    let metadata: serde_json::Map<String, serde_json::Value> = state
        .get("metadata")
        .with_context(|| format!("{} is not a kusari training snapshot", path.display()))?;
    let value = metadata.get(SNAPSHOT_KEY).with_context(|| {
        format!(
            "{} holds no run configuration: it was not written by `kusari train`",
            path.display()
        )
    })?;
    serde_json::from_value(value.clone()).with_context(|| {
        format!(
            "{}: the stored run configuration is unreadable (written by another kusari version?)",
            path.display()
        )
    })
}

fn load_dataset(config: &RunConfig) -> Result<ArrayDataset> {
    let range = config.data.pixel_range;
    match config.data.dataset {
        DatasetKind::Mnist => {
            let data = mnist::load_or_download(config.data.data_dir.as_deref(), Split::Train)?;
            data.to_dataset(range)
        }
        DatasetKind::Folder => {
            let dir = config
                .data
                .data_dir
                .as_deref()
                .context("--dataset folder needs --data-dir")?;
            let folder = ImageFolder::load(dir, config.data.image_size)?;
            if !folder.skipped().is_empty() {
                eprintln!(
                    "skipped {} unreadable file(s) in {}; training on {} images",
                    folder.skipped().len(),
                    dir.display(),
                    folder.len()
                );
            }
            folder.to_dataset(range)
        }
    }
}

fn stop_trigger(config: &RunConfig) -> Box<dyn Trigger> {
    let mut parts: Vec<Box<dyn Trigger>> = vec![];
    if let Some(e) = config.length.epochs {
        parts.push(Box::new(IntervalTrigger::new(e, Unit::Epoch)));
    }
    if let Some(i) = config.length.iterations {
        parts.push(Box::new(IntervalTrigger::iterations(i)));
    }
    if let Some(s) = config.length.time_limit_seconds {
        parts.push(Box::new(TimeTrigger::new(Duration::from_secs_f64(s))));
    }
    if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        Box::new(AnyOf(parts))
    }
}

fn add_extensions<U: kusari_trainer::Updater + 'static>(
    trainer: &mut Trainer<U>,
    config: &RunConfig,
    nets: &Nets,
    dataset: &ArrayDataset,
) -> Result<()> {
    let log_every = match config.log_every_iterations {
        Some(n) => IntervalTrigger::iterations(n),
        None => IntervalTrigger::epochs(config.log_every_epochs),
    };
    let range = config.data.pixel_range.value_range();
    let mut standard = StandardExtensions::new(config.seed)
        .log_every(log_every)
        .snapshot_every(IntervalTrigger::epochs(config.snapshot_every_epochs))
        .keep_snapshots(config.keep_snapshots)
        .value_range(range);
    match config.model.objective {
        ObjectiveConfig::Ebgan(_) => standard = standard.column("gen/pt"),
        ObjectiveConfig::Wgan => standard = standard.column("dis/wasserstein"),
        _ => {}
    }
    if config.eval_every_epochs > 0.0 {
        for column in ["eval/is", "eval/fid", "eval/min_class_share"] {
            standard = standard.column(column);
        }
    }
    if nets.dis.auto_encoder().is_some() {
        standard = standard.reconstruct(reconstruction_inputs(config, dataset, nets.gen.device())?);
    }
    standard.add_to(trainer, nets)?;
    let judged = match config.gen_ema {
        Some(decay) => {
            let average = generator_average(trainer, config, nets, decay)?;
            trainer.extend(
                GeneratedImages::new(average.clone(), 100, config.seed, range)?
                    .file_stem("generated_average"),
            );
            average
        }
        None => nets.gen.clone(),
    };
    if config.eval_every_epochs > 0.0 {
        crate::evaluate::add_evaluator(trainer, config, &judged)?;
    }
    if let Some(shift) = learning_rate_shift(config, trainer.updater().iterations_per_epoch())? {
        trainer.extend(shift);
    }
    Ok(())
}

/// `--gen-ema DECAY`: a second G holding the moving average of the trained
/// one's weights, kept by a [`MovingAverage`] that snapshots save.
fn generator_average<U: Updater + 'static>(
    trainer: &mut Trainer<U>,
    config: &RunConfig,
    nets: &Nets,
    decay: f64,
) -> Result<Generator> {
    // Its initial weights are overwritten by a copy of G's when training starts.
    let average = Generator::new(&config.model.model, nets.gen.device(), &mut Rng::new(0))?;
    let averaging = MovingAverage::new(nets.gen.params().clone(), average.params().clone(), decay)
        .context("--gen-ema")?
        .named(GEN_AVERAGE_EXTENSION);
    trainer.extend(averaging);
    Ok(average)
}

/// `--lr-decay linear`: every rate to zero over the run's iterations, else
/// its epochs, else its time limit.
fn learning_rate_shift(
    config: &RunConfig,
    iterations_per_epoch: Option<f64>,
) -> Result<Option<LinearShift>> {
    if config.lr_decay == LrDecay::None {
        return Ok(None);
    }
    let length = config.length;
    let span = match (length.iterations, length.epochs, length.time_limit_seconds) {
        (Some(n), ..) => ShiftSpan::Iterations(n),
        (None, Some(e), _) => {
            let per_epoch = iterations_per_epoch
                .context("--lr-decay over epochs needs to know the iterations per epoch")?;
            ShiftSpan::Iterations((e * per_epoch).ceil().max(1.0) as u64)
        }
        (None, None, Some(s)) => ShiftSpan::Time(Duration::from_secs_f64(s)),
        (None, None, None) => {
            bail!("--lr-decay needs a run length: --iterations, --epochs or --time-limit")
        }
    };
    Ok(Some(LinearShift::new(1.0, 0.0, span)?))
}

/// The fixed real images D reconstructs each epoch: the first 100 MNIST test
/// images (the seed's choice), or the first 100 of an image folder.
fn reconstruction_inputs(
    config: &RunConfig,
    dataset: &ArrayDataset,
    device: &Device,
) -> Result<Tensor> {
    let examples = match config.data.dataset {
        DatasetKind::Mnist => {
            mnist::load_or_download(config.data.data_dir.as_deref(), Split::Test)?
                .to_dataset(config.data.pixel_range)?
                .take(100)
        }
        DatasetKind::Folder => dataset.take(100),
    };
    let mut shape = vec![examples.len()];
    shape.extend_from_slice(examples.example_shape());
    Ok(Tensor::from_slice(examples.all_values(), shape, device)?)
}

fn args_json(config: &RunConfig, out: &Path, device: &Device) -> serde_json::Value {
    serde_json::json!({
        "kusari_version": env!("CARGO_PKG_VERSION"),
        "command_line": std::env::args().collect::<Vec<_>>(),
        "out": out,
        "device": format!("{device:?}"),
        "config": config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Preset;
    use crate::config::Length;
    use kusari_models::Arch;

    fn config(length: Length, lr_decay: LrDecay) -> RunConfig {
        let mut c = RunConfig::mnist_preset(Preset::Seed, Arch::Mlp);
        c.length = length;
        c.lr_decay = lr_decay;
        c
    }

    fn span(length: Length) -> ShiftSpan {
        learning_rate_shift(&config(length, LrDecay::Linear), Some(600.0))
            .expect("a shift")
            .expect("linear decay asked for")
            .span()
    }

    #[test]
    fn linear_decay_spans_the_run_length() {
        let length = |epochs, iterations, time_limit_seconds| Length {
            epochs,
            iterations,
            time_limit_seconds,
        };
        assert_eq!(
            span(length(None, Some(1_000), Some(600.0))),
            ShiftSpan::Iterations(1_000)
        );
        // 2.5 epochs of 600 iterations.
        assert_eq!(
            span(length(Some(2.5), None, Some(600.0))),
            ShiftSpan::Iterations(1_500)
        );
        assert_eq!(
            span(length(None, None, Some(600.0))),
            ShiftSpan::Time(Duration::from_secs(600))
        );
        let none = learning_rate_shift(&config(length(Some(1.0), None, None), LrDecay::None), None);
        assert!(none.expect("no error").is_none());
        let err = learning_rate_shift(
            &config(length(Some(1.0), None, None), LrDecay::Linear),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("iterations per epoch"), "{err}");
    }
}
