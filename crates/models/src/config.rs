//! Every choice an experiment makes, as plain serde structs: the CLI stores
//! them in `args.json` and in snapshots, and [`crate::Nets::build`] turns them
//! into models.
//!
//! `Config::default()` is the seed: the Chainer EBGAN-PT blog's MLP pair on
//! MNIST (G 3200 units, D 1024 units, z-dim 3, batch 100, margin 10, Adam
//! lr 1e-3 β1 0.5). In JSON every field may be left out (it takes the seed's
//! value) and unknown fields are errors, so a typo cannot pass silently.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use kusari_trainer::AdamConfig;
use serde::{Deserialize, Serialize};

/// The whole experiment: nets, objective, optimizers and batch size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The nets and the images they see.
    pub model: ModelConfig,
    /// GAN or EBGAN, with EBGAN's hyper-parameters.
    pub objective: Objective,
    /// Adam for the generator (`gen`).
    pub gen_adam: AdamConfig,
    /// Adam for the discriminator (`dis`).
    pub dis_adam: AdamConfig,
    /// Real (and fake) images per iteration.
    pub batch_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        let adam = AdamConfig {
            lr: 1e-3,
            beta1: 0.5,
            ..AdamConfig::default()
        };
        Self {
            model: ModelConfig::default(),
            objective: Objective::Ebgan(EbganConfig::default()),
            gen_adam: adam,
            dis_adam: adam,
            batch_size: 100,
        }
    }
}

impl Config {
    /// The seed's GAN: the same nets and optimizers with a logit head on D.
    pub fn seed_gan() -> Self {
        Self {
            objective: Objective::Gan,
            ..Self::default()
        }
    }

    /// Checks every value, naming the bad one and its valid range.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            bail!("batch_size must be at least 1");
        }
        for (name, adam) in [("gen_adam", &self.gen_adam), ("dis_adam", &self.dis_adam)] {
            if !(adam.lr.is_finite() && adam.lr > 0.0) {
                bail!("{name}.lr must be a positive number, got {}", adam.lr);
            }
            for (field, beta) in [("beta1", adam.beta1), ("beta2", adam.beta2)] {
                if !(0.0..1.0).contains(&beta) {
                    bail!("{name}.{field} must be in [0, 1), got {beta}");
                }
            }
            if !(adam.eps.is_finite() && adam.eps >= 0.0) {
                bail!("{name}.eps must be a non-negative number, got {}", adam.eps);
            }
        }
        if let Objective::Ebgan(e) = &self.objective {
            e.validate()?;
        }
        self.model.validate()
    }
}

/// Which adversarial game is played.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Objective {
    /// Goodfellow et al.'s GAN: D outputs a logit (sigmoid cross-entropy).
    Gan,
    /// Zhao et al.'s EBGAN: D is an auto-encoder whose reconstruction error is the energy.
    Ebgan(EbganConfig),
}

impl Objective {
    /// Whether D is EBGAN's auto-encoder.
    pub fn is_ebgan(&self) -> bool {
        matches!(self, Objective::Ebgan(_))
    }
}

/// EBGAN's hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EbganConfig {
    /// The margin `m` in `L_D = E(x) + relu(m − E(G(z)))`.
    pub margin: f64,
    /// Weight of the pull-away term in G's loss (0 turns it off: plain EBGAN).
    pub pt_weight: f64,
    /// Which pull-away formula.
    pub pt: PtVariant,
}

impl Default for EbganConfig {
    fn default() -> Self {
        Self {
            margin: 10.0,
            pt_weight: 0.1,
            pt: PtVariant::Paper,
        }
    }
}

impl EbganConfig {
    /// Checks margin and weight, naming the bad one.
    pub fn validate(&self) -> Result<()> {
        if !(self.margin.is_finite() && self.margin >= 0.0) {
            bail!("margin must be a non-negative number, got {}", self.margin);
        }
        if !self.pt_weight.is_finite() {
            bail!("pt_weight must be a finite number, got {}", self.pt_weight);
        }
        Ok(())
    }
}

/// The pull-away term's formula (see [`crate::ebgan::pull_away()`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PtVariant {
    /// The paper: mean of cos² over the N(N−1) pairs i ≠ j.
    #[default]
    Paper,
    /// The blog: sum of cos² over all N² pairs (diagonal kept) divided by N².
    Blog,
    /// cos instead of cos², over i ≠ j, divided by N(N−1), as some public code does.
    Unsquared,
}

