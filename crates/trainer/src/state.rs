//! [`State`]: what a snapshot stores for one component — named tensors plus
//! JSON metadata — and how states nest into a whole trainer's snapshot.
//!
//! A snapshot on disk is a folder holding `state.safetensors` (every tensor,
//! keyed by its full path such as `updater/models/gen/l0/weight`) and
//! `state.json` (everything else, nested the same way).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::fsutil;

/// Named tensors and JSON metadata of one component, nestable under prefixes.
#[derive(Debug, Clone, Default)]
pub struct State {
    tensors: BTreeMap<String, Tensor>,
    json: Map<String, Value>,
}

/// The file names inside a snapshot folder.
pub const TENSORS_FILE: &str = "state.safetensors";
pub const JSON_FILE: &str = "state.json";

impl State {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty() && self.json.is_empty()
    }

    /// Stores a tensor (detached, so no computation graph is kept alive).
    pub fn put_tensor(&mut self, key: impl Into<String>, tensor: &Tensor) {
        self.tensors.insert(key.into(), tensor.detach());
    }

    /// The tensor stored under `key`, or an error naming the missing key.
    pub fn tensor(&self, key: &str) -> Result<&Tensor> {
        self.tensors
            .get(key)
            .with_context(|| format!("the snapshot has no tensor `{key}`"))
    }

    pub fn tensors(&self) -> &BTreeMap<String, Tensor> {
        &self.tensors
    }

    /// Stores any serializable value as JSON metadata.
    pub fn put<T: Serialize + ?Sized>(&mut self, key: impl Into<String>, value: &T) -> Result<()> {
        self.json.insert(key.into(), serde_json::to_value(value)?);
        Ok(())
    }

    /// Reads a JSON value back, with an error naming the key on absence or mismatch.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        let value = self
            .json
            .get(key)
            .with_context(|| format!("the snapshot has no entry `{key}`"))?;
        serde_json::from_value(value.clone())
            .with_context(|| format!("the snapshot's entry `{key}` has an unexpected form"))
    }

    /// Like [`State::get`] but `None` when the key is absent.
    pub fn get_opt<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        if self.json.contains_key(key) {
            self.get(key).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.json.contains_key(key) || self.tensors.contains_key(key)
    }

    /// Puts `child` under `prefix`: its tensor `w` becomes `prefix/w` and its
    /// JSON becomes the object at `prefix`.
    pub fn nest(&mut self, prefix: &str, child: State) {
        for (k, t) in child.tensors {
            self.tensors.insert(format!("{prefix}/{k}"), t);
        }
        if !child.json.is_empty() {
            self.json
                .insert(prefix.to_string(), Value::Object(child.json));
        }
    }

    /// The part of this state stored under `prefix` (empty if none).
    pub fn child(&self, prefix: &str) -> State {
        let start = format!("{prefix}/");
        let tensors = self
            .tensors
            .range(start.clone()..)
            .take_while(|(k, _)| k.starts_with(&start))
            .map(|(k, t)| (k[start.len()..].to_string(), t.clone()))
            .collect();
        let json = match self.json.get(prefix) {
            Some(Value::Object(map)) => map.clone(),
            _ => Map::new(),
        };
        State { tensors, json }
    }

    /// Whether anything is stored under `prefix`.
    pub fn has_child(&self, prefix: &str) -> bool {
        let start = format!("{prefix}/");
        self.json.contains_key(prefix)
            || self
                .tensors
                .range(start.clone()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&start))
    }

    /// The first tensor holding a NaN or an infinity, with that value, or
    /// `None` when every floating-point tensor is finite (integer tensors
    /// always are).
    pub fn first_non_finite(&self) -> Result<Option<(String, f64)>> {
        for (key, tensor) in &self.tensors {
            if let Some(value) = first_non_finite_value(tensor)? {
                return Ok(Some((key.clone(), value)));
            }
        }
        Ok(None)
    }

    /// Writes the state as a snapshot folder, atomically: the folder appears
    /// complete under its final name or not at all.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let tensors = &self.tensors;
        let json = serde_json::to_vec_pretty(&self.json)?;
        fsutil::write_dir_atomic(dir, |tmp| {
            let on_cpu: std::collections::HashMap<&str, Tensor> = tensors
                .iter()
                .map(|(k, t)| Ok((k.as_str(), t.to_device(&Device::Cpu)?)))
                .collect::<Result<_>>()?;
            candle_core::safetensors::save(&on_cpu, tmp.join(TENSORS_FILE))?;
            fsutil::give_default_permissions(&tmp.join(TENSORS_FILE))?;
            std::fs::write(tmp.join(JSON_FILE), &json)?;
            Ok(())
        })
    }

    /// Reads a snapshot folder written by [`State::save`], placing tensors on `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        if !dir.is_dir() {
            bail!(
                "snapshot {} does not exist or is not a folder; pass the path of a \
                 `snapshot_iter_N` folder written by kusari",
                dir.display()
            );
        }
        let json_path = dir.join(JSON_FILE);
        let json_bytes = std::fs::read(&json_path).with_context(|| {
            format!(
                "snapshot {} is incomplete: cannot read {JSON_FILE}",
                dir.display()
            )
        })?;
        let json: Map<String, Value> = serde_json::from_slice(&json_bytes).with_context(|| {
            format!(
                "snapshot {} is corrupt: {JSON_FILE} is not valid JSON; \
                 resume from an older snapshot",
                dir.display()
            )
        })?;
        let tensor_path = dir.join(TENSORS_FILE);
        let bytes = std::fs::read(&tensor_path).with_context(|| {
            format!(
                "snapshot {} is incomplete: cannot read {TENSORS_FILE}",
                dir.display()
            )
        })?;
        let loaded = candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| {
            anyhow::anyhow!(
                "snapshot {} is corrupt: {TENSORS_FILE} cannot be read ({e}); \
                 resume from an older snapshot",
                dir.display()
            )
        })?;
        Ok(Self {
            tensors: loaded.into_iter().collect(),
            json,
        })
    }
}

