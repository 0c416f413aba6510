use anyhow::{bail, Result};
use kusari_trainer::{Adam, AdamConfig, Optimizer, RmsProp, RmsPropConfig};
use serde::{Deserialize, Deserializer, Serialize};

/// One net's optimizer and its settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum OptimizerConfig {
    /// Adam with Chainer's update rule.
    Adam(AdamConfig),
    /// RMSProp, as the WGAN paper trains with it.
    #[serde(rename = "rmsprop")]
    RmsProp(RmsPropConfig),
}

impl OptimizerConfig {
    /// The seed's Adam: lr 1e-3, β1 0.5.
    pub fn seed_adam() -> Self {
        Self::Adam(AdamConfig {
            lr: 1e-3,
            beta1: 0.5,
            ..AdamConfig::default()
        })
    }

    /// The step size.
    pub fn lr(&self) -> f64 {
        match self {
            Self::Adam(a) => a.lr,
            Self::RmsProp(r) => r.lr,
        }
    }

    /// Sets the step size.
    pub fn set_lr(&mut self, lr: f64) {
        match self {
            Self::Adam(a) => a.lr = lr,
            Self::RmsProp(r) => r.lr = lr,
        }
    }

    /// The optimizer over `vars`.
    pub fn build(&self, vars: Vec<(String, candle_core::Var)>) -> Result<Box<dyn Optimizer>> {
        Ok(match *self {
            Self::Adam(c) => Box::new(Adam::new(vars, c)?),
            Self::RmsProp(c) => Box::new(RmsProp::new(vars, c)?),
        })
    }

    /// Gives `optimizer` (built from a configuration of the same kind) these
    /// settings, keeping its moments and step count.
    pub fn apply_to(&self, optimizer: &mut dyn Optimizer) -> Result<()> {
        let Some(any) = optimizer.as_any_mut() else {
            bail!("this optimizer's settings cannot be changed");
        };
        match *self {
            Self::Adam(c) => match any.downcast_mut::<Adam>() {
                Some(adam) => adam.set_config(c),
                None => bail!("the run's optimizer is not Adam; keep --optimizer as it was"),
            },
            Self::RmsProp(c) => match any.downcast_mut::<RmsProp>() {
                Some(rmsprop) => rmsprop.set_config(c),
                None => bail!("the run's optimizer is not RMSProp; keep --optimizer as it was"),
            },
        }
        Ok(())
    }

    /// Checks every setting, naming `what` (e.g. `gen_optimizer`) and the bad value.
    pub fn validate(&self, what: &str) -> Result<()> {
        let lr = self.lr();
        if !(lr.is_finite() && lr > 0.0) {
            bail!("{what}.lr must be a positive number, got {lr}");
        }
        match self {
            Self::Adam(a) => {
                for (field, beta) in [("beta1", a.beta1), ("beta2", a.beta2)] {
                    if !(0.0..1.0).contains(&beta) {
                        bail!("{what}.{field} must be in [0, 1), got {beta}");
                    }
                }
                if !(a.eps.is_finite() && a.eps >= 0.0) {
                    bail!("{what}.eps must be a non-negative number, got {}", a.eps);
                }
            }
            Self::RmsProp(r) => {
                if !(0.0..1.0).contains(&r.alpha) {
                    bail!("{what}.alpha must be in [0, 1), got {}", r.alpha);
                }
                if !(r.eps.is_finite() && r.eps >= 0.0) {
                    bail!("{what}.eps must be a non-negative number, got {}", r.eps);
                }
            }
        }
        Ok(())
    }
}

/// The tagged form, or Adam's settings alone as configurations stored them
/// before optimizers had a kind.
impl<'de> Deserialize<'de> for OptimizerConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
        enum Tagged {
            Adam(AdamConfig),
            #[serde(rename = "rmsprop")]
            RmsProp(RmsPropConfig),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Tagged(Tagged),
            Bare(AdamConfig),
        }
        Ok(match Either::deserialize(deserializer)? {
            Either::Tagged(Tagged::Adam(a)) | Either::Bare(a) => Self::Adam(a),
            Either::Tagged(Tagged::RmsProp(r)) => Self::RmsProp(r),
        })
    }
}
