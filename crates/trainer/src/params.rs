//! [`ParamStore`]: a model's named parameters (trained) and buffers (saved but
//! not trained, such as batch-norm running statistics).
//!
//! Like candle-nn's `VarMap` but ordered, with a trainable flag, and with
//! shape-checked loading whose errors say which tensor differs and how.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{bail, Context, Result};
use candle_core::{Tensor, Var};

use crate::state::State;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Updated by optimizers.
    Parameter,
    /// Saved and restored, but not trained.
    Buffer,
}

#[derive(Debug, Clone)]
struct Entry {
    var: Var,
    kind: ParamKind,
}

/// Named variables of one model, shared by the layers that use them.
///
/// Cloning is cheap and clones share storage: a store and the layers built
/// from it see the same values. `sub("l0")` gives a view whose names are
/// prefixed `l0/`.
#[derive(Debug, Clone, Default)]
pub struct ParamStore {
    entries: Arc<Mutex<BTreeMap<String, Entry>>>,
    prefix: String,
}

impl ParamStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A view of the same store whose names are prefixed with `name/`.
    pub fn sub(&self, name: &str) -> Self {
        Self {
            entries: self.entries.clone(),
            prefix: self.full_name(name),
        }
    }

    fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        // A poisoned lock only means another thread panicked mid-insert; the
        // map itself is still consistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, name: &str, init: Tensor, kind: ParamKind) -> Result<Var> {
        let full = self.full_name(name);
        let mut entries = self.lock();
        if entries.contains_key(&full) {
            bail!("a variable named `{full}` is already registered");
        }
        let var = Var::from_tensor(&init)?;
        entries.insert(
            full,
            Entry {
                var: var.clone(),
                kind,
            },
        );
        Ok(var)
    }

    /// Registers a trainable parameter with its initial value.
    pub fn parameter(&self, name: &str, init: Tensor) -> Result<Var> {
        self.add(name, init, ParamKind::Parameter)
    }

    /// Registers a buffer (saved, not trained) with its initial value.
    pub fn buffer(&self, name: &str, init: Tensor) -> Result<Var> {
        self.add(name, init, ParamKind::Buffer)
    }

    /// Trainable parameters with their full names, in name order.
    pub fn parameters(&self) -> Vec<(String, Var)> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.kind == ParamKind::Parameter)
            .map(|(k, e)| (k.clone(), e.var.clone()))
            .collect()
    }

    /// Every variable (parameters and buffers) with its full name and kind.
    pub fn all(&self) -> Vec<(String, Var, ParamKind)> {
        self.lock()
            .iter()
            .map(|(k, e)| (k.clone(), e.var.clone(), e.kind))
            .collect()
    }

    /// The variable registered under `name` (relative to this view).
    pub fn get(&self, name: &str) -> Option<Var> {
        self.lock()
            .get(&self.full_name(name))
            .map(|e| e.var.clone())
    }

    /// Number of trainable scalars.
    pub fn parameter_count(&self) -> usize {
        self.parameters().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Current values of all variables, keyed by name.
    pub fn state(&self) -> State {
        let mut state = State::new();
        for (name, var, _) in self.all() {
            state.put_tensor(name, var.as_tensor());
        }
        state
    }

    /// Copies values from `state` into the variables. Every variable must be
    /// present with the same shape; extra tensors in `state` are an error
    /// too, since they mean the state came from a different model.
    pub fn load_state(&self, state: &State, what: &str) -> Result<()> {
        let entries = self.lock();
        for (name, entry) in entries.iter() {
            let saved = state.tensor(name).with_context(|| {
                format!("{what} lacks `{name}`: it was saved from a different architecture")
            })?;
            let want = entry.var.dims();
            if saved.dims() != want {
                bail!(
                    "{what} has `{name}` of shape {:?} but this model's is {want:?}: \
                     it was saved from a different architecture (check --arch, --units-g, \
                     --units-d, --z-dim, the depths and the image size)",
                    saved.dims()
                );
            }
            let value = saved
                .to_dtype(entry.var.dtype())?
                .to_device(entry.var.device())?;
            entry.var.set(&value)?;
        }
        if let Some(extra) = state.tensors().keys().find(|k| !entries.contains_key(*k)) {
            bail!("{what} has `{extra}`, which this model lacks: it was saved from a different architecture");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn prefixes_kinds_and_sharing() -> Result<()> {
        let store = ParamStore::new();
        let l0 = store.sub("l0");
        let w = l0.parameter(
            "weight",
            Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu)?,
        )?;
        l0.buffer(
            "mean",
            Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu)?,
        )?;
        assert!(l0
            .parameter(
                "weight",
                Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu)?
            )
            .is_err());
        let names: Vec<String> = store.parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["l0/weight"]);
        assert_eq!(store.all().len(), 2);
        assert_eq!(store.parameter_count(), 6);
        w.set(&Tensor::ones(
            (2, 3),
            candle_core::DType::F32,
            &Device::Cpu,
        )?)?;
        let seen = store.get("l0/weight").unwrap();
        assert_eq!(seen.sum_all()?.to_scalar::<f32>()?, 6.0);
        Ok(())
    }

    #[test]
    fn load_checks_names_and_shapes() -> Result<()> {
        let dev = Device::Cpu;
        let a = ParamStore::new();
        a.parameter("w", Tensor::new(&[1f32, 2.0], &dev)?)?;
        let b = ParamStore::new();
        b.parameter("w", Tensor::new(&[0f32, 0.0], &dev)?)?;
        b.load_state(&a.state(), "snapshot")?;
        assert_eq!(b.get("w").unwrap().to_vec1::<f32>()?, vec![1.0, 2.0]);

        let c = ParamStore::new();
        c.parameter("w", Tensor::new(&[0f32, 0.0, 0.0], &dev)?)?;
        let err = c
            .load_state(&a.state(), "snapshot")
            .unwrap_err()
            .to_string();
        assert!(err.contains("shape [2]") && err.contains("[3]"), "{err}");
        let d = ParamStore::new();
        d.parameter("v", Tensor::new(&[0f32, 0.0], &dev)?)?;
        let err = d
            .load_state(&a.state(), "snapshot")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lacks `v`"), "{err}");
        Ok(())
    }
}
