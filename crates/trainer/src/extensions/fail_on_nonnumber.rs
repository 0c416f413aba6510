//! [`FailOnNonNumber`]: stops a diverged run at the first NaN or infinity.

use std::fmt;

use anyhow::{Context as _, Result};
use candle_core::{DType, Tensor};

use crate::extension::{Context, Extension, Priority};
use crate::reporter::Value;

/// A reported value was NaN or infinite: training has diverged.
///
/// [`FailOnNonNumber`] returns it; callers recognize it with
/// `error.downcast_ref::<NonFiniteValue>()`.
#[derive(Debug, Clone, PartialEq)]
pub struct NonFiniteValue {
    /// The reported key, such as `dis/loss`.
    pub key: String,
    /// The iteration whose observation held the value.
    pub iteration: u64,
    /// NaN, +inf or -inf.
    pub value: f64,
}

impl fmt::Display for NonFiniteValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is {} at iteration {}: training has diverged. Resume from the newest \
             snapshot_iter_* in the output folder (regular snapshots hold finite values only) \
             with lower learning rates, or start again with them",
            self.key, self.value, self.iteration
        )
    }
}

impl std::error::Error for NonFiniteValue {}

/// Checks the iteration's reported values at its trigger (default: every
/// iteration) and fails the run with [`NonFiniteValue`] on a NaN or
/// infinity. It runs after the values are written and edited and before
/// readers log them, so a [`super::Snapshot`] then keeps the failing state
/// as `failure_snapshot_iter_N`.
#[derive(Debug, Clone, Default)]
pub struct FailOnNonNumber {
    keys: Option<Vec<String>>,
}

impl FailOnNonNumber {
    /// Checks every reported key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks only these keys (ignoring those not reported).
    pub fn keys<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.keys = Some(keys.into_iter().map(Into::into).collect());
        self
    }
}

/// The values as numbers, reading all tensors back in one transfer.
fn read_values(values: &[(String, Value)]) -> Result<Vec<f64>> {
    let tensors: Vec<Tensor> = values
        .iter()
        .filter_map(|(_, v)| match v {
            Value::Tensor(t) => Some(t),
            Value::Scalar(_) => None,
        })
        .map(|t| {
            let t = if t.rank() == 0 {
                t.clone()
            } else {
                t.mean_all()?
            };
            t.to_dtype(DType::F64)?.reshape(1)
        })
        .collect::<candle_core::Result<_>>()?;
    let mut read = match tensors.len() {
        0 => Vec::new(),
        _ => Tensor::cat(&tensors, 0)?.to_vec1::<f64>()?,
    }
    .into_iter();
    Ok(values
        .iter()
        .map(|(_, v)| match v {
            Value::Scalar(x) => *x,
            Value::Tensor(_) => read.next().unwrap_or(f64::NAN),
        })
        .collect())
}

impl Extension for FailOnNonNumber {
    fn name(&self) -> String {
        "fail_on_nonnumber".into()
    }

    fn priority(&self) -> Priority {
        // After writers and editors, before readers such as the log.
        Priority(Priority::READER.0 + 50)
    }

    fn call(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        let values: Vec<(String, Value)> = ctx
            .observation()
            .entries()
            .into_iter()
            .filter(|(key, _)| self.keys.as_ref().is_none_or(|keys| keys.contains(key)))
            .collect();
        let numbers = read_values(&values).context("reading the reported values")?;
        for ((key, _), value) in values.iter().zip(numbers) {
            if !value.is_finite() {
                return Err(NonFiniteValue {
                    key: key.clone(),
                    iteration: ctx.iteration(),
                    value,
                }
                .into());
            }
        }
        Ok(())
    }
}
