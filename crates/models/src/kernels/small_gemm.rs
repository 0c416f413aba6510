//! A matrix product for the step's small products (100–300 rows, a few
//! hundred columns): `C (+)= A·B`. B is copied one 16-column panel at a time
//! into an aligned, contiguous buffer that stays in L1 while every row of A
//! passes over it; A is read in place (its values are broadcast from wherever
//! they lie) and each 6 × 16 tile of C stays in registers. At these sizes
//! `gemm`'s packing of both operands on every call costs a good part of the
//! product itself.
//!
//! Every element of C is summed over `p = 0..k` in order with fused
//! multiply-adds, starting from C's old value when accumulating: the result
//! depends on the shapes alone, never on how callers split the work.

use std::cell::RefCell;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows of C per register tile.
const MR: usize = 6;
/// Columns of C per register tile (two AVX vectors).
const NR: usize = 16;
/// Products of A's columns and B's rows summed per pass over C (the
/// AVX-512 kernel uses the same blocks, so both give the same bits).
pub(super) const KC: usize = 256;

/// The operands of one product: `m × k` A with strides `a_rs`, `a_cs`;
/// `k × n` B with strides `b_rs`, `b_cs`; `m × n` C with row stride `c_rs`
/// and unit column stride.
#[derive(Clone, Copy)]
pub struct Operands {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: *const f32,
    pub a_rs: isize,
    pub a_cs: isize,
    pub b: *const f32,
    pub b_rs: isize,
    pub b_cs: isize,
    pub c: *mut f32,
    pub c_rs: usize,
}

/// One row of a B panel: a cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct PanelRow([f32; NR]);

thread_local! {
    static PANEL: RefCell<Vec<PanelRow>> = const { RefCell::new(Vec::new()) };
}

/// `C = A·B`, or `C += A·B` when `accumulate`.
///
/// # Safety
/// The CPU must have AVX2 and FMA; every element the shapes and strides reach
/// must be valid, C's writable and not aliased by A or B.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn product(o: Operands, accumulate: bool) {
    // SAFETY: the caller's contract; `product_block` needs AVX2 and FMA,
    // which the caller guarantees.
    unsafe { in_k_blocks(o, accumulate, |block, acc| product_block(block, acc)) }
}

/// Runs `block_product` over blocks of at most [`KC`] of k, in order, the
/// first block plain (unless `accumulate`) and the rest accumulating: C
/// holds the running sums between blocks, so the order of additions is
/// that of one pass. Blocks of k keep A's block in L2 and B's panel in L1.
/// Both kernels cut k here, so their sums keep the same order.
///
/// # Safety
/// As [`product`], and `block_product` must be safe to call on any block of
/// `o` (its instructions available).
pub(super) unsafe fn in_k_blocks(
    o: Operands,
    accumulate: bool,
    mut block_product: impl FnMut(Operands, bool),
) {
    if o.k == 0 {
        if !accumulate {
            for i in 0..o.m {
                // SAFETY: row i of C is writable.
                unsafe { std::slice::from_raw_parts_mut(o.c.add(i * o.c_rs), o.n) }.fill(0.0);
            }
        }
        return;
    }
    let mut k0 = 0;
    while k0 < o.k {
        let kc = (o.k - k0).min(KC);
        // SAFETY: columns k0.. of A and rows k0.. of B exist.
        let block = unsafe {
            Operands {
                k: kc,
                a: o.a.offset(k0 as isize * o.a_cs),
                b: o.b.offset(k0 as isize * o.b_rs),
                ..o
            }
        };
        block_product(block, accumulate || k0 > 0);
        k0 += kc;
    }
}

/// [`product`] for `k ≤ KC`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
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
                    // A tail of at most 8 columns takes half a tile: with
                    // 7×7 maps (49 columns) a full one would compute 16
                    // columns for 1.
                    match (mr, nr) {
                        (6, NR) => tile::<6, 2, true>(t),
                        (5, NR) => tile::<5, 2, true>(t),
                        (4, NR) => tile::<4, 2, true>(t),
                        (3, NR) => tile::<3, 2, true>(t),
                        (2, NR) => tile::<2, 2, true>(t),
                        (1, NR) => tile::<1, 2, true>(t),
                        (6, 9..) => tile::<6, 2, false>(t),
                        (5, 9..) => tile::<5, 2, false>(t),
                        (4, 9..) => tile::<4, 2, false>(t),
                        (3, 9..) => tile::<3, 2, false>(t),
                        (2, 9..) => tile::<2, 2, false>(t),
                        (_, 9..) => tile::<1, 2, false>(t),
                        (6, _) => tile::<6, 1, false>(t),
                        (5, _) => tile::<5, 1, false>(t),
                        (4, _) => tile::<4, 1, false>(t),
                        (3, _) => tile::<3, 1, false>(t),
                        (2, _) => tile::<2, 1, false>(t),
                        _ => tile::<1, 1, false>(t),
                    }
                }
                i += mr;
            }
            j += nr;
        }
    });
}

