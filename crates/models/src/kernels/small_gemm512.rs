//! The small-matrix product of [`super::small_gemm`] on AVX-512: the same
//! scheme — B copied one panel at a time into an aligned buffer that stays
//! in L1, A read in place, a tile of C in registers — with 32-column panels
//! (two 16-lane vectors) and 8-row tiles, twice the work per instruction.
//!
//! Every element of C is summed over `p = 0..k` in order with fused
//! multiply-adds, in the same blocks of k as the AVX2 kernel: both give the
//! same bits, so which one runs changes no result.

use std::cell::RefCell;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::small_gemm::{in_k_blocks, Operands};

/// Rows of C per register tile.
const MR: usize = 8;
/// Columns of C per register tile (two AVX-512 vectors).
const NR: usize = 32;

/// One row of a B panel: two cache lines.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct PanelRow([f32; NR]);

thread_local! {
    static PANEL: RefCell<Vec<PanelRow>> = const { RefCell::new(Vec::new()) };
}

/// `C = A·B`, or `C += A·B` when `accumulate`.
///
/// # Safety
/// The CPU must have AVX-512 F, AVX2 and FMA; every element the shapes and strides reach
/// must be valid, C's writable and not aliased by A or B.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
pub unsafe fn product(o: Operands, accumulate: bool) {
    // SAFETY: the caller's contract; `product_block` needs AVX-512 F, AVX2
    // and FMA, which the caller guarantees. The AVX2 kernel's blocks of k,
    // so that every sum keeps its order.
    unsafe { in_k_blocks(o, accumulate, |block, acc| product_block(block, acc)) }
}

/// Stand-in where AVX-512 does not exist (never at `simd::Level::Avx512`).
///
/// # Safety
/// Never to be called.
#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn product(_: Operands, _: bool) {
    unreachable!("small_gemm512::product without AVX-512");
}

/// [`product`] for `k ≤ KC`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn product_block(o: Operands, accumulate: bool) {
    PANEL.with(|panel| {
        let mut panel = panel.borrow_mut();
        panel.resize(o.k, PanelRow([0.0; NR]));
        let mut j = 0;
        while j < o.n {
            let nr = (o.n - j).min(NR);
            // SAFETY: rows 0..k, columns j..j + nr of B exist.
            unsafe { pack(&mut panel[..o.k], o, j, nr) };
            let b = panel.as_ptr().cast::<f32>();
            let mut i = 0;
            while i < o.m {
                let mr = (o.m - i).min(MR);
                // SAFETY: (i, j) lies inside C, row i of A exists.
                let t = unsafe {
                    Tile {
                        k: o.k,
                        a: o.a.offset(i as isize * o.a_rs),
                        a_rs: o.a_rs,
                        a_cs: o.a_cs,
                        b,
                        c: o.c.add(i * o.c_rs + j),
                        c_rs: o.c_rs,
                        nr,
                        accumulate,
                    }
                };
                // SAFETY: the caller's contract, restricted to this tile;
                // the panel holds k full rows.
                unsafe {
                    // A tail of at most 16 columns takes half a tile.
                    match (mr, nr > 16) {
                        (8, true) => tile::<8, 2>(t),
                        (7, true) => tile::<7, 2>(t),
                        (6, true) => tile::<6, 2>(t),
                        (5, true) => tile::<5, 2>(t),
                        (4, true) => tile::<4, 2>(t),
                        (3, true) => tile::<3, 2>(t),
                        (2, true) => tile::<2, 2>(t),
                        (_, true) => tile::<1, 2>(t),
                        (8, false) => tile::<8, 1>(t),
                        (7, false) => tile::<7, 1>(t),
                        (6, false) => tile::<6, 1>(t),
                        (5, false) => tile::<5, 1>(t),
                        (4, false) => tile::<4, 1>(t),
                        (3, false) => tile::<3, 1>(t),
                        (2, false) => tile::<2, 1>(t),
                        (_, false) => tile::<1, 1>(t),
                    }
                }
                i += mr;
            }
            j += nr;
        }
    });
}

