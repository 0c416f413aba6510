use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{ElementState, ElementStep, HostOptimizer, Optimizer};
use crate::state::State;

/// RMSProp's hyper-parameters. The defaults are Chainer's and PyTorch's,
/// but the step size, which the WGAN paper sets to 5e-5.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RmsPropConfig {
    /// Step size.
    pub lr: f64,
    /// Decay of the running mean square (`alpha`).
    pub alpha: f64,
    /// Added to the root mean square.
    pub eps: f64,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        Self {
            lr: 5e-5,
            alpha: 0.99,
            eps: 1e-8,
        }
    }
}

/// The constants of one RMSProp step, for code that applies the update
/// itself ([`RmsPropStep::apply`] is the exact update [`RmsProp::step`] uses).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmsPropStep {
    pub lr: f32,
    pub alpha: f32,
    pub eps: f32,
}

impl RmsPropStep {
    /// Updates `p` and the mean square `ms` in place from the gradient `g`:
    /// `ms = α·ms + (1 − α)·g²`, `p −= lr · g / (sqrt(ms) + eps)`.
    #[inline]
    pub fn apply(&self, p: &mut [f32], g: &[f32], ms: &mut [f32]) {
        let n = p.len();
        assert!(g.len() == n && ms.len() == n, "rmsprop: length mismatch");
        let (lr, alpha, eps) = (self.lr, self.alpha, self.eps);
        let one_alpha = 1.0 - alpha;
        for i in 0..n {
            let gi = g[i];
            let s = alpha * ms[i] + one_alpha * gi * gi;
            ms[i] = s;
            p[i] -= lr * gi / (s.sqrt() + eps);
        }
    }
}

enum MeanSquare {
    Host(Vec<f32>),
    Device(Tensor),
}

struct Slot {
    name: String,
    var: Var,
    ms: MeanSquare,
}

/// RMSProp (Tieleman & Hinton), as Chainer and PyTorch define it:
///
/// ```text
/// ms = α·ms + (1 − α)·g²
/// p -= lr · g / (sqrt(ms) + eps)
/// ```
///
/// The WGAN paper trains its critic and generator with it at 5e-5. Its
/// state (the mean squares and the step count) goes into snapshots as
/// Adam's does.
pub struct RmsProp {
    config: RmsPropConfig,
    slots: Vec<Slot>,
    steps: u64,
}

const CHUNK: usize = 1 << 14;

impl RmsProp {
    /// An optimizer over `vars` (name, variable), all f32.
    pub fn new(vars: Vec<(String, Var)>, config: RmsPropConfig) -> Result<Self> {
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                if var.dtype() != DType::F32 {
                    bail!(
                        "RMSProp supports f32 parameters; `{name}` is {:?}",
                        var.dtype()
                    );
                }
                let ms = match var.device() {
                    Device::Cpu => MeanSquare::Host(vec![0.0; var.elem_count()]),
                    _ => MeanSquare::Device(var.zeros_like()?),
                };
                Ok(Slot { name, var, ms })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            config,
            slots,
            steps: 0,
        })
    }

    pub fn config(&self) -> &RmsPropConfig {
        &self.config
    }

    /// Replaces the settings (rate, decay rates, epsilon) and keeps the
    /// moments and the step count: a resumed run may go on with other
    /// settings.
    pub fn set_config(&mut self, config: RmsPropConfig) {
        self.config = config;
    }

    fn constants(&self) -> RmsPropStep {
        RmsPropStep {
            lr: self.config.lr as f32,
            alpha: self.config.alpha as f32,
            eps: self.config.eps as f32,
        }
    }

    fn is_host(&self) -> bool {
        self.slots
            .iter()
            .all(|s| matches!(s.ms, MeanSquare::Host(_)))
    }

    /// The mean square of `name`, mainly for tests and inspection.
    pub fn mean_square(&self, name: &str) -> Result<Vec<f32>> {
        let slot = self
            .slots
            .iter()
            .find(|s| s.name == name)
            .with_context(|| format!("RMSProp has no variable `{name}`"))?;
        Ok(match &slot.ms {
            MeanSquare::Host(ms) => ms.clone(),
            MeanSquare::Device(ms) => ms.flatten_all()?.to_vec1()?,
        })
    }
}

