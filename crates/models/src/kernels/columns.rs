//! Column-parallel elementwise work on row-major matrices: each task owns a
//! fixed range of columns across all rows, which is what per-feature
//! reductions (BatchNorm statistics, bias gradients) need.

use std::marker::PhantomData;
use std::ops::Range;

use rayon::prelude::*;

use super::matmul::MatMut;

/// Columns per task: a function of the width alone, so sums never depend on
/// the thread count.
pub fn chunk_width(cols: usize) -> usize {
    if cols <= 64 {
        cols.max(1)
    } else {
        128
    }
}

/// Runs `f(columns)` over fixed column chunks of `0..cols` in parallel.
pub fn par_columns(cols: usize, f: impl Fn(Range<usize>) + Sync + Send) {
    par_ranges(cols, chunk_width(cols), f);
}

/// Runs `f(range)` over `0..len` cut into ranges of `width` (the last may be
/// shorter), in parallel.
pub fn par_ranges(len: usize, width: usize, f: impl Fn(Range<usize>) + Sync + Send) {
    let width = width.max(1);
    (0..len.div_ceil(width))
        .into_par_iter()
        .for_each(|i| f(i * width..((i + 1) * width).min(len)));
}

/// A row-major matrix that several column-parallel tasks write at once,
/// each through its own columns.
#[derive(Clone, Copy, Debug)]
pub struct SharedMut<'a> {
    ptr: *mut f32,
    len: usize,
    cols: usize,
    _life: PhantomData<&'a mut [f32]>,
}

// SAFETY: tasks touch disjoint column ranges (the contract of `segment`).
unsafe impl Send for SharedMut<'_> {}
// SAFETY: as above.
unsafe impl Sync for SharedMut<'_> {}

impl<'a> SharedMut<'a> {
    /// `data` seen as rows of `cols` values.
    pub fn new(data: &'a mut [f32], cols: usize) -> Self {
        Self {
            ptr: data.as_mut_ptr(),
            len: data.len(),
            cols,
            _life: PhantomData,
        }
    }

    /// Columns `c` of row `r`.
    ///
    /// # Safety
    /// While the returned slice lives, no other task may access these
    /// elements: column-parallel tasks use only their own column range.
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    pub unsafe fn segment(&self, r: usize, c: &Range<usize>) -> &mut [f32] {
        let start = r * self.cols + c.start;
        assert!(
            c.end <= self.cols && start + c.len() <= self.len,
            "segment out of bounds"
        );
        // SAFETY: in bounds (checked); exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), c.len()) }
    }

    /// Columns `c` of the first `rows` rows as a matrix view for `gemm`.
    ///
    /// # Safety
    /// As [`SharedMut::segment`]: while the view lives no other task may
    /// access these elements.
    pub unsafe fn columns(&self, rows: usize, c: &Range<usize>) -> MatMut<'a> {
        assert!(
            c.end <= self.cols && (rows == 0 || (rows - 1) * self.cols + c.end <= self.len),
            "columns out of bounds"
        );
        // SAFETY: in bounds (checked); exclusivity is the caller's contract.
        unsafe { MatMut::from_raw(self.ptr.add(c.start), rows, c.len(), self.cols) }
    }
}

/// Columns `c` of row `r` of a row-major matrix with `cols` columns.
#[inline(always)]
pub fn segment<'s>(data: &'s [f32], cols: usize, r: usize, c: &Range<usize>) -> &'s [f32] {
    &data[r * cols + c.start..r * cols + c.end]
}

impl SharedMut<'_> {
    /// The same matrix starting `rows` rows further down.
    ///
    /// # Safety
    /// `rows` must not pass the end of the matrix; the view inherits
    /// [`SharedMut::segment`]'s contract.
    pub unsafe fn offset_rows(&self, rows: usize) -> Self {
        let skip = (rows * self.cols).min(self.len);
        Self {
            // SAFETY: skip ≤ len keeps the pointer inside (or one past) the allocation.
            ptr: unsafe { self.ptr.add(skip) },
            len: self.len - skip,
            cols: self.cols,
            _life: PhantomData,
        }
    }
}
