//! [`SerialIterator`]: batches drawn from a dataset in order or in a seeded
//! shuffle, with Chainer's epoch bookkeeping and a savable position.
//!
//! # The last, partial batch
//!
//! When the dataset size is not a multiple of the batch size, [`LastBatch`]
//! decides what the end of an epoch yields:
//!
//! - [`LastBatch::Fill`] (the default when repeating, as in Chainer): the
//!   batch is completed with the first examples of the next epoch's order, so
//!   every batch is full. The epoch counter advances on that batch and
//!   `epoch_detail` continues past the integer (`1000` examples, batch `300`:
//!   `0.3, 0.6, 0.9, 1.2, …`).
//! - [`LastBatch::Partial`]: the short batch is returned as is; the next epoch
//!   starts at its beginning (`0.3, 0.6, 0.9, 1.0, 1.3, …`).
//! - [`LastBatch::Drop`]: the remainder is skipped; the batch that ends at the
//!   last full multiple closes the epoch (`0.3, 0.6, 1.0, 1.3, …`: the jump
//!   to the integer happens on the third batch).
//!
//! Without `repeat`, the iterator yields one epoch and then `None`; `Fill` is
//! then not allowed.

use std::sync::Arc;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::rng::{Rng, RngState};

/// What the end of an epoch yields when the batch size does not divide the
/// dataset size (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LastBatch {
    Fill,
    Partial,
    Drop,
}

/// Position, order and RNG of a [`SerialIterator`]: restoring it makes the
/// iterator yield exactly the batches it would have yielded next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IteratorState {
    pub current_position: usize,
    pub epoch: u64,
    pub is_new_epoch: bool,
    pub previous_epoch_detail: Option<f64>,
    pub order: Option<Vec<u32>>,
    pub rng: RngState,
    pub dataset_len: usize,
    pub batch_size: usize,
}

/// Iterates over a dataset in batches, as Chainer's `SerialIterator` does.
pub struct SerialIterator<D: Dataset> {
    dataset: Arc<D>,
    batch_size: usize,
    repeat: bool,
    shuffle: bool,
    last_batch: LastBatch,
    order: Option<Vec<usize>>,
    current_position: usize,
    epoch: u64,
    is_new_epoch: bool,
    previous_epoch_detail: Option<f64>,
    rng: Rng,
}

impl<D: Dataset> SerialIterator<D> {
    /// A repeating iterator; `shuffle` draws a new order every epoch from a
    /// generator seeded with `seed`.
    pub fn new(dataset: Arc<D>, batch_size: usize, shuffle: bool, seed: u64) -> Result<Self> {
        Self::with_options(dataset, batch_size, true, shuffle, LastBatch::Fill, seed)
    }

    pub fn with_options(
        dataset: Arc<D>,
        batch_size: usize,
        repeat: bool,
        shuffle: bool,
        last_batch: LastBatch,
        seed: u64,
    ) -> Result<Self> {
        if batch_size == 0 {
            bail!("the batch size must be at least 1");
        }
        let n = dataset.len();
        if n == 0 {
            bail!("the dataset is empty: there is nothing to iterate over");
        }
        if batch_size > n {
            bail!(
                "the batch size {batch_size} is larger than the dataset ({n} examples); \
                 choose a batch size of at most {n}"
            );
        }
        if !repeat && last_batch == LastBatch::Fill {
            bail!("LastBatch::Fill needs a repeating iterator; use Partial or Drop");
        }
        let mut rng = Rng::derived(seed, "iterator");
        let order = shuffle.then(|| rng.permutation(n));
        Ok(Self {
            dataset,
            batch_size,
            repeat,
            shuffle,
            last_batch,
            order,
            current_position: 0,
            epoch: 0,
            is_new_epoch: false,
            previous_epoch_detail: None,
            rng,
        })
    }