impl Optimizer for RmsProp {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let step = self.constants();
        let c = self.config;
        for slot in &mut self.slots {
            let Some(grad) = grads.get(&slot.var) else {
                continue;
            };
            match &mut slot.ms {
                MeanSquare::Host(ms) => {
                    let grad: Vec<f32> = grad.flatten_all()?.to_vec1()?;
                    let mut p: Vec<f32> = slot.var.flatten_all()?.to_vec1()?;
                    p.par_chunks_mut(CHUNK)
                        .zip(grad.par_chunks(CHUNK))
                        .zip(ms.par_chunks_mut(CHUNK))
                        .for_each(|((p, g), ms)| step.apply(p, g, ms));
                    let updated = Tensor::from_vec(p, slot.var.shape(), slot.var.device())?;
                    slot.var.set(&updated)?;
                }
                MeanSquare::Device(ms) => {
                    let new_ms = ((&*ms * c.alpha)? + (grad.sqr()? * (1.0 - c.alpha))?)?;
                    let update = ((grad * c.lr)? / (new_ms.sqrt()? + c.eps)?)?;
                    slot.var.set(&(slot.var.as_tensor() - update)?)?;
                    *ms = new_ms;
                }
            }
        }
        self.steps += 1;
        Ok(())
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }

    fn as_host(&mut self) -> Option<&mut dyn HostOptimizer> {
        self.is_host().then_some(self as &mut dyn HostOptimizer)
    }

    fn state(&self) -> Result<State> {
        let mut s = State::new();
        s.put("steps", &self.steps)?;
        s.put("config", &self.config)?;
        for slot in &self.slots {
            let ms = match &slot.ms {
                MeanSquare::Host(ms) => Tensor::from_slice(ms, slot.var.shape(), &Device::Cpu)?,
                MeanSquare::Device(ms) => ms.clone(),
            };
            s.put_tensor(format!("ms/{}", slot.name), &ms);
        }
        Ok(s)
    }

    fn load_state(&mut self, state: &State) -> Result<()> {
        let steps: u64 = state.get("steps")?;
        let config: RmsPropConfig = state.get("config").context(
            "the snapshot holds no RMSProp state: was it trained with another optimizer?",
        )?;
        for slot in &mut self.slots {
            let ms = state.tensor(&format!("ms/{}", slot.name))?;
            if ms.dims() != slot.var.dims() {
                bail!(
                    "the snapshot's RMSProp mean square for `{}` has shape {:?}, the parameter {:?}: \
                     it was saved from a different architecture",
                    slot.name,
                    ms.dims(),
                    slot.var.dims()
                );
            }
            match &mut slot.ms {
                MeanSquare::Host(host) => {
                    *host = ms.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?
                }
                MeanSquare::Device(dev) => {
                    *dev = ms.to_device(slot.var.device())?.to_dtype(DType::F32)?
                }
            }
        }
        self.steps = steps;
        self.config = config;
        Ok(())
    }
}

impl HostOptimizer for RmsProp {
    fn begin_external_step(&mut self) -> ElementStep {
        self.steps += 1;
        ElementStep::RmsProp(self.constants())
    }