/// Copies columns `j..j + nr` of B into `panel`, zero-padded to 32.
///
/// # Safety
/// Those columns of B's first `panel.len()` rows must be readable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn pack(panel: &mut [PanelRow], o: Operands, j: usize, nr: usize) {
    // SAFETY (whole body): the caller's contract.
    unsafe {
        let base = o.b.offset(j as isize * o.b_cs);
        if o.b_cs == 1 {
            for (p, row) in panel.iter_mut().enumerate() {
                let src = std::slice::from_raw_parts(base.offset(p as isize * o.b_rs), nr);
                row.0[..nr].copy_from_slice(src);
                row.0[nr..].fill(0.0);
            }
            return;
        }
        for row in panel.iter_mut() {
            row.0[nr..].fill(0.0);
        }
        // Whole 8 × 8 blocks of a B whose columns are contiguous (B = Wᵀ):
        // transposed in registers.
        let (blocks_c, blocks_p) = if o.b_rs == 1 {
            (nr / 8, panel.len() / 8)
        } else {
            (0, 0)
        };
        for bc in 0..blocks_c {
            for bp in 0..blocks_p {
                let src = base.offset((8 * bc) as isize * o.b_cs + (8 * bp) as isize);
                let mut r = [_mm256_setzero_ps(); 8];
                for (c, v) in r.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(src.offset(c as isize * o.b_cs));
                }
                for (i, v) in super::small_gemm::transpose8(r).iter().enumerate() {
                    _mm256_storeu_ps(panel[8 * bp + i].0.as_mut_ptr().add(8 * bc), *v);
                }
            }
        }
        // The rest one value at a time, along p (where a transposed B's
        // values lie together).
        for c in 0..nr {
            let first = if c < 8 * blocks_c { 8 * blocks_p } else { 0 };
            let col = base.offset(c as isize * o.b_cs);
            for (p, row) in panel.iter_mut().enumerate().skip(first) {
                row.0[c] = *col.offset(p as isize * o.b_rs);
            }
        }
    }
}

/// One register tile: `R` rows (≤ 8) and `nr` columns (≤ 32) of C.
#[derive(Clone, Copy)]
struct Tile {
    k: usize,
    a: *const f32,
    a_rs: isize,
    a_cs: isize,
    /// The packed panel: rows of 32.
    b: *const f32,
    c: *mut f32,
    c_rs: usize,
    nr: usize,
    accumulate: bool,
}

/// `R` rows and `V` vectors of 16 columns (`nr ≤ 16·V`); the columns past
/// `nr` are neither read nor written in C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn tile<const R: usize, const V: usize>(t: Tile) {
    // SAFETY (whole body): the caller guarantees every address below is
    // inside its operands; masked loads and stores touch only the first
    // `nr` columns.
    unsafe {
        let mask: [__mmask16; 2] = std::array::from_fn(|h| {
            let lanes = t.nr.saturating_sub(16 * h).min(16);
            ((1u32 << lanes) - 1) as __mmask16
        });
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        if t.accumulate {
            for (r, row) in acc.iter_mut().enumerate() {
                let c = t.c.add(r * t.c_rs);
                for (h, v) in row.iter_mut().enumerate() {
                    *v = _mm512_maskz_loadu_ps(mask[h], c.add(16 * h));
                }
            }
        }
        let mut a = t.a;
        let mut b = t.b;
        for _ in 0..t.k {
            let mut bv = [_mm512_setzero_ps(); V];
            for (h, v) in bv.iter_mut().enumerate() {
                *v = _mm512_load_ps(b.add(16 * h));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.offset(r as isize * t.a_rs));
                for (v, b) in row.iter_mut().zip(&bv) {
                    *v = _mm512_fmadd_ps(av, *b, *v);
                }
            }
            a = a.offset(t.a_cs);
            b = b.add(NR);
        }
        for (r, row) in acc.iter().enumerate() {
            let c = t.c.add(r * t.c_rs);
            for (h, v) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(c.add(16 * h), mask[h], *v);
            }
        }
    }
}
