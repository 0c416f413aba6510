use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, InplaceOp2, Layout, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{ElementState, ElementStep, HostOptimizer, Optimizer};
use crate::state::State;

/// Adam's hyper-parameters. The defaults are Chainer's (and the paper's).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    /// Step size (Chainer's `alpha`).
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

enum Moments {
    /// CPU: plain vectors, updated in place by a fused multi-threaded kernel.
    Host { m: Vec<f32>, v: Vec<f32> },
    /// Other devices: tensors updated with candle's ops.
    Device { m: Tensor, v: Tensor },
}

struct Slot {
    name: String,
    var: Var,
    moments: Moments,
}

/// Adam (Kingma & Ba) with Chainer's update rule:
///
/// ```text
/// m += (1 - β1)(g - m);   v += (1 - β2)(g² - v)
/// p -= lr · sqrt(1 - β2ᵗ) / (1 - β1ᵗ) · m / (sqrt(v) + eps)
/// ```
///
/// On the CPU one fused pass per parameter reads the gradient and updates
/// parameter and both moments in place, split across threads; that is several
/// times faster than the eight separate single-threaded candle ops it replaces.
pub struct Adam {
    config: AdamConfig,
    slots: Vec<Slot>,
    steps: u64,
}

impl Adam {
    /// An optimizer over `vars` (name, variable), all f32 on one device.
    pub fn new(vars: Vec<(String, Var)>, config: AdamConfig) -> Result<Self> {
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                if var.dtype() != DType::F32 {
                    bail!(
                        "Adam supports f32 parameters; `{name}` is {:?}",
                        var.dtype()
                    );
                }
                let moments = match var.device() {
                    Device::Cpu => Moments::Host {
                        m: vec![0.0; var.elem_count()],
                        v: vec![0.0; var.elem_count()],
                    },
                    _ => Moments::Device {
                        m: var.zeros_like()?,
                        v: var.zeros_like()?,
                    },
                };
                Ok(Slot { name, var, moments })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            config,
            slots,
            steps: 0,
        })
    }

    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// Replaces the settings (rate, decay rates, epsilon) and keeps the
    /// moments and the step count: a resumed run may go on with other
    /// settings.
    pub fn set_config(&mut self, config: AdamConfig) {
        self.config = config;
    }

    /// The bias-corrected step size for step `t` (1-based).
    fn corrected_lr(&self, t: u64) -> f64 {
        let c = &self.config;
        let t = t as i32;
        c.lr * (1.0 - c.beta2.powi(t)).sqrt() / (1.0 - c.beta1.powi(t))
    }

    /// The constants of step `t` (1-based).
    fn step_constants(&self, t: u64) -> AdamStep {
        let c = &self.config;
        AdamStep {
            lr: self.corrected_lr(t) as f32,
            beta1: c.beta1 as f32,
            beta2: c.beta2 as f32,
            eps: c.eps as f32,
        }
    }

    /// Whether every moment lives in host memory (the parameters are on the
    /// CPU), as [`Adam::host_moments_mut`] needs.
    pub fn is_host(&self) -> bool {
        self.slots
            .iter()
            .all(|s| matches!(s.moments, Moments::Host { .. }))
    }

    /// The first and second moments of `var` (found by identity), for an
    /// update applied outside [`Optimizer::step`]. Fails when `var` is not
    /// one of this optimizer's variables or its moments are not on the host.
    pub fn host_moments_mut(&mut self, var: &Var) -> Result<(&mut [f32], &mut [f32])> {
        let id = var.as_tensor().id();
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.var.as_tensor().id() == id)
            .context("this Adam does not update the given variable")?;
        match &mut slot.moments {
            Moments::Host { m, v } => Ok((m.as_mut_slice(), v.as_mut_slice())),
            Moments::Device { .. } => bail!(
                "the moments of `{}` live on the GPU; external steps need CPU parameters",
                slot.name
            ),
        }
    }
}

/// The constants of one Adam step (the bias-corrected step size and the
/// betas), for code that computes gradients and applies the update itself,
/// such as a kernel that updates each tile of a weight right after computing
/// its gradient. [`AdamStep::apply`] is the exact update [`Adam::step`] uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    /// `lr · sqrt(1 − β2ᵗ) / (1 − β1ᵗ)`.
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
}

