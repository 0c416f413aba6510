//! The fully resolved configuration of a training run: preset defaults, then
//! the flags given, then (on `--resume`) the snapshot's own configuration.
//! It is written to `OUT/args.json` and stored in every snapshot, so a run can
//! always be reproduced, resumed and sampled from.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kusari_models::{
    Arch, BnStrategy, Config, ImageShape, ModelConfig, ObjectiveConfig, OptimizerConfig,
    OutputActivation, PtVariant,
};
use kusari_trainer::datasets::PixelRange;
use serde::{Deserialize, Serialize};

use crate::args::{DatasetKind, LrDecay, ModelKind, OptimizerKind, Preset, TrainArgs};

/// Where the training images come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    pub dataset: DatasetKind,
    /// The folder given with --data-dir (MNIST otherwise resolves $MNIST_DIR, then data/mnist).
    pub data_dir: Option<PathBuf>,
    /// Square side of folder images (MNIST is 28).
    pub image_size: u32,
    /// How pixel bytes map to values; follows G's output activation.
    pub pixel_range: PixelRange,
    /// The training images' [`ArrayDataset::fingerprint`](kusari_trainer::ArrayDataset::fingerprint),
    /// recorded when the run starts: a resumed run checks its data by
    /// content, so the images may move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// How long to train.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Length {
    pub epochs: Option<f64>,
    pub iterations: Option<u64>,
    pub time_limit_seconds: Option<f64>,
}

/// Everything a training run was asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub kind: ModelKind,
    pub preset: Preset,
    /// Nets, objective, optimizers, batch size (kusari-models' configuration).
    pub model: Config,
    pub data: DataConfig,
    pub seed: u64,
    pub length: Length,
    pub snapshot_every_epochs: f64,
    pub keep_snapshots: usize,
    pub log_every_epochs: f64,
    /// When set, log every this many iterations instead of `log_every_epochs`.
    #[serde(default)]
    pub log_every_iterations: Option<u64>,
    pub eval_every_epochs: f64,
    pub eval_samples: usize,
    /// How the learning rates move over the run.
    #[serde(default)]
    pub lr_decay: LrDecay,
    /// The decay of the moving average of G's weights, when one is kept.
    #[serde(default)]
    pub gen_ema: Option<f64>,
}

#[cfg(test)]
impl RunConfig {
    /// A preset's EBGAN configuration on MNIST, before any flag.
    pub(crate) fn mnist_preset(preset: Preset, arch: Arch) -> Self {
        let data = DataConfig {
            dataset: DatasetKind::Mnist,
            data_dir: None,
            image_size: 64,
            pixel_range: kusari_trainer::datasets::PixelRange::MinusOneOne,
            fingerprint: None,
        };
        Self::preset(ModelKind::Ebgan, preset, arch, &data)
    }
}

/// The key under which snapshots store the run configuration.
pub const SNAPSHOT_KEY: &str = "run_config";

impl RunConfig {
    /// The preset's configuration for `kind`, before any flag.
    pub fn preset(kind: ModelKind, preset: Preset, arch: Arch, data: &DataConfig) -> Self {
        let image = match data.dataset {
            DatasetKind::Mnist => ImageShape::MNIST,
            DatasetKind::Folder => ImageShape {
                channels: 3,
                height: data.image_size as usize,
                width: data.image_size as usize,
            },
        };
        let objective =
            ObjectiveConfig::from_name(kind.name()).expect("every ModelKind is an objective");
        let mut model = Config {
            model: match arch {
                Arch::Mlp => ModelConfig {
                    image,
                    ..ModelConfig::default()
                },
                Arch::Conv => ModelConfig::conv(image),
            },
            ..Config::seed_with(objective)
        };
        let mut length = Length {
            epochs: Some(500.0),
            iterations: None,
            time_limit_seconds: None,
        };
        let mut gen_ema = None;
        if preset == Preset::Fast {
            crate::presets::apply_fast(&mut model, arch);
            gen_ema = crate::presets::fast_gen_ema(arch);
            length = Length {
                epochs: None,
                iterations: None,
                time_limit_seconds: Some(600.0),
            };
        }
        Self {
            kind,
            preset,
            model,
            data: data.clone(),
            seed: 0,
            length,
            snapshot_every_epochs: 1.0,
            keep_snapshots: 3,
            log_every_epochs: 1.0,
            log_every_iterations: None,
            eval_every_epochs: 0.0,
            eval_samples: 10_000,
            lr_decay: LrDecay::None,
            gen_ema,
        }
    }