    pub fn dataset(&self) -> &Arc<D> {
        &self.dataset
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Completed sweeps over the dataset.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the last batch completed an epoch.
    pub fn is_new_epoch(&self) -> bool {
        self.is_new_epoch
    }

    /// Epochs as a fraction: `epoch + position / len`.
    pub fn epoch_detail(&self) -> f64 {
        self.epoch as f64 + self.current_position as f64 / self.dataset.len() as f64
    }

    /// `epoch_detail` before the last batch; `None` before the first.
    pub fn previous_epoch_detail(&self) -> Option<f64> {
        self.previous_epoch_detail
    }

    /// Number of batches in one epoch (the Fill policy rounds up).
    pub fn batches_per_epoch(&self) -> f64 {
        let n = self.dataset.len() as f64;
        let b = self.batch_size as f64;
        match self.last_batch {
            LastBatch::Fill => n / b,
            LastBatch::Partial => (n / b).ceil(),
            LastBatch::Drop => (n / b).floor(),
        }
    }

    fn index(&self, position: usize) -> usize {
        match &self.order {
            Some(order) => order[position],
            None => position,
        }
    }

    fn new_order(&mut self) {
        if self.shuffle {
            let n = self.dataset.len();
            self.order = Some(self.rng.permutation(n));
        }
    }

    /// The indices of the next batch, or `None` when a non-repeating iterator is done.
    pub fn next_indices(&mut self) -> Option<Vec<usize>> {
        if !self.repeat && self.epoch > 0 {
            return None;
        }
        let n = self.dataset.len();
        self.previous_epoch_detail = Some(self.epoch_detail());
        let start = self.current_position;
        let end = start + self.batch_size;
        let full_end = n - n % self.batch_size;
        let closes_epoch = match self.last_batch {
            LastBatch::Drop => end >= full_end,
            _ => end >= n,
        };
        let mut indices: Vec<usize> = (start..end.min(n)).map(|p| self.index(p)).collect();
        if closes_epoch {
            self.new_order();
            let rest = end.saturating_sub(n);
            if self.repeat && self.last_batch == LastBatch::Fill {
                indices.extend((0..rest).map(|p| self.index(p)));
                self.current_position = rest;
            } else {
                self.current_position = 0;
            }
            self.epoch += 1;
            self.is_new_epoch = true;
        } else {
            self.current_position = end;
            self.is_new_epoch = false;
        }
        Some(indices)
    }

    /// The next batch of examples, or `None` when a non-repeating iterator is done.
    pub fn next_batch(&mut self) -> Result<Option<Vec<D::Example>>> {
        match self.next_indices() {
            Some(indices) => {
                let examples = indices
                    .into_iter()
                    .map(|i| self.dataset.get(i))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Some(examples))
            }
            None => Ok(None),
        }
    }

    /// Starts over from epoch 0 (with the current RNG continuing).
    pub fn reset(&mut self) {
        self.current_position = 0;
        self.epoch = 0;
        self.is_new_epoch = false;
        self.previous_epoch_detail = None;
        self.new_order();
    }

    pub fn state(&self) -> IteratorState {
        IteratorState {
            current_position: self.current_position,
            epoch: self.epoch,
            is_new_epoch: self.is_new_epoch,
            previous_epoch_detail: self.previous_epoch_detail,
            order: self
                .order
                .as_ref()
                .map(|o| o.iter().map(|&i| i as u32).collect()),
            rng: self.rng.state(),
            dataset_len: self.dataset.len(),
            batch_size: self.batch_size,
        }
    }

