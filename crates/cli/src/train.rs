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
use kusari_trainer::extensions::tensorboard::HParam;
use kusari_trainer::extensions::{
    latest_snapshot, snapshot_paths, LinearShift, MovingAverage, NonFiniteValue, ObserveLr,
    ShiftSpan, TensorBoardWriter,
};
use kusari_trainer::fsutil::{ensure_writable_dir, remove_stale_temporaries, write_atomic};
use kusari_trainer::{
    ArrayDataset, Dataset, Ending, IntervalTrigger, Rng, RunLength, RunLock, SerialIterator, State,
    Trainer, Updater,
};

use crate::args::{DatasetKind, LrDecay, TensorBoardMode, TrainArgs};
use crate::config::{
    apply_flags, default_out_dir, settings_changed, DataConfig, RunConfig, SNAPSHOT_KEY,
};
use kusari_trainer::device::parse_device as device_from_flag;

/// Runs `kusari train` and returns how the run ended.
pub fn run(args: &TrainArgs) -> Result<Ending> {
    let device = device_from_flag(&args.device)?;
    let out = out_dir(args)?;
    if args.resume.is_none() || !out.exists() {
        // Bad flags (or a resume from nowhere) fail before any folder is made.
        resolve(args, &out, &device)?;
    }
    ensure_writable_dir(&out)?;
    // Held until the process ends: nothing below may race another run.
    let _lock = RunLock::acquire(&out)?;
    let stale = remove_stale_temporaries(&out)?;
    if !stale.is_empty() {
        eprintln!(
            "removed {} temporary file(s) an interrupted run left in {}",
            stale.len(),
            out.display()
        );
    }
    let (mut config, resume) = resolve(args, &out, &device)?;
    let dataset = load_dataset(&config)?;
    check_fingerprint(&mut config, &dataset, resume.as_ref())?;
    write_args_json(&out, &config, &device, resume.as_ref())?;

    let nets = Nets::build(&config.model, &device, config.seed)?;
    let iterator = SerialIterator::new(
        Arc::new(dataset.clone()),
        config.model.batch_size,
        true,
        config.seed,
    )
    .context("setting up the batches (check --batch-size)")?;
    let updater = nets.updater(&config.model, iterator, &device, config.seed)?;

    let length = stop_trigger(&config);
    let mut trainer = Trainer::new(updater, length, &out);
    trainer
        .metadata_mut()
        .insert(SNAPSHOT_KEY.into(), serde_json::to_value(&config)?);
    let tensorboard = match args.tensorboard {
        TensorBoardMode::Off => None,
        mode => Some((
            std::fs::read_to_string(out.join("args.json"))
                .context("reading back args.json for TensorBoard")?,
            mode == TensorBoardMode::Iterations,
        )),
    };
    add_extensions(&mut trainer, &config, &nets, &dataset, tensorboard)?;

    if let Some(resume) = &resume {
        trainer
            .load_state(&resume.state)
            .with_context(|| format!("resuming from {}", resume.path.display()))?;
        // The snapshot holds the optimizers' settings of its time (and rates
        // a decay had lowered); the run goes on with the configured ones,
        // which a resume may change.
        let optimizers = trainer.updater_mut().optimizers_mut();
        for (name, settings) in [
            ("gen", &config.model.gen_optimizer),
            ("dis", &config.model.dis_optimizer),
        ] {
            settings
                .apply_to(optimizers.get_mut(name)?)
                .with_context(|| format!("setting the `{name}` optimizer"))?;
        }
        eprintln!(
            "resuming from {} (iteration {})",
            resume.path.display(),
            trainer.updater().iteration()
        );
        for change in &resume.changes {
            eprintln!("  changed: {change}");
        }
        let updater = trainer.updater();
        if length.reached_at(
            updater.iteration(),
            updater.epoch_detail(),
            trainer.elapsed(),
        ) {
            eprintln!(
                "the run already reached its length at iteration {} ({:.2} epochs, {:.1} s of \
                 training); to train on, give a longer --iterations, --epochs or --time-limit \
                 (each counts the whole run, the part before this resume included)",
                updater.iteration(),
                updater.epoch_detail(),
                trainer.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!("writing to {}", out.display());
    match trainer.run() {
        Ok(ending) => {
            if ending == Ending::Interrupted {
                eprintln!(
                    "stopped with a snapshot; continue with: kusari train {} --out {} --resume",
                    config.kind,
                    out.display()
                );
            }
            Ok(ending)
        }
        Err(e) => {
            if let Some(nf) = e.downcast_ref::<NonFiniteValue>() {
                let hint = match latest_finite_snapshot(&out)? {
                    Some(p) => format!(
                        "the last snapshot with finite values is {}; resume from it with lower \
                         learning rates: kusari train {} --resume {} --lr-g {:e} --lr-d {:e} \
                         (a tenth of this run's)",
                        p.display(),
                        config.kind,
                        p.display(),
                        config.model.gen_optimizer.lr() / 10.0,
                        config.model.dis_optimizer.lr() / 10.0,
                    ),
                    None => "no snapshot with finite values was written before it; start \
                             again with lower learning rates (--lr-g, --lr-d)"
                        .to_string(),
                };
                bail!(
                    "`{}` is {} at iteration {}: training has diverged; {hint}",
                    nf.key,
                    nf.value,
                    nf.iteration
                );
            }
            Err(e)
        }
    }
}

/// The newest snapshot in `out` whose every tensor is finite (snapshots of
/// older kusari versions could hold non-finite weights).
fn latest_finite_snapshot(out: &Path) -> Result<Option<PathBuf>> {
    let mut candidates = snapshot_paths(out)?;
    candidates.reverse();
    for path in candidates {
        let Ok(state) = State::load(&path, &Device::Cpu) else {
            continue;
        };
        if state.first_non_finite()?.is_none() {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// A snapshot to resume from.
struct Resume {
    path: PathBuf,
    state: State,
    /// The configuration the snapshot stored.
    stored: RunConfig,
    /// What the flags changed, as `--flag (old → new)`.
    changes: Vec<String>,
}

/// The output folder: `--out`, else the resumed snapshot's folder, else a new
/// dated folder.
fn out_dir(args: &TrainArgs) -> Result<PathBuf> {
    if let Some(out) = &args.out {
        return Ok(out.clone());
    }
    match &args.resume {
        None => Ok(default_out_dir()),
        Some(Some(snapshot)) => Ok(snapshot
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."))),
        Some(None) => bail!(
            "--resume without a path resumes the newest snapshot in --out; give --out DIR or a snapshot path"
        ),
    }
}

/// The run's configuration and the snapshot to resume from.
fn resolve(args: &TrainArgs, out: &Path, device: &Device) -> Result<(RunConfig, Option<Resume>)> {
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
            fingerprint: None,
        };
        let mut config = RunConfig::preset(args.model, args.preset, arch, &data);
        apply_flags(&mut config, args, false)?;
        if latest_snapshot(out)?.is_some() {
            bail!(
                "{} already holds snapshots of another run; continue it with --resume, \
                 or choose a new folder with --out",
                out.display()
            );
        }
        return Ok((config, None));
    };
    let path = match resume {
        Some(path) => path.clone(),
        None => latest_snapshot(out)?.with_context(|| {
            format!(
                "there is no snapshot in {} to resume from (snapshots are folders named snapshot_iter_N)",
                out.display()
            )
        })?,
    };
    let state = State::load(&path, device)?;
    if let Some((key, value)) = state.first_non_finite()? {
        bail!(
            "{} cannot be resumed: `{key}` holds {value} (the run had diverged when it was \
             written); resume from an older snapshot_iter_* of the run",
            path.display()
        );
    }
    let stored = config_from_snapshot(&state, &path)?;
    if stored.kind != args.model {
        bail!(
            "{} is a snapshot of `kusari train {}`, not `{}`",
            path.display(),
            stored.kind,
            args.model
        );
    }
    let mut config = stored.clone();
    relocate_data(&mut config, args)?;
    apply_flags(&mut config, args, true)?;
    let changes = settings_changed(&stored, &config);
    Ok((
        config,
        Some(Resume {
            path,
            state,
            stored,
            changes,
        }),
    ))
}

/// Where a resumed run finds its images when they moved: `--data-dir`, else
/// the stored folder, else (MNIST) `$MNIST_DIR` and the default place. The
/// images are then checked by content ([`check_fingerprint`]).
fn relocate_data(config: &mut RunConfig, args: &TrainArgs) -> Result<()> {
    if args.data_dir.is_some() {
        return Ok(());
    }
    let Some(stored) = config.data.data_dir.clone() else {
        return Ok(());
    };
    if stored.exists() {
        return Ok(());
    }
    match config.data.dataset {
        DatasetKind::Mnist => {
            eprintln!(
                "the run's MNIST folder {} is gone; looking in $MNIST_DIR and data/mnist \
                 (or give --data-dir)",
                stored.display()
            );
            config.data.data_dir = None;
            Ok(())
        }
        DatasetKind::Folder => bail!(
            "the run's images were in {}, which no longer exists; pass --data-dir with the \
             folder they are in now (kusari checks that they are the same images)",
            stored.display()
        ),
    }
}

/// Records the data's fingerprint on a new run; on resume, checks that the
/// images are the ones the run was trained on, wherever they are now.
fn check_fingerprint(
    config: &mut RunConfig,
    dataset: &ArrayDataset,
    resume: Option<&Resume>,
) -> Result<()> {
    let found = dataset.fingerprint();
    let stored = resume.and_then(|r| r.stored.data.fingerprint.clone());
    match stored {
        Some(stored) if stored != found => bail!(
            "the images in {} are not the ones this run was trained on (their contents differ: \
             fingerprint {found}, the run's {stored}); point --data-dir at the run's images, \
             or start a new run",
            config.data.data_dir.as_deref().map_or_else(
                || "the MNIST folder".to_string(),
                |d| d.display().to_string()
            )
        ),
        None if resume.is_some() => eprintln!(
            "note: the snapshot predates data fingerprints, so the images cannot be checked; \
             recording theirs from now on"
        ),
        _ => {}
    }
    config.data.fingerprint = Some(found);
    Ok(())
}

/// `OUT/args.json`: the resolved configuration and command line, and on
/// resume the history of resumes with what each changed.
fn write_args_json(
    out: &Path,
    config: &RunConfig,
    device: &Device,
    resume: Option<&Resume>,
) -> Result<()> {
    let path = out.join("args.json");
    let mut resumes = vec![];
    if let Some(resume) = resume {
        let earlier: Option<serde_json::Value> = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        if let Some(serde_json::Value::Array(list)) =
            earlier.and_then(|v| v.get("resumes").cloned())
        {
            resumes = list;
        }
        let iteration: u64 = resume.state.get("iteration").unwrap_or_default();
        resumes.push(serde_json::json!({
            "iteration": iteration,
            "snapshot": resume.path,
            "command_line": std::env::args().collect::<Vec<_>>(),
            "changed": resume.changes,
        }));
    }
    let mut json = args_json(config, out, device);
    json["resumes"] = serde_json::Value::Array(resumes);
    write_atomic(&path, &serde_json::to_vec_pretty(&json)?)
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

fn stop_trigger(config: &RunConfig) -> RunLength {
    RunLength {
        iterations: config.length.iterations,
        epochs: config.length.epochs,
        time: config
            .length
            .time_limit_seconds
            .map(Duration::from_secs_f64),
    }
}

/// The hyper-parameters TensorBoard's HParams tab shows for a run, and the
/// log keys that measure it.
fn hparams(config: &RunConfig) -> (Vec<(String, HParam)>, Vec<String>) {
    let model = &config.model;
    let mut hp: Vec<(String, HParam)> = vec![
        ("objective".into(), HParam::Text(config.kind.to_string())),
        ("preset".into(), choice(&config.preset)),
        ("arch".into(), choice(&model.model.arch)),
        ("z_dim".into(), HParam::Number(model.model.z_dim as f64)),
        (
            "units_g".into(),
            HParam::Number(model.model.gen.units as f64),
        ),
        (
            "layers_g".into(),
            HParam::Number(model.model.gen.layers as f64),
        ),
        (
            "units_d".into(),
            HParam::Number(model.model.dis.units as f64),
        ),
        (
            "layers_d".into(),
            HParam::Number(model.model.dis.layers as f64),
        ),
        ("dropout".into(), HParam::Number(model.model.dis.dropout)),
        ("bn".into(), choice(&model.model.dis.batch_norm)),
        ("output_activation".into(), choice(&model.model.gen.output)),
        (
            "spectral_norm".into(),
            HParam::Bool(model.model.dis.spectral_norm),
        ),
        ("batch_size".into(), HParam::Number(model.batch_size as f64)),
        ("dis_steps".into(), HParam::Number(model.dis_steps as f64)),
        ("lr_g".into(), HParam::Number(model.gen_optimizer.lr())),
        ("lr_d".into(), HParam::Number(model.dis_optimizer.lr())),
        ("seed".into(), HParam::Number(config.seed as f64)),
        ("dataset".into(), choice(&config.data.dataset)),
    ];
    if let ObjectiveConfig::Ebgan(e) = &model.objective {
        hp.push(("margin".into(), HParam::Number(e.margin)));
        hp.push(("pt_weight".into(), HParam::Number(e.pt_weight)));
        hp.push(("pt_variant".into(), choice(&e.pt)));
    }
    let metrics = [
        "eval/fid",
        "eval/is",
        "eval/min_class_share",
        "dis/loss",
        "gen/loss",
    ]
    .map(String::from)
    .to_vec();
    (hp, metrics)
}

/// A configuration choice by its serde name (`separate`, `mlp`, …).
fn choice<T: serde::Serialize>(value: &T) -> HParam {
    HParam::Text(match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    })
}

fn add_extensions<U: kusari_trainer::Updater + 'static>(
    trainer: &mut Trainer<U>,
    config: &RunConfig,
    nets: &Nets,
    dataset: &ArrayDataset,
    tensorboard: Option<(String, bool)>,
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
    let mut writer = None;
    if let Some((args_json, every_iteration)) = tensorboard {
        let tensorboard = TensorBoardWriter::default();
        let (hp, metrics) = hparams(config);
        let text = format!("```json\n{args_json}\n```");
        standard = standard.tensorboard(tensorboard.clone(), move |report| {
            report
                .hparams(hp, metrics)
                .text("config/args.json", text)
                .every_iteration(every_iteration)
        });
        writer = Some(tensorboard);
    }
    standard.add_to(trainer, nets)?;
    let judged = match config.gen_ema {
        Some(decay) => {
            let average = generator_average(trainer, config, nets, decay)?;
            let mut images = GeneratedImages::new(average.clone(), 100, config.seed, range)?
                .file_stem("generated_average");
            if let Some(writer) = &writer {
                images = images.tensorboard(writer.clone());
            }
            trainer.extend(images);
            average
        }
        None => nets.gen.clone(),
    };
    if config.eval_every_epochs > 0.0 {
        crate::evaluate::add_evaluator(trainer, config, &judged)?;
    }
    // Before the shift: it reports the rate each update used.
    trainer.extend(ObserveLr);
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
    // The configured rates, not the snapshot's: a resume may change them.
    let bases = [
        ("gen", config.model.gen_optimizer.lr()),
        ("dis", config.model.dis_optimizer.lr()),
    ];
    Ok(Some(LinearShift::new(1.0, 0.0, span)?.bases(bases)))
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