    /// The image shape the nets see.
    pub fn image(&self) -> ImageShape {
        self.model.model.image
    }

    /// Checks the whole configuration, naming the flag to fix.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        if let Some(e) = self.length.epochs {
            if !(e.is_finite() && e > 0.0) {
                bail!("--epochs must be a positive number, got {e}");
            }
        }
        if self.length.iterations == Some(0) {
            bail!("--iterations must be at least 1");
        }
        if self.length.epochs.is_none()
            && self.length.iterations.is_none()
            && self.length.time_limit_seconds.is_none()
        {
            bail!("say how long to train: --epochs, --iterations or --time-limit");
        }
        for (flag, v) in [
            ("--snapshot-every", self.snapshot_every_epochs),
            ("--log-every", self.log_every_epochs),
        ] {
            if !(v.is_finite() && v > 0.0) {
                bail!("{flag} must be a positive number of epochs, got {v}");
            }
        }
        if !(self.eval_every_epochs.is_finite() && self.eval_every_epochs >= 0.0) {
            bail!("--eval-every must be 0 (off) or a positive number of epochs");
        }
        if let Some(d) = self.gen_ema {
            if !(d > 0.0 && d < 1.0) {
                bail!("--gen-ema must lie in (0, 1) (0.999 is usual; 0 turns it off), got {d}");
            }
        }
        if self.keep_snapshots == 0 {
            bail!("--keep-snapshots must be at least 1");
        }
        if self.eval_every_epochs > 0.0 && self.data.dataset != DatasetKind::Mnist {
            bail!("--eval-every judges MNIST samples; it needs --dataset mnist");
        }
        if self.eval_every_epochs > 0.0 && self.eval_samples < 2 {
            bail!("--eval-samples must be at least 2");
        }
        if self.data.dataset == DatasetKind::Folder && self.data.data_dir.is_none() {
            bail!("--dataset folder needs --data-dir pointing at your images");
        }
        Ok(())
    }
}

fn parse_choice<T: for<'de> Deserialize<'de>>(flag: &str, value: &str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(value.to_string()))
        .with_context(|| format!("{flag} does not accept `{value}`"))
}

/// The pixel range that suits G's output activation: sigmoid outputs (0, 1),
/// the others are trained against [−1, 1] as the seed did.
pub fn pixel_range_for(output: OutputActivation) -> PixelRange {
    match output {
        OutputActivation::Sigmoid => PixelRange::ZeroOne,
        OutputActivation::Identity | OutputActivation::Tanh => PixelRange::MinusOneOne,
    }
}