impl AdamStep {
    /// Updates parameters `p` and moments `m`, `v` in place from gradients
    /// `g` (all the same length), element by element. Uses AVX2 where the
    /// CPU has it: the same IEEE operations, so the same bits, just wider.
    #[inline]
    pub fn apply(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let n = p.len();
        assert!(
            g.len() == n && m.len() == n && v.len() == n,
            "adam: length mismatch"
        );
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { self.apply_avx2(p, g, m, v) };
            return;
        }
        self.apply_portable(p, g, m, v);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn apply_avx2(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        self.apply_portable(p, g, m, v);
    }

    #[inline(always)]
    fn apply_portable(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let (lr, eps) = (self.lr, self.eps);
        let (one_b1, one_b2) = (1.0 - self.beta1, 1.0 - self.beta2);
        let n = p.len();
        let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
        for i in 0..n {
            let gi = g[i];
            let mi = m[i] + one_b1 * (gi - m[i]);
            let vi = v[i] + one_b2 * (gi * gi - v[i]);
            m[i] = mi;
            v[i] = vi;
            p[i] -= lr * mi / (vi.sqrt() + eps);
        }
    }
}

/// The fused CPU update of one parameter.
struct FusedAdam<'a> {
    moments: Mutex<(&'a mut [f32], &'a mut [f32])>,
    step: AdamStep,
}

const CHUNK: usize = 1 << 14;

impl InplaceOp2 for FusedAdam<'_> {
    fn name(&self) -> &'static str {
        "fused-adam"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        grad: &CpuStorage,
        grad_l: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(param), CpuStorage::F32(grad)) = (dst, grad) else {
            candle_core::bail!("fused-adam: f32 storage expected");
        };
        let (Some((p0, p1)), Some((g0, g1))) =
            (dst_l.contiguous_offsets(), grad_l.contiguous_offsets())
        else {
            candle_core::bail!("fused-adam: contiguous tensors expected");
        };
        let param = &mut param[p0..p1];
        let grad = &grad[g0..g1];
        let mut guard = self.moments.lock().unwrap_or_else(|e| e.into_inner());
        let (m, v) = &mut *guard;
        if m.len() != param.len() || grad.len() != param.len() {
            candle_core::bail!("fused-adam: size mismatch");
        }
        let step = self.step;
        param
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| step.apply(p, g, m, v));
        Ok(())
    }
}

impl Optimizer for Adam {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let t = self.steps + 1;
        let lr = self.corrected_lr(t);
        let constants = self.step_constants(t);
        let c = self.config;
        for slot in &mut self.slots {
            let Some(grad) = grads.get(&slot.var) else {
                continue;
            };
            match &mut slot.moments {
                Moments::Host { m, v } => {
                    let grad = grad.contiguous()?;
                    let op = FusedAdam {
                        moments: Mutex::new((m.as_mut_slice(), v.as_mut_slice())),
                        step: constants,
                    };
                    slot.var.as_tensor().inplace_op2(&grad, &op)?;
                }
                Moments::Device { m, v } => {
                    let new_m = ((&*m * c.beta1)? + (grad * (1.0 - c.beta1))?)?;
                    let new_v = ((&*v * c.beta2)? + (grad.sqr()? * (1.0 - c.beta2))?)?;
                    let update = (new_m.broadcast_div(&(new_v.sqrt()? + c.eps)?)? * lr)?;
                    slot.var.set(&(slot.var.as_tensor() - update)?)?;
                    *m = new_m;
                    *v = new_v;
                }
            }
        }
        self.steps = t;
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
            let (m, v) = match &slot.moments {
                Moments::Host { m, v } => (
                    Tensor::from_slice(m, slot.var.shape(), &Device::Cpu)?,
                    Tensor::from_slice(v, slot.var.shape(), &Device::Cpu)?,
                ),
                Moments::Device { m, v } => (m.clone(), v.clone()),
            };
            s.put_tensor(format!("m/{}", slot.name), &m);
            s.put_tensor(format!("v/{}", slot.name), &v);
        }
        Ok(s)
    }

    fn load_state(&mut self, state: &State) -> Result<()> {
        let steps: u64 = state.get("steps")?;
        let config: AdamConfig = state.get("config")?;
        for slot in &mut self.slots {
            let m = state.tensor(&format!("m/{}", slot.name))?;
            let v = state.tensor(&format!("v/{}", slot.name))?;
            if m.dims() != slot.var.dims() || v.dims() != slot.var.dims() {
                bail!(
                    "the snapshot's Adam moments for `{}` have shape {:?}, the parameter {:?}: \
                     it was saved from a different architecture",
                    slot.name,
                    m.dims(),
                    slot.var.dims()
                );
            }
            match &mut slot.moments {
                Moments::Host { m: hm, v: hv } => {
                    *hm = m.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
                    *hv = v.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
                }
                Moments::Device { m: dm, v: dv } => {
                    *dm = m.to_device(slot.var.device())?.to_dtype(DType::F32)?;
                    *dv = v.to_device(slot.var.device())?.to_dtype(DType::F32)?;
                }
            }
        }
        self.steps = steps;
        self.config = config;
        Ok(())
    }
}

