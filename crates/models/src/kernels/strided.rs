//! Rows read or added at a stride: the inner loops of gathering a
//! convolution's patches and of adding them back.
//!
//! A patch row of a stride-2 convolution takes every second value of an
//! image row. At the `fast` preset's sizes such rows are 7 or 14 values long,
//! so a scalar loop spends most of its time on per-value index arithmetic;
//! with AVX-512 one row of up to 16 values is two masked loads, a lane
//! permutation and a masked store. Every value is copied, or added once, as
//! in the scalar loop: the results are the same bits on every path.

use super::simd::Level;

/// A strided window of a big map: `rows` rows of `len` values, the values
/// `step` apart and the rows `pitch` apart; in the patch matrix the same
/// values lie contiguous, their rows `width` apart.
#[derive(Debug, Clone, Copy)]
pub struct Window2d {
    pub rows: usize,
    pub len: usize,
    pub step: usize,
    pub pitch: usize,
    pub width: usize,
}

impl Window2d {
    /// Values of the big map the window spans.
    fn big_span(&self) -> usize {
        (self.rows - 1) * self.pitch + (self.len - 1) * self.step + 1
    }

    /// Values of the patch matrix the window spans.
    fn cols_span(&self) -> usize {
        (self.rows - 1) * self.width + self.len
    }
}

/// `cols[r · width + i] = big[r · pitch + i · step]` over the window.
///
/// Panics if either slice is shorter than the window spans.
#[inline]
pub fn copy_window(level: Level, big: &[f32], w: Window2d, cols: &mut [f32]) {
    if w.rows == 0 || w.len == 0 {
        return;
    }
    let (big, cols) = (&big[..w.big_span()], &mut cols[..w.cols_span()]);
    #[cfg(target_arch = "x86_64")]
    if level >= Level::Avx512 && w.step <= 2 {
        // SAFETY: the CPU has AVX-512 F (the level never exceeds what it
        // detected), and both slices hold the window's span.
        return unsafe { avx512::copy_window(big, w, cols) };
    }
    let _ = level;
    for r in 0..w.rows {
        let src = &big[r * w.pitch..];
        let out = &mut cols[r * w.width..r * w.width + w.len];
        if w.step == 1 {
            out.copy_from_slice(&src[..w.len]);
        } else {
            for (i, v) in out.iter_mut().enumerate() {
                *v = src[w.step * i];
            }
        }
    }
}

