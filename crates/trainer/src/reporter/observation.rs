use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};

/// A reported value: a host number, or a 0-d tensor read lazily.
#[derive(Debug, Clone)]
pub enum Value {
    Scalar(f64),
    Tensor(Tensor),
}

impl Value {
    /// The value as an `f64` (reads a tensor back from its device).
    pub fn to_f64(&self) -> Result<f64> {
        match self {
            Value::Scalar(x) => Ok(*x),
            Value::Tensor(t) => {
                let t = if t.rank() == 0 {
                    t.clone()
                } else {
                    t.mean_all()?
                };
                Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
            }
        }
    }

    pub(crate) fn detached(self) -> Self {
        match self {
            Value::Tensor(t) => Value::Tensor(t.detach()),
            other => other,
        }
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value::Scalar(x)
    }
}

impl From<f32> for Value {
    fn from(x: f32) -> Self {
        Value::Scalar(f64::from(x))
    }
}

impl From<Tensor> for Value {
    fn from(t: Tensor) -> Self {
        Value::Tensor(t)
    }
}

impl From<&Tensor> for Value {
    fn from(t: &Tensor) -> Self {
        Value::Tensor(t.clone())
    }
}

/// The values reported during one iteration, by key. Cheap to clone; clones share contents.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    values: Arc<Mutex<BTreeMap<String, Value>>>,
}

impl Observation {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Value>> {
        self.values.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, key: impl Into<String>, value: impl Into<Value>) {
        self.lock().insert(key.into(), value.into());
    }

    pub fn get(&self, key: &str) -> Option<Value> {
        self.lock().get(key).cloned()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    /// The value of `key` as a number, `None` if not reported.
    pub fn scalar(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            Some(v) => v
                .to_f64()
                .with_context(|| format!("reading reported value `{key}`"))
                .map(Some),
            None => Ok(None),
        }
    }

    pub fn keys(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    pub fn entries(&self) -> Vec<(String, Value)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}
