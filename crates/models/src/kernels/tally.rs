//! A count of the matrix products the candle-ops kernels run, by shape: what
//! the benchmark needs to state a conv step's GFLOP/s and to time the same
//! products with another library.
//!
//! Off unless [`start`]ed; then every convolution and fully connected op
//! records its products until [`finish`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// One product shape `[m × k] · [k × n]`, A or B read through a transpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProductShape {
    /// Rows of A and of the result.
    pub m: usize,
    /// Columns of A, rows of B.
    pub k: usize,
    /// Columns of B and of the result.
    pub n: usize,
    /// A is read through a transpose.
    pub a_t: bool,
    /// B is read through a transpose.
    pub b_t: bool,
}

impl ProductShape {
    /// Floating-point operations of one such product (a multiply and an add
    /// per multiply-add).
    pub fn flop(&self) -> f64 {
        2.0 * (self.m * self.k * self.n) as f64
    }
}

static COUNTING: AtomicBool = AtomicBool::new(false);
static COUNTS: Mutex<BTreeMap<ProductShape, usize>> = Mutex::new(BTreeMap::new());

/// Starts counting from zero.
pub fn start() {
    COUNTS.lock().unwrap_or_else(|e| e.into_inner()).clear();
    COUNTING.store(true, Ordering::SeqCst);
}

/// Stops counting; every shape run since [`start`] with how often it ran.
pub fn finish() -> Vec<(ProductShape, usize)> {
    COUNTING.store(false, Ordering::SeqCst);
    std::mem::take(&mut *COUNTS.lock().unwrap_or_else(|e| e.into_inner()))
        .into_iter()
        .collect()
}

/// Records `count` products of `shape` while counting.
pub(crate) fn record(shape: ProductShape, count: usize) {
    if COUNTING.load(Ordering::Relaxed) && count > 0 {
        *COUNTS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(shape)
            .or_default() += count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_between_start_and_finish() {
        let shape = ProductShape {
            m: 2,
            k: 3,
            n: 4,
            a_t: false,
            b_t: true,
        };
        record(shape, 5);
        start();
        record(shape, 2);
        record(shape, 1);
        let counted = finish();
        record(shape, 7);
        // Other tests' kernels may run meanwhile: look at this shape alone.
        let ours: Vec<_> = counted.into_iter().filter(|(s, _)| *s == shape).collect();
        assert_eq!(ours, vec![(shape, 3)]);
        assert_eq!(shape.flop(), 48.0);
    }
}