    /// Restores a saved position; fails clearly if the dataset or batch size changed.
    pub fn load_state(&mut self, state: &IteratorState) -> Result<()> {
        let n = self.dataset.len();
        if state.dataset_len != n {
            bail!(
                "the snapshot was taken on a dataset of {} examples, this one has {n}; \
                 resume with the same data",
                state.dataset_len
            );
        }
        if state.batch_size != self.batch_size {
            bail!(
                "the snapshot was taken with batch size {}, this run uses {}; \
                 resume with the same --batch-size",
                state.batch_size,
                self.batch_size
            );
        }
        if state.order.is_some() != self.shuffle {
            bail!("the snapshot's iterator and this one differ in shuffling");
        }
        if let Some(order) = &state.order {
            if order.len() != n || order.iter().any(|&i| i as usize >= n) {
                bail!("the snapshot's iterator order is corrupt");
            }
        }
        if state.current_position > n {
            bail!("the snapshot's iterator position is corrupt");
        }
        self.current_position = state.current_position;
        self.epoch = state.epoch;
        self.is_new_epoch = state.is_new_epoch;
        self.previous_epoch_detail = state.previous_epoch_detail;
        self.order = state
            .order
            .as_ref()
            .map(|o| o.iter().map(|&i| i as usize).collect());
        self.rng = Rng::from_state(state.rng);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Range(usize);
    impl Dataset for Range {
        type Example = usize;
        fn len(&self) -> usize {
            self.0
        }
        fn get(&self, i: usize) -> Result<usize> {
            Ok(i)
        }
    }

    fn details(it: &mut SerialIterator<Range>, steps: usize) -> Vec<(usize, f64, bool, u64)> {
        (0..steps)
            .map(|_| {
                let b = it.next_indices().unwrap();
                (b.len(), it.epoch_detail(), it.is_new_epoch(), it.epoch())
            })
            .collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn fill_policy_completes_batches_from_the_next_epoch() -> Result<()> {
        let mut it = SerialIterator::new(Arc::new(Range(1000)), 300, false, 0)?;
        let d = details(&mut it, 5);
        let expected = [
            (300, 0.3, false, 0),
            (300, 0.6, false, 0),
            (300, 0.9, false, 0),
            (300, 1.2, true, 1),
            (300, 1.5, false, 1),
        ];
        for (got, want) in d.iter().zip(expected) {
            assert_eq!((got.0, got.2, got.3), (want.0, want.2, want.3));
            assert!(close(got.1, want.1), "{got:?} vs {want:?}");
        }
        // The filled batch wraps around in order: 900..1000 then 0..200.
        let mut it = SerialIterator::new(Arc::new(Range(1000)), 300, false, 0)?;
        for _ in 0..3 {
            it.next_indices();
        }
        let b = it.next_indices().unwrap();
        assert_eq!(b[0], 900);
        assert_eq!(b[100], 0);
        assert!(close(it.previous_epoch_detail().unwrap(), 0.9));
        Ok(())
    }

    #[test]
    fn partial_and_drop_policies() -> Result<()> {
        let ds = Arc::new(Range(1000));
        let mut it =
            SerialIterator::with_options(ds.clone(), 300, true, false, LastBatch::Partial, 0)?;
        let d = details(&mut it, 5);
        assert_eq!(
            d.iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![300, 300, 300, 100, 300]
        );
        assert_eq!(
            d.iter().map(|x| x.2).collect::<Vec<_>>(),
            vec![false, false, false, true, false]
        );
        assert!(close(d[3].1, 1.0) && close(d[4].1, 1.3));

        let mut it =
            SerialIterator::with_options(ds.clone(), 300, true, false, LastBatch::Drop, 0)?;
        let d = details(&mut it, 4);
        assert_eq!(
            d.iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![300, 300, 300, 300]
        );
        assert_eq!(
            d.iter().map(|x| x.2).collect::<Vec<_>>(),
            vec![false, false, true, false]
        );
        assert!(close(d[2].1, 1.0) && close(d[3].1, 1.3));

        let mut once =
            SerialIterator::with_options(ds.clone(), 300, false, false, LastBatch::Partial, 0)?;
        let sizes: Vec<usize> =
            std::iter::from_fn(|| once.next_indices().map(|b| b.len())).collect();
        assert_eq!(sizes, vec![300, 300, 300, 100]);
        assert!(
            SerialIterator::with_options(ds.clone(), 300, false, false, LastBatch::Fill, 0)
                .is_err()
        );
        Ok(())
    }

    #[test]
    fn bad_sizes_are_errors() {
        let ds = Arc::new(Range(10));
        let err = SerialIterator::new(ds.clone(), 0, true, 0)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("at least 1"), "{err}");
        let err = SerialIterator::new(ds, 11, true, 0)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("larger than the dataset"), "{err}");
        assert!(SerialIterator::new(Arc::new(Range(0)), 1, true, 0).is_err());
    }

    #[test]
    fn shuffled_epochs_are_permutations_and_differ() -> Result<()> {
        let mut it = SerialIterator::new(Arc::new(Range(100)), 10, true, 5)?;
        let mut epochs = vec![];
        for _ in 0..2 {
            let mut seen: Vec<usize> = (0..10).flat_map(|_| it.next_indices().unwrap()).collect();
            epochs.push(seen.clone());
            seen.sort_unstable();
            assert_eq!(seen, (0..100).collect::<Vec<_>>());
        }
        assert_ne!(epochs[0], epochs[1]);
        Ok(())
    }

    #[test]
    fn restored_iterator_continues_identically() -> Result<()> {
        let ds = Arc::new(Range(1000));
        let mut a = SerialIterator::new(ds.clone(), 300, true, 9)?;
        for _ in 0..5 {
            a.next_indices();
        }
        let saved = serde_json::to_string(&a.state())?;
        let expected: Vec<Vec<usize>> = (0..8).map(|_| a.next_indices().unwrap()).collect();
        let mut b = SerialIterator::new(ds.clone(), 300, true, 123)?;
        b.load_state(&serde_json::from_str(&saved)?)?;
        let got: Vec<Vec<usize>> = (0..8).map(|_| b.next_indices().unwrap()).collect();
        assert_eq!(expected, got);
        assert_eq!(a.epoch_detail(), b.epoch_detail());

        let mut c = SerialIterator::new(ds, 100, true, 9)?;
        assert!(c.load_state(&serde_json::from_str(&saved)?).is_err());
        Ok(())
    }
}