/// Applies the flags of `args` to `config`. With `resuming`, flags that would
/// change the model, the data or the seed are errors unless they repeat the
/// snapshot's value.
pub fn apply_flags(config: &mut RunConfig, args: &TrainArgs, resuming: bool) -> Result<()> {
    let before = config.clone();
    let model = &mut config.model;

    if let Some(arch) = &args.arch {
        // A new run applied --arch through its preset; on resume it may only repeat it.
        model.model.arch = parse_choice("--arch", arch)?;
    }
    if let Some(v) = args.z_dim {
        model.model.z_dim = v;
    }
    if let Some(v) = args.units_g {
        model.model.gen.units = v;
    }
    if let Some(v) = args.units_d {
        model.model.dis.units = v;
    }
    if let Some(v) = args.layers_g {
        model.model.gen.layers = v;
    }
    if let Some(v) = args.layers_d {
        model.model.dis.layers = v;
    }
    if let Some(v) = args.decoder_layers {
        model.model.dis.decoder_layers = v;
    }
    if let Some(v) = args.code_dim {
        model.model.dis.code_dim = v;
    }
    if let Some(v) = args.dropout {
        model.model.dis.dropout = v;
    }
    if let Some(v) = &args.output_activation {
        model.model.gen.output = parse_choice("--output-activation", v)?;
    }
    if let Some(v) = &args.bn {
        model.model.dis.batch_norm = parse_choice::<BnStrategy>("--bn", v)?;
    }
    if let Some(v) = args.batch_size {
        if v == 0 {
            bail!("--batch-size must be at least 1");
        }
        model.batch_size = v;
    }
    if let Some(kind) = args.optimizer {
        let chosen = match kind {
            OptimizerKind::Adam => OptimizerConfig::seed_adam(),
            OptimizerKind::Rmsprop => {
                OptimizerConfig::RmsProp(kusari_trainer::RmsPropConfig::default())
            }
        };
        for optimizer in [&mut model.gen_optimizer, &mut model.dis_optimizer] {
            if std::mem::discriminant(optimizer) != std::mem::discriminant(&chosen) {
                *optimizer = chosen;
            }
        }
    }
    if let Some(v) = args.lr {
        model.gen_optimizer.set_lr(v);
        model.dis_optimizer.set_lr(v);
    }
    if let Some(v) = args.lr_g {
        model.gen_optimizer.set_lr(v);
    }
    if let Some(v) = args.lr_d {
        model.dis_optimizer.set_lr(v);
    }
    if let Some(v) = args.beta1 {
        for optimizer in [&mut model.gen_optimizer, &mut model.dis_optimizer] {
            match optimizer {
                OptimizerConfig::Adam(adam) => adam.beta1 = v,
                OptimizerConfig::RmsProp(_) => {
                    bail!(
                        "--beta1 is Adam's; this run trains with RMSProp (choose --optimizer adam)"
                    )
                }
            }
        }
    }
    if let Some(v) = args.dis_steps {
        model.dis_steps = v;
    }
    if let Some(v) = args.clip_dis {
        model.dis_weight_clip = (v != 0.0).then_some(v);
    }
    if args.spectral_norm {
        model.model.dis.spectral_norm = true;
    }
    let ebgan_flags = [
        ("--margin", args.margin.is_some()),
        ("--pt-weight", args.pt_weight.is_some()),
        ("--pt-variant", args.pt_variant.is_some()),
    ];
    match &mut model.objective {
        ObjectiveConfig::Ebgan(e) => {
            if let Some(v) = args.margin {
                e.margin = v;
            }
            if let Some(v) = args.pt_weight {
                e.pt_weight = v;
            }
            if let Some(v) = &args.pt_variant {
                e.pt = parse_choice::<PtVariant>("--pt-variant", v)?;
            }
        }
        other => {
            if let Some((flag, _)) = ebgan_flags.iter().find(|(_, given)| *given) {
                bail!(
                    "{flag} applies to EBGAN only; `kusari train {}` has no such setting",
                    other.name()
                );
            }
        }
    }
    if let Some(v) = args.seed {
        config.seed = v;
    }
    if let Some(d) = args.dataset {
        config.data.dataset = d;
    }
    if let Some(d) = &args.data_dir {
        config.data.data_dir = Some(d.clone());
    }
    if let Some(s) = args.image_size {
        if s == 0 {
            bail!("--image-size must be at least 1");
        }
        config.data.image_size = s;
    }
    config.data.pixel_range = pixel_range_for(config.model.model.gen.output);

    // Run-length and bookkeeping flags may change on resume.
    if args.epochs.is_some() || args.iterations.is_some() || args.time_limit.is_some() {
        config.length = Length {
            epochs: args.epochs,
            iterations: args.iterations,
            time_limit_seconds: args.time_limit.map(|d| d.as_secs_f64()),
        };
    }
    if let Some(v) = args.lr_decay {
        config.lr_decay = v;
    }
    if let Some(v) = args.gen_ema {
        config.gen_ema = (v != 0.0).then_some(v);
    }
    if let Some(v) = args.snapshot_every {
        config.snapshot_every_epochs = v;
    }
    if let Some(v) = args.keep_snapshots {
        config.keep_snapshots = v;
    }
    if let Some(v) = args.log_every {
        config.log_every_epochs = v;
        config.log_every_iterations = None;
    }
    if let Some(v) = args.log_every_iterations {
        if v == 0 {
            bail!("--log-every-iterations must be at least 1");
        }
        config.log_every_iterations = Some(v);
    }
    if let Some(v) = args.eval_every {
        config.eval_every_epochs = v;
    }
    if let Some(v) = args.eval_samples {
        config.eval_samples = v;
    }

    if resuming {
        let changed = fixed_settings_changed(&before, config);
        if !changed.is_empty() {
            bail!(
                "a resumed run keeps what it trains and on what, but the flags change {}; \
                 drop those flags or start a new run with --out NEW_FOLDER. On resume the run's \
                 length, learning rates and Adam's betas (--lr, --lr-g, --lr-d, --beta1), \
                 --data-dir (the same images elsewhere), --device and the bookkeeping flags \
                 (--snapshot-every, --keep-snapshots, --log-every, --eval-every, --eval-samples) \
                 may change",
                changed.join(", ")
            );
        }
    }
    config.validate()
}