impl HostOptimizer for Adam {
    fn begin_external_step(&mut self) -> ElementStep {
        self.steps += 1;
        ElementStep::Adam(self.step_constants(self.steps))
    }

    fn host_state_mut(&mut self, var: &Var) -> Result<ElementState<'_>> {
        let (first, second) = self.host_moments_mut(var)?;
        Ok(ElementState { first, second })
    }

    fn updates_exactly(&self, vars: &[&Var]) -> bool {
        self.is_host()
            && super::same_variables(self.slots.iter().map(|s| &s.var), vars.iter().copied())
    }
}

impl Adam {
    /// Names of the variables this optimizer updates, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|s| s.name.as_str())
    }

    /// The moments of `name`, mainly for tests and inspection.
    pub fn moments(&self, name: &str) -> Result<(Vec<f32>, Vec<f32>)> {
        let slot = self
            .slots
            .iter()
            .find(|s| s.name == name)
            .with_context(|| format!("Adam has no variable `{name}`"))?;
        Ok(match &slot.moments {
            Moments::Host { m, v } => (m.clone(), v.clone()),
            Moments::Device { m, v } => (m.flatten_all()?.to_vec1()?, v.flatten_all()?.to_vec1()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chainer's Adam in f64, written out independently of the kernel.
    fn reference(p0: &[f64], grads: &[Vec<f64>], c: AdamConfig) -> Vec<f64> {
        let mut p = p0.to_vec();
        let mut m = vec![0.0; p.len()];
        let mut v = vec![0.0; p.len()];
        for (t, g) in grads.iter().enumerate() {
            let t = (t + 1) as i32;
            let lr = c.lr * (1.0 - c.beta2.powi(t)).sqrt() / (1.0 - c.beta1.powi(t));
            for i in 0..p.len() {
                m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g[i];
                v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g[i] * g[i];
                p[i] -= lr * m[i] / (v[i].sqrt() + c.eps);
            }
        }
        p
    }

    fn grads_for(var: &Var, g: &[f64]) -> Result<GradStore> {
        // loss = sum(var * g) has gradient g with respect to var.
        let gt = Tensor::new(
            g.iter().map(|&x| x as f32).collect::<Vec<_>>(),
            &Device::Cpu,
        )?;
        Ok((var.as_tensor() * gt)?.sum_all()?.backward()?)
    }

    #[test]
    fn matches_reference_over_three_steps() -> Result<()> {
        let n = 40_000; // several chunks, so the threaded split is exercised
        let p0: Vec<f64> = (0..n).map(|i| ((i % 17) as f64 - 8.0) * 0.1).collect();
        let grads: Vec<Vec<f64>> = (0..3)
            .map(|t| {
                (0..n)
                    .map(|i| ((i * 7 + t * 3) % 11) as f64 * 0.05 - 0.25)
                    .collect()
            })
            .collect();
        let config = AdamConfig {
            lr: 1e-2,
            beta1: 0.5,
            beta2: 0.999,
            eps: 1e-8,
        };
        let var = Var::new(
            p0.iter().map(|&x| x as f32).collect::<Vec<_>>(),
            &Device::Cpu,
        )?;
        let mut adam = Adam::new(vec![("p".into(), var.clone())], config)?;
        for g in &grads {
            adam.step(&grads_for(&var, g)?)?;
        }
        let want = reference(&p0, &grads, config);
        let got: Vec<f32> = var.to_vec1()?;
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (*g as f64 - w).abs() <= 1e-5 * w.abs().max(1e-2),
                "{g} vs {w}"
            );
        }
        assert_eq!(adam.steps(), 3);
        Ok(())
    }

    #[test]
    fn save_load_then_step_equals_uninterrupted() -> Result<()> {
        let config = AdamConfig {
            lr: 1e-3,
            beta1: 0.5,
            ..Default::default()
        };
        let init: Vec<f32> = (0..100).map(|i| i as f32 * 0.01).collect();
        let g = |t: usize| -> Vec<f64> { (0..100).map(|i| ((i + t) % 5) as f64 - 2.0).collect() };

        let a = Var::new(init.clone(), &Device::Cpu)?;
        let mut opt_a = Adam::new(vec![("w".into(), a.clone())], config)?;
        for t in 0..4 {
            opt_a.step(&grads_for(&a, &g(t))?)?;
        }

        let b = Var::new(init.clone(), &Device::Cpu)?;
        let mut opt_b = Adam::new(vec![("w".into(), b.clone())], config)?;
        for t in 0..2 {
            opt_b.step(&grads_for(&b, &g(t))?)?;
        }
        let dir = tempfile::tempdir()?;
        opt_b.state()?.save(&dir.path().join("s"))?;
        let saved_params = b.as_tensor().copy()?;
        let c = Var::from_tensor(&saved_params)?;
        let mut opt_c = Adam::new(vec![("w".into(), c.clone())], AdamConfig::default())?;
        opt_c.load_state(&State::load(&dir.path().join("s"), &Device::Cpu)?)?;
        assert_eq!(opt_c.config(), &config);
        for t in 2..4 {
            opt_c.step(&grads_for(&c, &g(t))?)?;
        }
        assert_eq!(a.to_vec1::<f32>()?, c.to_vec1::<f32>()?);
        assert_eq!(opt_c.steps(), 4);
        Ok(())
    }

    #[test]
    fn an_external_step_equals_a_normal_step() -> Result<()> {
        let config = AdamConfig {
            lr: 1e-2,
            beta1: 0.5,
            ..Default::default()
        };
        let init: Vec<f32> = (0..1000).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
        let g = |t: usize| -> Vec<f64> {
            (0..1000)
                .map(|i| ((i * 3 + t) % 7) as f64 * 0.2 - 0.6)
                .collect()
        };
        let a = Var::new(init.clone(), &Device::Cpu)?;
        let mut normal = Adam::new(vec![("w".into(), a.clone())], config)?;
        let b = Var::new(init, &Device::Cpu)?;
        let mut external = Adam::new(vec![("w".into(), b.clone())], config)?;
        assert!(external.is_host());
        for t in 0..3 {
            normal.step(&grads_for(&a, &g(t))?)?;
            let step = external.begin_external_step();
            let grad: Vec<f32> = g(t).iter().map(|&x| x as f32).collect();
            let mut p: Vec<f32> = b.to_vec1()?;
            step.apply(&mut p, &grad, external.host_state_mut(&b)?);
            b.set(&Tensor::new(p, &Device::Cpu)?)?;
        }
        assert_eq!(a.to_vec1::<f32>()?, b.to_vec1::<f32>()?);
        assert_eq!(normal.moments("w")?, external.moments("w")?);
        assert_eq!(external.steps(), 3);
        let stranger = Var::new(&[1f32], &Device::Cpu)?;
        assert!(external.host_state_mut(&stranger).is_err());
        assert!(external.updates_exactly(&[&b]));
        assert!(!external.updates_exactly(&[&b, &stranger]));
        assert!(!external.updates_exactly(&[&stranger]));
        Ok(())
    }

    #[test]
    fn variables_without_gradients_are_untouched() -> Result<()> {
        let a = Var::new(&[1f32, 2.0], &Device::Cpu)?;
        let b = Var::new(&[3f32, 4.0], &Device::Cpu)?;
        let mut opt = Adam::new(
            vec![("a".into(), a.clone()), ("b".into(), b.clone())],
            AdamConfig::default(),
        )?;
        let grads = a.as_tensor().sum_all()?.backward()?;
        opt.step(&grads)?;
        assert_eq!(b.to_vec1::<f32>()?, vec![3.0, 4.0]);
        assert_ne!(a.to_vec1::<f32>()?, vec![1.0, 2.0]);
        Ok(())
    }
}
