//! [`Dataset`]: indexed access to training examples, and [`ArrayDataset`],
//! the in-memory dataset of fixed-shape `f32` examples that images become.

use std::sync::Arc;

use anyhow::{bail, Result};

/// A finite collection of examples addressed by index, as Chainer's datasets are.
pub trait Dataset: Send + Sync {
    type Example;

    /// Number of examples.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The example at `index` (`0..len()`).
    fn get(&self, index: usize) -> Result<Self::Example>;
}

impl<D: Dataset + ?Sized> Dataset for Arc<D> {
    type Example = D::Example;
    fn len(&self) -> usize {
        (**self).len()
    }
    fn get(&self, index: usize) -> Result<Self::Example> {
        (**self).get(index)
    }
}

/// One example of an [`ArrayDataset`]: its values (in the dataset's example
/// shape, row-major) and optional class label.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub values: Vec<f32>,
    pub shape: Arc<[usize]>,
    pub label: Option<u32>,
}

/// Examples of one fixed shape stored contiguously in memory.
#[derive(Debug, Clone)]
pub struct ArrayDataset {
    values: Arc<[f32]>,
    shape: Arc<[usize]>,
    labels: Option<Arc<[u32]>>,
    example_len: usize,
}

impl ArrayDataset {
    /// `values` holds `n` examples of `example_shape` back to back; `labels`, if
    /// given, holds one label per example.
    pub fn new(
        values: Vec<f32>,
        example_shape: &[usize],
        labels: Option<Vec<u32>>,
    ) -> Result<Self> {
        Self::from_shared(values.into(), example_shape, labels)
    }

    /// [`ArrayDataset::new`] for values already in an `Arc`, which saves
    /// copying large datasets (a `Vec` → `Arc<[f32]>` conversion copies).
    pub fn from_shared(
        values: Arc<[f32]>,
        example_shape: &[usize],
        labels: Option<Vec<u32>>,
    ) -> Result<Self> {
        let example_len: usize = example_shape.iter().product();
        if example_len == 0 {
            bail!("an example shape must have no zero dimension, got {example_shape:?}");
        }
        if !values.len().is_multiple_of(example_len) {
            bail!(
                "{} values do not divide into examples of shape {example_shape:?}",
                values.len()
            );
        }
        let n = values.len() / example_len;
        if let Some(labels) = &labels {
            if labels.len() != n {
                bail!("{} labels for {n} examples", labels.len());
            }
        }
        Ok(Self {
            values,
            shape: example_shape.into(),
            labels: labels.map(Into::into),
            example_len,
        })
    }

    pub fn example_shape(&self) -> &[usize] {
        &self.shape
    }

    /// The values of example `index` without copying.
    pub fn values_of(&self, index: usize) -> &[f32] {
        &self.values[index * self.example_len..(index + 1) * self.example_len]
    }

    pub fn labels(&self) -> Option<&[u32]> {
        self.labels.as_deref()
    }

    /// All values, `len() * example_len` of them.
    pub fn all_values(&self) -> &[f32] {
        &self.values
    }

    /// A fingerprint of the contents (example shape, every value, every
    /// label; not where they were read from): equal for the same images in
    /// the same order wherever they lie, different when any value differs.
    /// 16 hex digits of FNV-1a over the bits.
    pub fn fingerprint(&self) -> String {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut mix = |word: u64| {
            hash ^= word;
            hash = hash.wrapping_mul(PRIME);
        };
        for &d in self.shape.iter() {
            mix(d as u64);
        }
        mix(self.values.len() as u64);
        for pair in self.values.chunks(2) {
            let high = pair.get(1).map_or(0, |v| u64::from(v.to_bits()));
            mix(u64::from(pair[0].to_bits()) | (high << 32));
        }
        if let Some(labels) = &self.labels {
            mix(labels.len() as u64);
            for &l in labels.iter() {
                mix(u64::from(l));
            }
        }
        format!("{hash:016x}")
    }

    /// A dataset of the first `n` examples (or all, if fewer).
    pub fn take(&self, n: usize) -> Self {
        let n = n.min(self.len());
        Self {
            values: self.values[..n * self.example_len].into(),
            shape: self.shape.clone(),
            labels: self.labels.as_ref().map(|l| l[..n].into()),
            example_len: self.example_len,
        }
    }
}

impl Dataset for ArrayDataset {
    type Example = Example;

    fn len(&self) -> usize {
        self.values.len() / self.example_len
    }

    fn get(&self, index: usize) -> Result<Example> {
        if index >= self.len() {
            bail!(
                "index {index} is out of range for a dataset of {} examples",
                self.len()
            );
        }
        Ok(Example {
            values: self.values_of(index).to_vec(),
            shape: self.shape.clone(),
            label: self.labels.as_ref().map(|l| l[index]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_dataset_indexes_examples() -> Result<()> {
        let ds = ArrayDataset::new(
            (0..12).map(|v| v as f32).collect(),
            &[2, 2],
            Some(vec![0, 1, 2]),
        )?;
        assert_eq!(ds.len(), 3);
        let e = ds.get(1)?;
        assert_eq!(e.values, vec![4.0, 5.0, 6.0, 7.0]);
        assert_eq!(e.label, Some(1));
        assert!(ds.get(3).is_err());
        assert!(ArrayDataset::new(vec![0.0; 5], &[2], None).is_err());
        assert!(ArrayDataset::new(vec![0.0; 4], &[2], Some(vec![1])).is_err());
        assert_eq!(ds.take(2).len(), 2);
        Ok(())
    }

    #[test]
    fn fingerprints_follow_the_contents() -> Result<()> {
        let values: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let a = ArrayDataset::new(values.clone(), &[2, 2], None)?;
        let same = ArrayDataset::new(values.clone(), &[2, 2], None)?;
        assert_eq!(a.fingerprint(), same.fingerprint());
        let mut changed = values.clone();
        changed[11] = 11.5;
        let other = ArrayDataset::new(changed, &[2, 2], None)?;
        assert_ne!(a.fingerprint(), other.fingerprint());
        assert_ne!(
            a.fingerprint(),
            ArrayDataset::new(values, &[4], None)?.fingerprint()
        );
        assert_eq!(a.fingerprint().len(), 16);
        Ok(())
    }
}
