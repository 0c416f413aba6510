use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// What D computes from its body's code: one logit per image (GAN, LSGAN,
/// hinge, WGAN), or EBGAN's reconstruction of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DisHead {
    /// A Linear from the code to one value.
    Logit,
    /// A decoder from the code back to an image: D is an auto-encoder.
    AutoEncoder,
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

/// The discriminator (auto-encoder for EBGAN, logit net for the others; same body).
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
    /// Every weight of D divided by an estimate of its largest singular
    /// value (Miyato et al. 2018), one power iteration per D step.
    pub spectral_norm: bool,
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
            spectral_norm: false,
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
                ConvStages::of(self.image)?;
            }
        }
        Ok(())
    }
}

/// How many stride-2 stages an image size allows the conv nets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvStages {
    /// Number of halvings (≥ 1).
    pub count: usize,
    /// The side of the smallest feature map.
    pub smallest: usize,
}

impl ConvStages {
    /// Halves the side while it stays even and at least 4.
    pub fn of(image: ImageShape) -> Result<Self> {
        if image.height != image.width {
            bail!(
                "the conv nets need square images, got {}×{}; use --arch mlp or resize the data",
                image.height,
                image.width
            );
        }
        let mut side = image.height;
        let mut count = 0;
        while side.is_multiple_of(2) && side / 2 >= 4 {
            side /= 2;
            count += 1;
        }
        if count == 0 {
            bail!(
                "the conv nets need an image side that halves at least once to 4 or more \
                 (such as 28 or 64), got {}; use --arch mlp",
                image.height
            );
        }
        Ok(Self {
            count,
            smallest: side,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_of_common_sizes() -> Result<()> {
        assert_eq!(
            ConvStages::of(ImageShape::MNIST)?,
            ConvStages {
                count: 2,
                smallest: 7
            }
        );
        assert_eq!(
            ConvStages::of(ImageShape::RGB64)?,
            ConvStages {
                count: 4,
                smallest: 4
            }
        );
        let odd = ImageShape {
            channels: 1,
            height: 7,
            width: 7,
        };
        assert!(ConvStages::of(odd)
            .unwrap_err()
            .to_string()
            .contains("got 7"));
        let wide = ImageShape {
            channels: 1,
            height: 28,
            width: 32,
        };
        assert!(ConvStages::of(wide).is_err());
        Ok(())
    }
}
