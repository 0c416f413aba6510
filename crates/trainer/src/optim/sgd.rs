use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::Var;

use super::Optimizer;
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