/// Copies columns `j..j + nr` of B into `panel`, zero-padded to 16.
///
/// # Safety
/// Those columns of B's first `panel.len()` rows must be readable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn pack(panel: &mut [PanelRow], o: Operands, j: usize, nr: usize) {
    // SAFETY (whole body): the caller's contract.
    unsafe {
        let base = o.b.offset(j as isize * o.b_cs);
        if o.b_cs == 1 && nr == NR {
            for (p, row) in panel.iter_mut().enumerate() {
                let src = std::slice::from_raw_parts(base.offset(p as isize * o.b_rs), NR);
                row.0.copy_from_slice(src);
            }
        } else if o.b_cs == 1 {
            for (p, row) in panel.iter_mut().enumerate() {
                let src = std::slice::from_raw_parts(base.offset(p as isize * o.b_rs), nr);
                row.0[..nr].copy_from_slice(src);
                row.0[nr..].fill(0.0);
            }
        } else {
            for row in panel.iter_mut() {
                row.0[nr..].fill(0.0);
            }
            // Whole 8 × 8 blocks of a B whose columns are contiguous
            // (B = Wᵀ): transposed in registers.
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
                    for (i, v) in transpose8(r).iter().enumerate() {
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
}

/// The transpose of the 8 × 8 matrix whose rows are `r`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}

/// Stand-in where AVX2 does not exist (never at `simd::Level::Avx2`).
///
/// # Safety
/// Never to be called.
#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn product(_: Operands, _: bool) {
    unreachable!("small_gemm::product without AVX2");
}

/// One register tile: `R` rows (≤ 6) and `nr` columns (≤ 16) of C.
#[derive(Clone, Copy)]
struct Tile {
    k: usize,
    a: *const f32,
    a_rs: isize,
    a_cs: isize,
    /// The packed panel: rows of 16.
    b: *const f32,
    c: *mut f32,
    c_rs: usize,
    nr: usize,
    accumulate: bool,
}

/// Lane masks for the first `nr` of 16 columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn masks(nr: usize) -> [__m256i; 2] {
    let lane = |l: usize| if l < nr { -1i32 } else { 0 };
    let m: [i32; 16] = std::array::from_fn(lane);
    // SAFETY: m holds 16 i32, read as two unaligned vectors.
    unsafe {
        [
            _mm256_loadu_si256(m.as_ptr().cast()),
            _mm256_loadu_si256(m.as_ptr().add(8).cast()),
        ]
    }
}

/// Eight columns of a row from `p`: all of them, or those `mask` keeps.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn load8<const FULL: bool>(p: *const f32, mask: __m256i) -> __m256 {
    // SAFETY: the caller's: p..p + 8 (or its masked lanes) is readable.
    unsafe {
        if FULL {
            _mm256_loadu_ps(p)
        } else {
            _mm256_maskload_ps(p, mask)
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
/// `R` rows and `V` vectors of 8 columns (`nr ≤ 8·V`; all `8·V` when `FULL`).
unsafe fn tile<const R: usize, const V: usize, const FULL: bool>(t: Tile) {
    // SAFETY (whole body): the caller guarantees every address below is
    // inside its operands; masked loads and stores touch only the first
    // `nr` columns.
    unsafe {
        let mask = if FULL {
            [_mm256_set1_epi32(-1); 2]
        } else {
            masks(t.nr)
        };
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        if t.accumulate {
            for (r, row) in acc.iter_mut().enumerate() {
                let c = t.c.add(r * t.c_rs);
                for (h, v) in row.iter_mut().enumerate() {
                    *v = load8::<FULL>(c.add(8 * h), mask[h]);
                }
            }
        }
        let mut a = t.a;
        let mut b = t.b;
        for _ in 0..t.k {
            let mut bv = [_mm256_setzero_ps(); V];
            for (h, v) in bv.iter_mut().enumerate() {
                *v = _mm256_load_ps(b.add(8 * h));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*a.offset(r as isize * t.a_rs));
                for (v, b) in row.iter_mut().zip(&bv) {
                    *v = _mm256_fmadd_ps(av, *b, *v);
                }
            }
            a = a.offset(t.a_cs);
            b = b.add(NR);
        }
        for (r, row) in acc.iter().enumerate() {
            let c = t.c.add(r * t.c_rs);
            for (h, v) in row.iter().enumerate() {
                if FULL {
                    _mm256_storeu_ps(c.add(8 * h), *v);
                } else {
                    _mm256_maskstore_ps(c.add(8 * h), mask[h], *v);
                }
            }
        }
    }
}