/// The first NaN or infinity in `tensor`, read in place where it lies
/// contiguous in CPU memory (snapshots hold hundreds of MB).
fn first_non_finite_value(tensor: &Tensor) -> Result<Option<f64>> {
    use candle_core::{CpuStorage, DType, Storage};
    fn scan<T: Copy + Into<f64>>(values: &[T]) -> Option<f64> {
        values
            .iter()
            .map(|&v| v.into())
            .find(|v: &f64| !v.is_finite())
    }
    if !tensor.dtype().is_float() {
        return Ok(None);
    }
    if tensor.device().is_cpu() {
        let (storage, layout) = tensor.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            match cpu {
                CpuStorage::F32(v) => return Ok(scan(&v[start..end])),
                CpuStorage::F64(v) => return Ok(scan(&v[start..end])),
                _ => {}
            }
        }
    }
    let values: Vec<f64> = tensor.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
    Ok(scan(&values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nest_and_child_round_trip() -> Result<()> {
        let mut inner = State::new();
        inner.put_tensor("w", &Tensor::new(&[1f32, 2.0], &Device::Cpu)?);
        inner.put("step", &3u64)?;
        let mut outer = State::new();
        outer.nest("opt", inner);
        assert!(outer.has_child("opt"));
        assert!(!outer.has_child("op"));
        let back = outer.child("opt");
        assert_eq!(back.get::<u64>("step")?, 3);
        assert_eq!(back.tensor("w")?.to_vec1::<f32>()?, vec![1.0, 2.0]);
        Ok(())
    }

    #[test]
    fn save_load_round_trip_and_corruption_is_reported() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("snap");
        let mut s = State::new();
        s.put_tensor(
            "a/b",
            &Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu)?,
        );
        s.put_tensor("idx", &Tensor::new(&[7u32], &Device::Cpu)?);
        s.put("meta", &serde_json::json!({"x": 1}))?;
        s.save(&path)?;
        let back = State::load(&path, &Device::Cpu)?;
        assert_eq!(
            back.tensor("a/b")?.to_vec2::<f32>()?,
            vec![vec![1.0, 2.0], vec![3.0, 4.0]]
        );
        assert_eq!(back.tensor("idx")?.to_vec1::<u32>()?, vec![7]);
        assert_eq!(back.get::<Value>("meta")?["x"], 1);

        std::fs::write(path.join(TENSORS_FILE), b"garbage")?;
        let err = State::load(&path, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
        let err = State::load(&dir.path().join("missing"), &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
        Ok(())
    }

    #[test]
    fn non_finite_tensors_are_found_in_any_layout() -> Result<()> {
        let mut s = State::new();
        s.put_tensor("a/ok", &Tensor::new(&[1f32, 2.0], &Device::Cpu)?);
        s.put_tensor("b/int", &Tensor::new(&[7u32], &Device::Cpu)?);
        assert_eq!(s.first_non_finite()?, None);
        let t = Tensor::new(&[[1f32, f32::INFINITY], [3.0, 4.0]], &Device::Cpu)?;
        s.put_tensor("c/transposed", &t.t()?);
        let (key, value) = s.first_non_finite()?.expect("the infinity is found");
        assert_eq!((key.as_str(), value), ("c/transposed", f64::INFINITY));
        let mut d = State::new();
        d.put_tensor(
            "nan",
            &Tensor::new(&[0f64, f64::NAN], &Device::Cpu)?.narrow(0, 1, 1)?,
        );
        assert!(d.first_non_finite()?.expect("found").1.is_nan());
        Ok(())
    }
}
