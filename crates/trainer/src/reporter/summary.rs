use std::collections::BTreeMap;

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::{Observation, Value};

/// Running mean and standard deviation of one reported key.
///
/// Tensor values are kept on their device until the summary is read, then
/// read back together in one transfer.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    sum: f64,
    sum_sq: f64,
    count: u64,
    pending: Vec<Tensor>,
}

/// The saved form of a [`Summary`] (pending tensors already folded in).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SummaryState {
    pub sum: f64,
    pub sum_sq: f64,
    pub count: u64,
}

/// Mean and standard deviation over an interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Statistics {
    pub mean: f64,
    pub std: f64,
    pub count: u64,
}

/// Above this many unread tensors a summary folds them in, bounding memory.
const MAX_PENDING: usize = 4096;

impl Summary {
    pub fn add(&mut self, value: &Value) -> Result<()> {
        match value {
            Value::Scalar(x) => self.add_f64(*x),
            Value::Tensor(t) => {
                self.pending.push(t.clone());
                if self.pending.len() >= MAX_PENDING {
                    self.fold_pending()?;
                }
            }
        }
        Ok(())
    }

    fn add_f64(&mut self, x: f64) {
        self.sum += x;
        self.sum_sq += x * x;
        self.count += 1;
    }

    fn fold_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let flat: Vec<Tensor> = self
            .pending
            .iter()
            .map(|t| {
                let t = if t.rank() == 0 {
                    t.clone()
                } else {
                    t.mean_all()?
                };
                t.to_dtype(DType::F64)?.reshape(1)
            })
            .collect::<candle_core::Result<_>>()?;
        let values: Vec<f64> = Tensor::cat(&flat, 0)?.to_vec1()?;
        self.pending.clear();
        for x in values {
            self.add_f64(x);
        }
        Ok(())
    }

    pub fn count(&self) -> u64 {
        self.count + self.pending.len() as u64
    }

    /// Mean and standard deviation (population) of the values added; NaN when empty.
    pub fn statistics(&mut self) -> Result<Statistics> {
        self.fold_pending()?;
        let n = self.count as f64;
        let mean = self.sum / n;
        let var = (self.sum_sq / n - mean * mean).max(0.0);
        Ok(Statistics {
            mean,
            std: var.sqrt(),
            count: self.count,
        })
    }

    pub fn state(&mut self) -> Result<SummaryState> {
        self.fold_pending()?;
        Ok(SummaryState {
            sum: self.sum,
            sum_sq: self.sum_sq,
            count: self.count,
        })
    }

    pub fn from_state(state: SummaryState) -> Self {
        Self {
            sum: state.sum,
            sum_sq: state.sum_sq,
            count: state.count,
            pending: Vec::new(),
        }
    }
}

/// A [`Summary`] per key, fed one [`Observation`] at a time.
#[derive(Debug, Clone, Default)]
pub struct DictSummary {
    summaries: BTreeMap<String, Summary>,
}

impl DictSummary {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every value of `observation`, or only those in `keys` when given.
    pub fn add(&mut self, observation: &Observation, keys: Option<&[String]>) -> Result<()> {
        for (key, value) in observation.entries() {
            if keys.is_some_and(|ks| !ks.contains(&key)) {
                continue;
            }
            self.summaries
                .entry(key.clone())
                .or_default()
                .add(&value)
                .with_context(|| format!("summarizing `{key}`"))?;
        }
        Ok(())
    }

    pub fn add_value(&mut self, key: &str, value: &Value) -> Result<()> {
        self.summaries
            .entry(key.to_string())
            .or_default()
            .add(value)
    }

    pub fn is_empty(&self) -> bool {
        self.summaries.is_empty()
    }

    /// The mean of each key.
    pub fn means(&mut self) -> Result<BTreeMap<String, f64>> {
        Ok(self
            .statistics()?
            .into_iter()
            .map(|(k, s)| (k, s.mean))
            .collect())
    }

    pub fn statistics(&mut self) -> Result<BTreeMap<String, Statistics>> {
        self.summaries
            .iter_mut()
            .map(|(k, s)| Ok((k.clone(), s.statistics()?)))
            .collect()
    }

    pub fn clear(&mut self) {
        self.summaries.clear();
    }

    pub fn state(&mut self) -> Result<BTreeMap<String, SummaryState>> {
        self.summaries
            .iter_mut()
            .map(|(k, s)| Ok((k.clone(), s.state()?)))
            .collect()
    }

    pub fn from_state(state: BTreeMap<String, SummaryState>) -> Self {
        Self {
            summaries: state
                .into_iter()
                .map(|(k, s)| (k, Summary::from_state(s)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn mean_and_std_of_mixed_values() -> Result<()> {
        let values = [1.0f64, 2.0, 4.0, 9.0];
        let mut s = Summary::default();
        for (i, v) in values.iter().enumerate() {
            if i % 2 == 0 {
                s.add(&Value::Scalar(*v))?;
            } else {
                s.add(&Value::Tensor(Tensor::new(*v as f32, &Device::Cpu)?))?;
            }
        }
        let st = s.statistics()?;
        let mean = values.iter().sum::<f64>() / 4.0;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 4.0;
        assert!((st.mean - mean).abs() < 1e-12);
        assert!((st.std - var.sqrt()).abs() < 1e-9);
        assert_eq!(st.count, 4);
        Ok(())
    }

    #[test]
    fn dict_summary_filters_keys_and_round_trips() -> Result<()> {
        let mut d = DictSummary::new();
        for i in 0..3 {
            let obs = Observation::new();
            obs.insert("a", i as f64);
            obs.insert("b", 10.0);
            d.add(&obs, Some(&["a".to_string()]))?;
        }
        let means = d.means()?;
        assert_eq!(means.len(), 1);
        assert_eq!(means["a"], 1.0);
        let mut back = DictSummary::from_state(d.state()?);
        assert_eq!(back.means()?, means);
        Ok(())
    }
}
