use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::model::DisHead;

/// The WGAN paper's clip of the critic's weights.
pub const WGAN_CLIP: f64 = 0.01;

/// Which adversarial objective is trained (the `crate::objective` module
/// holds each one's losses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ObjectiveConfig {
    /// Goodfellow et al.'s GAN with the seed's labels: D outputs a logit
    /// (sigmoid cross-entropy).
    Gan,
    /// Zhao et al.'s EBGAN: D is an auto-encoder whose reconstruction error is the energy.
    Ebgan(EbganConfig),
    /// Mao et al.'s least-squares GAN (labels 0 for fakes, 1 for real images).
    Lsgan,
    /// The hinge loss of SNGAN and BigGAN.
    Hinge,
    /// Arjovsky et al.'s Wasserstein GAN (its clipping, critic steps and
    /// RMSProp are the `Config`'s own settings).
    Wgan,
}

impl ObjectiveConfig {
    /// The names `kusari train` takes, in order.
    pub const NAMES: [&'static str; 5] = ["gan", "ebgan", "lsgan", "hinge", "wgan"];

    /// The objective's name as `kusari train` takes it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Gan => "gan",
            Self::Ebgan(_) => "ebgan",
            Self::Lsgan => "lsgan",
            Self::Hinge => "hinge",
            Self::Wgan => "wgan",
        }
    }

    /// The objective of that name, with default hyper-parameters.
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "gan" => Self::Gan,
            "ebgan" => Self::Ebgan(EbganConfig::default()),
            "lsgan" => Self::Lsgan,
            "hinge" => Self::Hinge,
            "wgan" => Self::Wgan,
            other => bail!(
                "unknown objective `{other}`; choose one of: {}",
                Self::NAMES.join(", ")
            ),
        })
    }

    /// Whether D is EBGAN's auto-encoder.
    pub fn is_ebgan(&self) -> bool {
        matches!(self, Self::Ebgan(_))
    }

    /// The D this objective reads.
    pub fn head(&self) -> DisHead {
        match self {
            Self::Ebgan(_) => DisHead::AutoEncoder,
            _ => DisHead::Logit,
        }
    }

    /// Checks the hyper-parameters, naming the bad one.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Ebgan(e) => e.validate(),
            _ => Ok(()),
        }
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

/// The pull-away term's formula (see `objective::ebgan::pull_away`).
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
