//! Every choice an experiment makes, as plain serde structs: the CLI stores
//! them in `args.json` and in snapshots, and `Nets::build` turns them
//! into models.
//!
//! `Config::default()` is the seed: the Chainer EBGAN-PT blog's MLP pair on
//! MNIST (G 3200 units, D 1024 units, z-dim 3, batch 100, margin 10, Adam
//! lr 1e-3 β1 0.5). In JSON every field may be left out (it takes the seed's
//! value) and unknown fields are errors, so a typo cannot pass silently.

mod model;
mod objective;
mod optimizer;

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

pub use model::{
    Arch, BnStrategy, ConvStages, DisConfig, DisHead, GenConfig, ImageShape, Init, ModelConfig,
    OutputActivation,
};
pub use objective::{EbganConfig, ObjectiveConfig, PtVariant, WGAN_CLIP};
pub use optimizer::OptimizerConfig;

/// The whole experiment: nets, objective, optimizers, batch size and the
/// shape of one update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The nets and the images they see.
    pub model: ModelConfig,
    /// The adversarial objective, with its hyper-parameters.
    pub objective: ObjectiveConfig,
    /// The generator's optimizer (`gen`).
    #[serde(alias = "gen_adam")]
    pub gen_optimizer: OptimizerConfig,
    /// The discriminator's optimizer (`dis`).
    #[serde(alias = "dis_adam")]
    pub dis_optimizer: OptimizerConfig,
    /// Real (and fake) images per D step.
    pub batch_size: usize,
    /// D steps per G step, each on a new real batch (WGAN's critic takes 5).
    pub dis_steps: usize,
    /// After each D step, every D parameter is clipped to `[−c, c]`
    /// (WGAN's 0.01); `None` clips nothing.
    pub dis_weight_clip: Option<f64>,
}

impl Default for Config {
    fn default() -> Self {
        let adam = OptimizerConfig::seed_adam();
        Self {
            model: ModelConfig::default(),
            objective: ObjectiveConfig::Ebgan(EbganConfig::default()),
            gen_optimizer: adam,
            dis_optimizer: adam,
            batch_size: 100,
            dis_steps: 1,
            dis_weight_clip: None,
        }
    }
}

impl Config {
    /// The seed's GAN: the same nets and optimizers with a logit head on D.
    pub fn seed_gan() -> Self {
        Self::seed_with(ObjectiveConfig::Gan)
    }

    /// The seed's nets and Adam with another objective. WGAN also takes its
    /// paper's training: RMSProp at 5e-5 for both nets, 5 D steps per G
    /// step and D's weights clipped to ±0.01.
    pub fn seed_with(objective: ObjectiveConfig) -> Self {
        let mut c = Self {
            objective,
            ..Self::default()
        };
        if c.objective == ObjectiveConfig::Wgan {
            c.use_wgan_training();
        }
        c
    }

    /// The WGAN paper's training settings: RMSProp at 5e-5 for both nets, 5
    /// D steps per G step, D's weights clipped to ±[`WGAN_CLIP`].
    pub fn use_wgan_training(&mut self) {
        let rmsprop = OptimizerConfig::RmsProp(kusari_trainer::RmsPropConfig::default());
        self.gen_optimizer = rmsprop;
        self.dis_optimizer = rmsprop;
        self.dis_steps = 5;
        self.dis_weight_clip = Some(WGAN_CLIP);
    }

    /// The `fast` preset's changes (`kusari train --preset fast`, the
    /// configuration with the best FID measured after ten minutes on 2
    /// cores, docs/results/presets.md), on top of the seed's recipe: no
    /// dropout in D and an EBGAN margin of 1; for the conv nets z-dim 6, G 32
    /// and D 8 base channels, a 64-value code in D and batch 50; for the MLP
    /// z-dim 64 and two hidden layers, G 1024 and D 256 units wide.
    pub fn make_fast(&mut self, arch: Arch) {
        let nets = &mut self.model;
        nets.dis.dropout = 0.0;
        if let ObjectiveConfig::Ebgan(ebgan) = &mut self.objective {
            ebgan.margin = 1.0;
        }
        match arch {
            Arch::Mlp => {
                nets.z_dim = 64;
                nets.gen.layers = 2;
                nets.dis.layers = 2;
                nets.gen.units = 1024;
                nets.dis.units = 256;
            }
            Arch::Conv => {
                nets.z_dim = 6;
                nets.gen.units = 32;
                nets.dis.units = 8;
                nets.dis.code_dim = 64;
                self.batch_size = 50;
            }
        }
    }

    /// Checks every value, naming the bad one and its valid range.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            bail!("batch_size must be at least 1");
        }
        self.gen_optimizer.validate("gen_optimizer")?;
        self.dis_optimizer.validate("dis_optimizer")?;
        if self.dis_steps == 0 {
            bail!("dis_steps (--dis-steps) must be at least 1");
        }
        if let Some(c) = self.dis_weight_clip {
            if !(c.is_finite() && c > 0.0) {
                bail!("dis_weight_clip (--clip-dis) must be a positive number, got {c}");
            }
        }
        self.objective.validate()?;
        self.model.validate()
    }
}

/// `FromStr` and `Display` with the serde (kebab-case) names, so a command
/// line can take the same words as the JSON.
macro_rules! named_choices {
    ($t:ty, $what:literal, [$($variant:ident = $name:literal),+ $(,)?]) => {
        impl $t {
            /// The names this choice accepts.
            pub const NAMES: &'static [&'static str] = &[$($name),+];
        }

        impl FromStr for $t {
            type Err = anyhow::Error;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($name => Ok(<$t>::$variant),)+
                    _ => bail!("unknown {} `{s}`; choose one of: {}", $what, Self::NAMES.join(", ")),
                }
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self {
                    $(<$t>::$variant => $name,)+
                })
            }
        }
    };
}