/// How D's batch normalization treats the real and the fake batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BnStrategy {
    /// Real and fake normalized together, as one batch of 2N.
    Joint,
    /// Each batch normalized by its own statistics (the seed: D is called twice).
    #[default]
    Separate,
    /// The fake batch normalized with the real batch's mean and variance;
    /// running statistics follow real batches only.
    RealStats,
}

/// The nets' family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// Fully connected nets (the seed).
    #[default]
    Mlp,
    /// DCGAN-style convolutional nets.
    Conv,
}

/// Images as the nets see them: `[channels, height, width]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageShape {
    /// 1 for gray, 3 for RGB.
    pub channels: usize,
    /// Rows of pixels.
    pub height: usize,
    /// Columns of pixels.
    pub width: usize,
}

impl ImageShape {
    /// 28×28 gray (MNIST).
    pub const MNIST: ImageShape = ImageShape {
        channels: 1,
        height: 28,
        width: 28,
    };
    /// 64×64 RGB.
    pub const RGB64: ImageShape = ImageShape {
        channels: 3,
        height: 64,
        width: 64,
    };

    /// Values per image.
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Whether a dimension is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `[channels, height, width]`.
    pub fn dims(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }
}

/// How a net's weights are drawn (biases start at 0, BatchNorm at γ 1, β 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Init {
    /// Chainer v1's Linear and Convolution2D: N(0, wscale·sqrt(1/fan_in)).
    ChainerV1 {
        /// Chainer's `wscale` (0.02 for the seed's G, 0.002 for its D).
        wscale: f64,
    },
    /// N(0, std) whatever the fan-in (DCGAN's 0.02).
    Normal {
        /// The standard deviation.
        std: f64,
    },
}

impl Init {
    /// The standard deviation for a layer with `fan_in` inputs per output.
    pub fn std(&self, fan_in: usize) -> f64 {
        match *self {
            Init::ChainerV1 { wscale } => wscale * (1.0 / fan_in as f64).sqrt(),
            Init::Normal { std } => std,
        }
    }

    fn validate(&self, what: &str) -> Result<()> {
        let value = match *self {
            Init::ChainerV1 { wscale } => wscale,
            Init::Normal { std } => std,
        };
        if !(value.is_finite() && value >= 0.0) {
            bail!("{what}.init must have a non-negative scale, got {value}");
        }
        Ok(())
    }
}

/// G's last activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputActivation {
    /// No squashing (the seed).
    #[default]
    Identity,
    /// Into (−1, 1), the pixel range.
    Tanh,
    /// Into (0, 1).
    Sigmoid,
}

/// The generator.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenConfig {
    /// MLP: width of each hidden layer. Conv: channels of the last feature
    /// map before the image; earlier maps double per stage.
    pub units: usize,
    /// MLP: number of hidden layers. Conv: ignored (the image size sets the stages).
    pub layers: usize,
    /// How G's weights are drawn.
    pub init: Init,
    /// G's last activation.
    pub output: OutputActivation,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            units: 3200,
            layers: 4,
            init: Init::ChainerV1 { wscale: 0.02 },
            output: OutputActivation::Identity,
        }
    }
}

/// The discriminator (auto-encoder for EBGAN, logit net for GAN; same body).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DisConfig {
    /// MLP: width of each hidden layer. Conv: channels of the first feature
    /// map; later maps double per stage.
    pub units: usize,
    /// MLP: number of hidden (encoder) layers. Conv: ignored.
    pub layers: usize,
    /// MLP EBGAN: hidden layers of the decoder before its output Linear
    /// (0, the seed's: the code maps linearly to the image). Conv, GAN: ignored.
    pub decoder_layers: usize,
    /// Conv: a fully connected code of this size after the conv stages
    /// (EBGAN's decoder maps it back with a Linear, BatchNorm and ReLU); 0,
    /// the default, keeps the last feature maps as the code. MLP: ignored.
    pub code_dim: usize,
    /// How D's weights are drawn.
    pub init: Init,
    /// Dropout ratio after each hidden BatchNorm (0 disables it).
    pub dropout: f64,
    /// Negative slope of the hidden layers' leaky ReLU.
    pub leaky_slope: f64,
    /// How D's batch normalization treats the real and the fake batch.
    pub batch_norm: BnStrategy,
}

