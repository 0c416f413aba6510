use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::Var;

use super::{ElementState, ElementStep, HostOptimizer, Optimizer};
use crate::state::State;

/// Plain stochastic gradient descent: `p -= lr * g`.
pub struct Sgd {
    vars: Vec<Var>,
    lr: f64,
    steps: u64,
}

impl Sgd {
    pub fn new(vars: Vec<(String, Var)>, lr: f64) -> Self {
        Self {
            vars: vars.into_iter().map(|(_, v)| v).collect(),
            lr,
            steps: 0,
        }
    }
}

/// Plain gradient descent keeps no state: a kernel applies `p −= lr · g` itself.
impl HostOptimizer for Sgd {
    fn begin_external_step(&mut self) -> ElementStep {
        self.steps += 1;
        ElementStep::Sgd(self.lr as f32)
    }

    fn host_state_mut(&mut self, var: &Var) -> Result<ElementState<'_>> {
        let id = var.as_tensor().id();
        anyhow::ensure!(
            self.vars.iter().any(|v| v.as_tensor().id() == id),
            "this SGD does not update the given variable"
        );
        Ok(ElementState {
            first: &mut [],
            second: &mut [],
        })
    }

    fn updates_exactly(&self, vars: &[&Var]) -> bool {
        self.vars.iter().all(|v| v.device().is_cpu())
            && super::same_variables(self.vars.iter(), vars.iter().copied())
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        for var in &self.vars {
            if let Some(g) = grads.get(var) {
                var.set(&(var.as_tensor() - (g * self.lr)?)?)?;
            }
        }
        self.steps += 1;
        Ok(())
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn learning_rate(&self) -> f64 {
        self.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn as_host(&mut self) -> Option<&mut dyn HostOptimizer> {
        let on_cpu = self.vars.iter().all(|v| v.device().is_cpu());
        on_cpu.then_some(self as &mut dyn HostOptimizer)
    }

    fn state(&self) -> Result<State> {
        let mut s = State::new();
        s.put("steps", &self.steps)?;
        s.put("lr", &self.lr)?;
        Ok(s)
    }

    fn load_state(&mut self, state: &State) -> Result<()> {
        self.steps = state.get("steps")?;
        self.lr = state.get("lr")?;
        Ok(())
    }
}
