use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::Optimizer;
use crate::state::State;

/// Optimizers by name ("gen", "dis"), as an updater owns them.
#[derive(Default)]
pub struct Optimizers {
    map: BTreeMap<String, Box<dyn Optimizer>>,
}

impl Optimizers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the optimizer called `name`.
    pub fn insert(&mut self, name: impl Into<String>, optimizer: impl Optimizer + 'static) {
        self.map.insert(name.into(), Box::new(optimizer));
    }

    pub fn get(&self, name: &str) -> Result<&dyn Optimizer> {
        self.map
            .get(name)
            .map(|b| b.as_ref())
            .with_context(|| format!("no optimizer named `{name}` (have: {:?})", self.names()))
    }

    pub fn get_mut(&mut self, name: &str) -> Result<&mut (dyn Optimizer + 'static)> {
        let names = self.names();
        self.map
            .get_mut(name)
            .map(|b| b.as_mut())
            .with_context(|| format!("no optimizer named `{name}` (have: {names:?})"))
    }

    pub fn names(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &dyn Optimizer)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v.as_ref()))
    }

    pub fn state(&self) -> Result<State> {
        let mut state = State::new();
        for (name, opt) in &self.map {
            state.nest(name, opt.state()?);
        }
        Ok(state)
    }

    pub fn load_state(&mut self, state: &State) -> Result<()> {
        for (name, opt) in &mut self.map {
            opt.load_state(&state.child(name))
                .with_context(|| format!("restoring optimizer `{name}`"))?;
        }
        Ok(())
    }
}
