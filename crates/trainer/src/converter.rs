//! Converters turn a list of examples into the tensors an update consumes —
//! the role of Chainer's `concat_examples`.

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};

use crate::dataset::Example;

/// Builds a batch on `device` from the examples an iterator returned.
pub trait Converter<E>: Send {
    type Batch;
    fn convert(&self, examples: &[E], device: &Device) -> Result<Self::Batch>;
}

impl<E, B, F> Converter<E> for F
where
    F: Fn(&[E], &Device) -> Result<B> + Send,
{
    type Batch = B;
    fn convert(&self, examples: &[E], device: &Device) -> Result<B> {
        self(examples, device)
    }
}

/// A batch of [`Example`]s stacked along a new leading axis.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[batch, ...example_shape]`, f32.
    pub values: Tensor,
    /// `[batch]`, u32, when every example has a label.
    pub labels: Option<Tensor>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.values.dim(0).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Stacks [`Example`]s into a [`Batch`] (values and, if all present, labels).
#[derive(Debug, Clone, Copy, Default)]
pub struct ConcatExamples;

impl Converter<Example> for ConcatExamples {
    type Batch = Batch;

    fn convert(&self, examples: &[Example], device: &Device) -> Result<Batch> {
        let Some(first) = examples.first() else {
            bail!("cannot convert an empty batch");
        };
        let shape = first.shape.clone();
        let mut values = Vec::with_capacity(examples.len() * first.values.len());
        let mut labels = Vec::with_capacity(examples.len());
        for e in examples {
            if e.shape != shape {
                bail!(
                    "examples of shapes {:?} and {:?} cannot be batched",
                    shape,
                    e.shape
                );
            }
            values.extend_from_slice(&e.values);
            if let Some(l) = e.label {
                labels.push(l);
            }
        }
        let mut dims = vec![examples.len()];
        dims.extend_from_slice(&shape);
        let values = Tensor::from_vec(values, dims, device)?;
        let labels = if labels.len() == examples.len() {
            Some(Tensor::from_vec(labels, examples.len(), device)?)
        } else {
            None
        };
        Ok(Batch { values, labels })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{ArrayDataset, Dataset};

    #[test]
    fn concat_stacks_values_and_labels() -> Result<()> {
        let ds = ArrayDataset::new(
            (0..6).map(|v| v as f32).collect(),
            &[2],
            Some(vec![5, 6, 7]),
        )?;
        let ex = vec![ds.get(2)?, ds.get(0)?];
        let b = ConcatExamples.convert(&ex, &Device::Cpu)?;
        assert_eq!(
            b.values.to_vec2::<f32>()?,
            vec![vec![4.0, 5.0], vec![0.0, 1.0]]
        );
        assert_eq!(b.labels.unwrap().to_vec1::<u32>()?, vec![7, 5]);
        assert!(ConcatExamples.convert(&[], &Device::Cpu).is_err());
        Ok(())
    }
}