/// The flags that would change what a resumed run trains or on what: every
/// setting that differs between `stored` and `resumed`, as `--flag (old →
/// new)`. Optimizer settings of the same optimizer, the data's location and
/// the run's length and bookkeeping may differ.
pub fn fixed_settings_changed(stored: &RunConfig, resumed: &RunConfig) -> Vec<String> {
    let fixed_part = |c: &RunConfig| {
        let mut model = c.model.clone();
        for optimizer in [&mut model.gen_optimizer, &mut model.dis_optimizer] {
            // Only the optimizer's kind is fixed: keep its settings out of the comparison.
            let kind = match optimizer {
                OptimizerConfig::Adam(_) => OptimizerConfig::seed_adam(),
                OptimizerConfig::RmsProp(_) => {
                    OptimizerConfig::RmsProp(kusari_trainer::RmsPropConfig::default())
                }
            };
            *optimizer = kind;
        }
        serde_json::json!({
            "kind": c.kind,
            "model": model,
            "data": {
                "dataset": c.data.dataset,
                "image_size": c.data.image_size,
                "pixel_range": c.data.pixel_range,
            },
            "seed": c.seed,
        })
    };
    named_differences(&fixed_part(stored), &fixed_part(resumed))
}

/// Every setting that differs between two configurations of one run, as
/// `--flag (old → new)`: what a resume changed, for args.json.
pub fn settings_changed(stored: &RunConfig, resumed: &RunConfig) -> Vec<String> {
    let (Ok(a), Ok(b)) = (serde_json::to_value(stored), serde_json::to_value(resumed)) else {
        return vec![];
    };
    named_differences(&a, &b)
}

/// The leaves where `a` and `b` differ, as `--flag (old → new)`, once each;
/// the data's fingerprint is not a setting.
fn named_differences(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    let mut differences = vec![];
    json_differences("", a, b, &mut differences);
    let mut named: Vec<String> = vec![];
    for (path, old, new) in differences {
        let item = format!("{} ({old} → {new})", flag_of_setting(&path));
        if path != "data.fingerprint" && !named.contains(&item) {
            named.push(item);
        }
    }
    named
}

/// Every leaf where `a` and `b` differ: its dotted path and both values.
fn json_differences(
    path: &str,
    a: &serde_json::Value,
    b: &serde_json::Value,
    out: &mut Vec<(String, String, String)>,
) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                json_differences(
                    &sub,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ if a != b => out.push((path.to_string(), a.to_string(), b.to_string())),
        _ => {}
    }
}

/// The flag that sets the configuration entry at `path` (the path itself
/// for settings no flag reaches).
fn flag_of_setting(path: &str) -> String {
    let leaf = path.rsplit('.').next().unwrap_or(path);
    let flag = match path {
        "kind" => "the objective (`kusari train OBJECTIVE`)",
        "seed" => "--seed",
        "data.dataset" => "--dataset",
        "data.image_size" => "--image-size",
        "data.pixel_range" => "--output-activation (the pixel range)",
        "model.batch_size" => "--batch-size",
        "model.dis_steps" => "--dis-steps",
        "model.dis_weight_clip" => "--clip-dis",
        "model.model.arch" => "--arch",
        "model.model.z_dim" => "--z-dim",
        "model.model.gen.units" => "--units-g",
        "model.model.gen.layers" => "--layers-g",
        "model.model.gen.output" => "--output-activation",
        "model.model.dis.units" => "--units-d",
        "model.model.dis.layers" => "--layers-d",
        "model.model.dis.decoder_layers" => "--decoder-layers",
        "model.model.dis.code_dim" => "--code-dim",
        "model.model.dis.dropout" => "--dropout",
        "model.model.dis.batch_norm" => "--bn",
        "model.model.dis.spectral_norm" => "--spectral-norm",
        "model.gen_optimizer.lr" => "--lr-g",
        "model.dis_optimizer.lr" => "--lr-d",
        "data.data_dir" => "--data-dir",
        "length.epochs" => "--epochs",
        "length.iterations" => "--iterations",
        "length.time_limit_seconds" => "--time-limit (seconds)",
        "lr_decay" => "--lr-decay",
        "gen_ema" => "--gen-ema",
        "snapshot_every_epochs" => "--snapshot-every",
        "keep_snapshots" => "--keep-snapshots",
        "log_every_epochs" => "--log-every",
        "log_every_iterations" => "--log-every-iterations",
        "eval_every_epochs" => "--eval-every",
        "eval_samples" => "--eval-samples",
        _ if path.ends_with("_optimizer.beta1") => "--beta1",
        _ if path.starts_with("model.model.image") => "--image-size",
        _ if path.ends_with("_optimizer.kind") => "--optimizer",
        _ if path.starts_with("model.objective") => match leaf {
            "margin" => "--margin",
            "pt_weight" => "--pt-weight",
            "pt" => "--pt-variant",
            _ => return path.to_string(),
        },
        _ => return path.to_string(),
    };
    flag.to_string()
}