/// `big[r · pitch + i · step] += cols[r · width + i]` over the window, row
/// after row, each row's values in order.
///
/// Panics if either slice is shorter than the window spans.
#[inline]
pub fn add_window(level: Level, cols: &[f32], w: Window2d, big: &mut [f32]) {
    if w.rows == 0 || w.len == 0 {
        return;
    }
    let (cols, big) = (&cols[..w.cols_span()], &mut big[..w.big_span()]);
    #[cfg(target_arch = "x86_64")]
    if level >= Level::Avx512 && w.step <= 2 {
        // SAFETY: as in `copy_window`.
        return unsafe { avx512::add_window(cols, w, big) };
    }
    let _ = level;
    for r in 0..w.rows {
        let values = &cols[r * w.width..r * w.width + w.len];
        let dst = &mut big[r * w.pitch..];
        for (i, v) in values.iter().enumerate() {
            dst[w.step * i] += v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::Window2d;

    /// The `2·len − 1` lanes a row of `1 ≤ len ≤ 16` values at stride 2
    /// spans, in a 32-lane window of two vectors: one mask per vector.
    #[inline(always)]
    fn span_masks(len: usize) -> (u16, u16) {
        let span = u32::MAX >> (32 - (2 * len - 1));
        (span as u16, (span >> 16) as u16)
    }

    /// The window, 16 values of a row per round; `step` is 1 or 2.
    ///
    /// # Safety
    /// AVX-512 F; `big` and `cols` hold the window's spans.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn copy_window(big: &[f32], w: Window2d, cols: &mut [f32]) {
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        for r in 0..w.rows {
            let src = big.as_ptr().add(r * w.pitch);
            let out = cols.as_mut_ptr().add(r * w.width);
            let mut i = 0;
            while i < w.len {
                let len = (w.len - i).min(16);
                let row = row_mask(len);
                let values = if w.step == 1 {
                    _mm512_maskz_loadu_ps(row, src.add(i))
                } else {
                    // Masked-off lanes are neither read nor faulted on.
                    let (lo, hi) = span_masks(len);
                    let a = _mm512_maskz_loadu_ps(lo, src.add(2 * i));
                    if hi == 0 {
                        _mm512_permutexvar_ps(even, a)
                    } else {
                        let b = _mm512_maskz_loadu_ps(hi, src.add(2 * i + 16));
                        _mm512_permutex2var_ps(a, even, b)
                    }
                };
                _mm512_mask_storeu_ps(out.add(i), row, values);
                i += 16;
            }
        }
    }

    /// The window, 16 values of a row per round; `step` is 1 or 2.
    ///
    /// # Safety
    /// AVX-512 F; `cols` and `big` hold the window's spans.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn add_window(cols: &[f32], w: Window2d, big: &mut [f32]) {
        // Value j to lane 2j of the first vector (j < 8) or 2(j − 8) of the second.
        let first = _mm512_setr_epi32(0, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0);
        let second = _mm512_setr_epi32(8, 0, 9, 0, 10, 0, 11, 0, 12, 0, 13, 0, 14, 0, 15, 0);
        const EVEN_LANES: u16 = 0x5555;
        for r in 0..w.rows {
            let src = cols.as_ptr().add(r * w.width);
            let dst = big.as_mut_ptr().add(r * w.pitch);
            let mut i = 0;
            while i < w.len {
                let len = (w.len - i).min(16);
                let row = row_mask(len);
                let v = _mm512_maskz_loadu_ps(row, src.add(i));
                if w.step == 1 {
                    let d = _mm512_maskz_loadu_ps(row, dst.add(i));
                    _mm512_mask_storeu_ps(dst.add(i), row, _mm512_add_ps(d, v));
                } else {
                    let (lo, hi) = span_masks(len);
                    let (lo, hi) = (lo & EVEN_LANES, hi & EVEN_LANES);
                    let at = dst.add(2 * i);
                    let a = _mm512_maskz_loadu_ps(lo, at);
                    let a = _mm512_add_ps(a, _mm512_permutexvar_ps(first, v));
                    _mm512_mask_storeu_ps(at, lo, a);
                    if hi != 0 {
                        let b = _mm512_maskz_loadu_ps(hi, at.add(16));
                        let b = _mm512_add_ps(b, _mm512_permutexvar_ps(second, v));
                        _mm512_mask_storeu_ps(at.add(16), hi, b);
                    }
                }
                i += 16;
            }
        }
    }

    /// The first `len ≤ 16` lanes.
    #[inline(always)]
    fn row_mask(len: usize) -> u16 {
        (u32::MAX >> (32 - len)) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels() -> Vec<Level> {
        [Level::Portable, Level::Avx2, Level::Avx512]
            .into_iter()
            .filter(|l| *l <= Level::detected())
            .collect()
    }

    #[test]
    fn every_level_copies_and_adds_what_the_scalar_loop_does() {
        for level in levels() {
            for step in 1..=3 {
                for len in 1..=40 {
                    for rows in [1, 3] {
                        let w = Window2d {
                            rows,
                            len,
                            step,
                            pitch: step * len + 5,
                            width: len + 2,
                        };
                        check(level, w);
                    }
                }
            }
        }
    }

    /// Both directions against scalar loops, with one guard value past each
    /// span to catch reads and writes beyond the window.
    fn check(level: Level, w: Window2d) {
        let what = format!("{level:?} {w:?}");
        let big: Vec<f32> = (0..w.big_span() + 1)
            .map(|q| q as f32 * 0.5 - 3.0)
            .collect();
        let mut got = vec![f32::NAN; w.cols_span() + 1];
        copy_window(level, &big, w, &mut got);
        let mut want = vec![f32::NAN; w.cols_span() + 1];
        for r in 0..w.rows {
            for i in 0..w.len {
                want[r * w.width + i] = big[r * w.pitch + i * w.step];
            }
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "copy {what}");

        let cols: Vec<f32> = (0..w.cols_span()).map(|q| 1.0 / (q as f32 + 3.0)).collect();
        let mut got = big.clone();
        add_window(level, &cols, w, &mut got);
        let mut want = big.clone();
        for r in 0..w.rows {
            for i in 0..w.len {
                want[r * w.pitch + i * w.step] += cols[r * w.width + i];
            }
        }
        assert_eq!(bits(&got), bits(&want), "add {what}");
    }
}