named_choices!(
    PtVariant,
    "pull-away variant",
    [Paper = "paper", Blog = "blog", Unsquared = "unsquared"]
);
named_choices!(
    BnStrategy,
    "batch-norm strategy",
    [
        Joint = "joint",
        Separate = "separate",
        RealStats = "real-stats"
    ]
);
named_choices!(Arch, "architecture", [Mlp = "mlp", Conv = "conv"]);
named_choices!(
    OutputActivation,
    "output activation",
    [Identity = "identity", Tanh = "tanh", Sigmoid = "sigmoid"]
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_defaults_and_json_round_trip() -> Result<()> {
        let c = Config::default();
        assert_eq!(
            (c.model.gen.units, c.model.dis.units, c.model.z_dim),
            (3200, 1024, 3)
        );
        assert_eq!(
            (c.batch_size, c.dis_steps, c.dis_weight_clip),
            (100, 1, None)
        );
        assert_eq!(c.gen_optimizer.lr(), 1e-3);
        c.validate()?;
        let json = serde_json::to_string(&c)?;
        assert!(json.contains("\"kind\":\"ebgan\""), "{json}");
        assert!(json.contains("\"batch_norm\":\"separate\""), "{json}");
        assert!(json.contains("\"kind\":\"chainer-v1\""), "{json}");
        let back: Config = serde_json::from_str(&json)?;
        assert_eq!(back, c);

        let partial: Config = serde_json::from_str(
            r#"{"objective": {"kind": "ebgan", "pt": "blog"},
                "model": {"dis": {"batch_norm": "real-stats"}, "gen": {"output": "tanh"}}}"#,
        )?;
        let ObjectiveConfig::Ebgan(e) = partial.objective else {
            panic!("ebgan expected");
        };
        assert_eq!((e.pt, e.margin, e.pt_weight), (PtVariant::Blog, 10.0, 0.1));
        assert_eq!(partial.model.dis.batch_norm, BnStrategy::RealStats);
        assert_eq!(partial.model.gen.output, OutputActivation::Tanh);
        assert_eq!(partial.model.gen.units, 3200);
        assert!(!partial.model.dis.spectral_norm);

        let gan: Config = serde_json::from_str(r#"{"objective": {"kind": "gan"}}"#)?;
        assert_eq!(gan.objective, ObjectiveConfig::Gan);
        assert!(serde_json::from_str::<Config>(r#"{"batch_sise": 3}"#).is_err());
        Ok(())
    }

    #[test]
    fn configurations_of_earlier_versions_still_read() -> Result<()> {
        // Snapshots written before optimizers had a kind stored Adam's settings bare.
        let old: Config = serde_json::from_str(
            r#"{"gen_adam": {"lr": 0.002, "beta1": 0.5, "beta2": 0.999, "eps": 1e-8},
                "dis_adam": {"lr": 0.001, "beta1": 0.5, "beta2": 0.999, "eps": 1e-8}}"#,
        )?;
        assert_eq!(old.gen_optimizer.lr(), 2e-3);
        assert!(matches!(old.dis_optimizer, OptimizerConfig::Adam(_)));
        Ok(())
    }

    #[test]
    fn wgan_takes_its_papers_training() -> Result<()> {
        let c = Config::seed_with(ObjectiveConfig::Wgan);
        c.validate()?;
        assert_eq!((c.dis_steps, c.dis_weight_clip), (5, Some(0.01)));
        assert!(matches!(c.dis_optimizer, OptimizerConfig::RmsProp(r) if r.lr == 5e-5));
        assert_eq!(c.objective.head(), DisHead::Logit);
        let json = serde_json::to_string(&c)?;
        assert!(json.contains("\"kind\":\"rmsprop\""), "{json}");
        assert_eq!(serde_json::from_str::<Config>(&json)?, c);
        Ok(())
    }

    #[test]
    fn choices_parse_and_print_their_json_names() -> Result<()> {
        for name in BnStrategy::NAMES {
            let parsed: BnStrategy = name.parse()?;
            assert_eq!(parsed.to_string(), *name);
            assert_eq!(serde_json::to_value(parsed)?, serde_json::json!(name));
        }
        for name in PtVariant::NAMES {
            assert_eq!(
                serde_json::to_value(name.parse::<PtVariant>()?)?,
                serde_json::json!(name)
            );
        }
        for name in OutputActivation::NAMES.iter().chain(Arch::NAMES) {
            let ok = name.parse::<OutputActivation>().is_ok() || name.parse::<Arch>().is_ok();
            assert!(ok, "{name}");
        }
        let err = "real_stats".parse::<BnStrategy>().unwrap_err().to_string();
        assert!(err.contains("joint, separate, real-stats"), "{err}");
        Ok(())
    }

    #[test]
    fn validation_names_the_bad_value() {
        let mut c = Config::default();
        c.model.dis.dropout = 1.0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("dis.dropout"));
        let c = Config {
            batch_size: 0,
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("batch_size"));
        let c = Config {
            dis_steps: 0,
            ..Config::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--dis-steps"));
        let c = Config {
            dis_weight_clip: Some(-1.0),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("--clip-dis"));
        let mut c = Config {
            model: ModelConfig::conv(ImageShape {
                channels: 1,
                height: 7,
                width: 7,
            }),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("7"));
        c.model = ModelConfig::conv(ImageShape::RGB64);
        assert!(c.validate().is_ok());
    }
}