impl Default for DisConfig {
    fn default() -> Self {
        Self {
            units: 1024,
            layers: 4,
            decoder_layers: 0,
            code_dim: 0,
            init: Init::ChainerV1 { wscale: 0.002 },
            dropout: 0.5,
            leaky_slope: 0.2,
            batch_norm: BnStrategy::Separate,
        }
    }
}

/// Both nets and the data they see.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// MLP (the seed) or conv nets.
    pub arch: Arch,
    /// The images G makes and D sees.
    pub image: ImageShape,
    /// Size of the noise z.
    pub z_dim: usize,
    /// The generator.
    pub gen: GenConfig,
    /// The discriminator.
    pub dis: DisConfig,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            arch: Arch::Mlp,
            image: ImageShape::MNIST,
            z_dim: 3,
            gen: GenConfig::default(),
            dis: DisConfig::default(),
        }
    }
}

impl ModelConfig {
    /// DCGAN-style conv nets for `image` (28×28 gray or 64×64 RGB, or any
    /// square size that halves down to 4–7): 64 channels, N(0, 0.02) weights,
    /// no dropout, z-dim 100, tanh output.
    pub fn conv(image: ImageShape) -> Self {
        Self {
            arch: Arch::Conv,
            image,
            z_dim: 100,
            gen: GenConfig {
                units: 64,
                layers: 0,
                init: Init::Normal { std: 0.02 },
                output: OutputActivation::Tanh,
            },
            dis: DisConfig {
                units: 64,
                layers: 0,
                init: Init::Normal { std: 0.02 },
                dropout: 0.0,
                ..DisConfig::default()
            },
        }
    }

    /// The same MLP family with other widths (`units_g`, `units_d`).
    pub fn mlp_with_units(units_g: usize, units_d: usize) -> Self {
        let mut c = Self::default();
        c.gen.units = units_g;
        c.dis.units = units_d;
        c
    }

    /// Checks every value, naming the bad one and its valid range.
    pub fn validate(&self) -> Result<()> {
        if self.z_dim == 0 {
            bail!("z_dim must be at least 1");
        }
        if self.image.is_empty() {
            bail!(
                "image must have positive channels, height and width, got {:?}",
                self.image
            );
        }
        if self.gen.units == 0 || self.dis.units == 0 {
            bail!("gen.units and dis.units must be at least 1");
        }
        self.gen.init.validate("gen")?;
        self.dis.init.validate("dis")?;
        if !(0.0..1.0).contains(&self.dis.dropout) {
            bail!("dis.dropout must be in [0, 1), got {}", self.dis.dropout);
        }
        if !self.dis.leaky_slope.is_finite() {
            bail!(
                "dis.leaky_slope must be finite, got {}",
                self.dis.leaky_slope
            );
        }
        match self.arch {
            Arch::Mlp => {
                if self.gen.layers == 0 || self.dis.layers == 0 {
                    bail!("gen.layers and dis.layers must be at least 1 for the MLP nets");
                }
                if self.dis.code_dim > 0 {
                    bail!("a code size (--code-dim) applies to the conv nets (--arch conv); the MLP's code is its last hidden layer (--units-d)");
                }
            }
            Arch::Conv => {
                crate::nets::conv::Stages::of(self.image)?;
            }
        }
        Ok(())
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
        assert_eq!(c.batch_size, 100);
        assert_eq!(c.gen_adam.beta1, 0.5);
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
        let Objective::Ebgan(e) = partial.objective else {
            panic!("ebgan expected");
        };
        assert_eq!((e.pt, e.margin, e.pt_weight), (PtVariant::Blog, 10.0, 0.1));
        assert_eq!(partial.model.dis.batch_norm, BnStrategy::RealStats);
        assert_eq!(partial.model.gen.output, OutputActivation::Tanh);
        assert_eq!(partial.model.gen.units, 3200);

        let gan: Config = serde_json::from_str(r#"{"objective": {"kind": "gan"}}"#)?;
        assert_eq!(gan.objective, Objective::Gan);
        assert!(serde_json::from_str::<Config>(r#"{"batch_sise": 3}"#).is_err());
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