    fn host_state_mut(&mut self, var: &Var) -> Result<ElementState<'_>> {
        let id = var.as_tensor().id();
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.var.as_tensor().id() == id)
            .context("this RMSProp does not update the given variable")?;
        match &mut slot.ms {
            MeanSquare::Host(ms) => Ok(ElementState {
                first: &mut [],
                second: ms.as_mut_slice(),
            }),
            MeanSquare::Device(_) => bail!(
                "the state of `{}` lives on the GPU; external steps need CPU parameters",
                slot.name
            ),
        }
    }

    fn updates_exactly(&self, vars: &[&Var]) -> bool {
        self.is_host()
            && super::same_variables(self.slots.iter().map(|s| &s.var), vars.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RMSProp in f64, written out from the definition.
    fn reference(p0: &[f64], grads: &[Vec<f64>], c: RmsPropConfig) -> Vec<f64> {
        let mut p = p0.to_vec();
        let mut ms = vec![0.0; p.len()];
        for g in grads {
            for i in 0..p.len() {
                ms[i] = c.alpha * ms[i] + (1.0 - c.alpha) * g[i] * g[i];
                p[i] -= c.lr * g[i] / (ms[i].sqrt() + c.eps);
            }
        }
        p
    }

    fn grads_for(var: &Var, g: &[f64]) -> Result<GradStore> {
        let gt = Tensor::new(
            g.iter().map(|&x| x as f32).collect::<Vec<_>>(),
            &Device::Cpu,
        )?;
        Ok((var.as_tensor() * gt)?.sum_all()?.backward()?)
    }

    #[test]
    fn matches_the_definition_and_resumes_exactly() -> Result<()> {
        let n = 40_000;
        let p0: Vec<f64> = (0..n).map(|i| ((i % 17) as f64 - 8.0) * 0.1).collect();
        let grads: Vec<Vec<f64>> = (0..4)
            .map(|t| {
                (0..n)
                    .map(|i| ((i * 7 + t * 3) % 11) as f64 * 0.05 - 0.25)
                    .collect()
            })
            .collect();
        let config = RmsPropConfig {
            lr: 1e-2,
            ..RmsPropConfig::default()
        };
        let init: Vec<f32> = p0.iter().map(|&x| x as f32).collect();
        let var = Var::new(init.clone(), &Device::Cpu)?;
        let mut opt = RmsProp::new(vec![("p".into(), var.clone())], config)?;
        for g in &grads[..2] {
            opt.step(&grads_for(&var, g)?)?;
        }
        // Through a snapshot into a fresh optimizer with other settings.
        let dir = tempfile::tempdir()?;
        opt.state()?.save(&dir.path().join("s"))?;
        let resumed = Var::from_tensor(&var.as_tensor().copy()?)?;
        let mut opt = RmsProp::new(
            vec![("p".into(), resumed.clone())],
            RmsPropConfig::default(),
        )?;
        opt.load_state(&State::load(&dir.path().join("s"), &Device::Cpu)?)?;
        assert_eq!(opt.config(), &config);
        for g in &grads[2..] {
            opt.step(&grads_for(&resumed, g)?)?;
        }
        assert_eq!(opt.steps(), 4);
        let want = reference(&p0, &grads, config);
        let got: Vec<f32> = resumed.to_vec1()?;
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (*g as f64 - w).abs() <= 1e-5 * w.abs().max(1e-2),
                "{g} vs {w}"
            );
        }
        Ok(())
    }

    #[test]
    fn an_external_step_equals_a_normal_step() -> Result<()> {
        let init: Vec<f32> = (0..1000).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
        let g: Vec<f64> = (0..1000).map(|i| (i % 7) as f64 * 0.2 - 0.6).collect();
        let a = Var::new(init.clone(), &Device::Cpu)?;
        let mut normal = RmsProp::new(vec![("w".into(), a.clone())], RmsPropConfig::default())?;
        let b = Var::new(init, &Device::Cpu)?;
        let mut external = RmsProp::new(vec![("w".into(), b.clone())], RmsPropConfig::default())?;
        for _ in 0..3 {
            normal.step(&grads_for(&a, &g)?)?;
            let host = external.as_host().expect("CPU parameters");
            let step = host.begin_external_step();
            let grad: Vec<f32> = g.iter().map(|&x| x as f32).collect();
            let mut p: Vec<f32> = b.to_vec1()?;
            step.apply(&mut p, &grad, host.host_state_mut(&b)?);
            b.set(&Tensor::new(p, &Device::Cpu)?)?;
        }
        assert_eq!(a.to_vec1::<f32>()?, b.to_vec1::<f32>()?);
        assert_eq!(normal.mean_square("w")?, external.mean_square("w")?);
        assert_eq!(external.steps(), 3);
        Ok(())
    }
}