/// `result/<YYYY-mm-dd_HH-MM-SS>` in the working directory, as the seed named its runs.
pub fn default_out_dir() -> PathBuf {
    let now = chrono::Local::now();
    Path::new("result").join(now.format("%Y-%m-%d_%H-%M-%S").to_string())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    /// The configuration `kusari ARGS` (a `train` command line) resolves to.
    fn resolved(args: &[&str]) -> Result<RunConfig> {
        let cli = Cli::try_parse_from(["kusari"].iter().chain(args))?;
        let Command::Train(train) = cli.command else {
            bail!("a train command expected")
        };
        let arch = crate::presets::default_arch(train.preset);
        let data = DataConfig {
            dataset: DatasetKind::Mnist,
            data_dir: None,
            image_size: 64,
            pixel_range: PixelRange::MinusOneOne,
            fingerprint: None,
        };
        let mut config = RunConfig::preset(train.model, train.preset, arch, &data);
        apply_flags(&mut config, &train, false)?;
        Ok(config)
    }

    #[test]
    fn every_objective_is_a_subcommand_and_wgan_takes_its_papers_training() -> Result<()> {
        for name in ObjectiveConfig::NAMES {
            let c = resolved(&["train", name])?;
            assert_eq!(c.model.objective.name(), name);
            assert_eq!(
                c.model.objective.head(),
                ObjectiveConfig::from_name(name)?.head()
            );
        }
        let wgan = resolved(&["train", "wgan"])?.model;
        assert_eq!((wgan.dis_steps, wgan.dis_weight_clip), (5, Some(0.01)));
        assert!(matches!(wgan.dis_optimizer, OptimizerConfig::RmsProp(r) if r.lr == 5e-5));
        let lsgan = resolved(&["train", "lsgan"])?.model;
        assert_eq!((lsgan.dis_steps, lsgan.dis_weight_clip), (1, None));
        assert_eq!(lsgan.gen_optimizer, OptimizerConfig::seed_adam());
        Ok(())
    }

    #[test]
    fn step_and_optimizer_flags_apply() -> Result<()> {
        let c = resolved(&[
            "train",
            "hinge",
            "--spectral-norm",
            "--dis-steps",
            "2",
            "--clip-dis",
            "0.5",
            "--optimizer",
            "rmsprop",
            "--lr-d",
            "1e-4",
        ])?
        .model;
        assert!(c.model.dis.spectral_norm);
        assert_eq!((c.dis_steps, c.dis_weight_clip), (2, Some(0.5)));
        assert!(matches!(c.gen_optimizer, OptimizerConfig::RmsProp(r) if r.lr == 5e-5));
        assert!(matches!(c.dis_optimizer, OptimizerConfig::RmsProp(r) if r.lr == 1e-4));
        // WGAN without its clip, with Adam.
        let c = resolved(&["train", "wgan", "--clip-dis", "0", "--optimizer", "adam"])?.model;
        assert_eq!(c.dis_weight_clip, None);
        assert_eq!(c.dis_optimizer, OptimizerConfig::seed_adam());
        Ok(())
    }

    #[test]
    fn flags_that_do_not_apply_are_refused_with_the_reason() {
        let err = resolved(&["train", "wgan", "--beta1", "0.9"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--beta1") && err.contains("--optimizer adam"),
            "{err}"
        );
        let err = resolved(&["train", "lsgan", "--margin", "3"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`kusari train lsgan`"), "{err}");
        let err = resolved(&["train", "gan", "--dis-steps", "0"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--dis-steps"), "{err}");
        let err = resolved(&["train", "gan", "--clip-dis=-1"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--clip-dis"), "{err}");
    }
}
