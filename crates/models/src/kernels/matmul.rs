//! Matrix products for the fast step: strided views of f32 matrices and
//! single-threaded `gemm` calls, which the callers split into fixed blocks
//! run on rayon. Fixed blocks (never "one per thread") keep every sum in the
//! same order whatever the thread count, so runs repeat bit for bit.

use std::marker::PhantomData;

use super::simd::{self, Level};
use super::{small_gemm, small_gemm512};

/// A read-only view of an f32 matrix with arbitrary strides.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    ptr: *const f32,
    rows: usize,
    cols: usize,
    rs: isize,
    cs: isize,
    _life: PhantomData<&'a [f32]>,
}

// SAFETY: a MatRef is a shared borrow of f32 data; reading it from several
// threads at once is fine.
unsafe impl Send for MatRef<'_> {}
// SAFETY: as above.
unsafe impl Sync for MatRef<'_> {}

impl<'a> MatRef<'a> {
    /// The first `rows · cols` values of `data`, row-major.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert!(data.len() >= rows * cols, "matrix view out of bounds");
        Self {
            ptr: data.as_ptr(),
            rows,
            cols,
            rs: cols as isize,
            cs: 1,
            _life: PhantomData,
        }
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Whether the view reads a row-major matrix through a transpose
    /// (its columns, not its rows, are contiguous).
    pub fn is_transposed(&self) -> bool {
        self.cs != 1 && self.rs == 1
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Rows `r0..r0 + rows` and columns `c0..c0 + cols`.
    pub fn block(self, r0: usize, rows: usize, c0: usize, cols: usize) -> Self {
        assert!(
            r0 + rows <= self.rows && c0 + cols <= self.cols,
            "block out of bounds"
        );
        Self {
            // SAFETY: the offset stays inside the viewed matrix (checked above).
            ptr: unsafe {
                self.ptr
                    .offset(r0 as isize * self.rs + c0 as isize * self.cs)
            },
            rows,
            cols,
            ..self
        }
    }
}

/// A writable view of a row-major f32 matrix (unit column stride).
#[derive(Debug)]
pub struct MatMut<'a> {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    rs: usize,
    _life: PhantomData<&'a mut [f32]>,
}

// SAFETY: a MatMut is an exclusive borrow of its elements.
unsafe impl Send for MatMut<'_> {}

impl<'a> MatMut<'a> {
    /// The first `rows · cols` values of `data`, row-major.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        assert!(data.len() >= rows * cols, "matrix view out of bounds");
        Self {
            ptr: data.as_mut_ptr(),
            rows,
            cols,
            rs: cols,
            _life: PhantomData,
        }
    }

    /// A view of `rows × cols` values from `ptr` with row stride `rs`.
    ///
    /// # Safety
    /// The elements must be valid, and not accessed through anything else,
    /// for `'a`.
    pub unsafe fn from_raw(ptr: *mut f32, rows: usize, cols: usize, rs: usize) -> Self {
        Self {
            ptr,
            rows,
            cols,
            rs,
            _life: PhantomData,
        }
    }

    /// Multiplies every element by `factor`.
    pub fn scale(&mut self, factor: f32) {
        for r in 0..self.rows {
            // SAFETY: row r lies inside the view, which is borrowed exclusively.
            let row =
                unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r * self.rs), self.cols) };
            row.iter_mut().for_each(|v| *v *= factor);
        }
    }
}

/// `dst = a · b`, or `dst += a · b` when `accumulate`; one thread, on the
/// widest path [`simd::level`] allows: the AVX-512 kernel, the AVX2 kernel
/// (the same bits), or the `gemm` crate.
pub fn gemm(dst: &mut MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, accumulate: bool) {
    gemm_at(simd::level(), dst, a, b, accumulate)
}

/// [`gemm`] on the path of `level` (which the CPU must support).
pub fn gemm_at(level: Level, dst: &mut MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, accumulate: bool) {
    assert!(
        a.rows == dst.rows && b.cols == dst.cols && a.cols == b.rows,
        "gemm shapes: [{}×{}]·[{}×{}] into [{}×{}]",
        a.rows,
        a.cols,
        b.rows,
        b.cols,
        dst.rows,
        dst.cols
    );
    if dst.rows == 0 || dst.cols == 0 {
        return;
    }
    if a.cols == 0 {
        if !accumulate {
            for r in 0..dst.rows {
                // SAFETY: row r of dst lies inside its borrow.
                unsafe { std::slice::from_raw_parts_mut(dst.ptr.add(r * dst.rs), dst.cols) }
                    .fill(0.0);
            }
        }
        return;
    }
    let o = small_gemm::Operands {
        m: dst.rows,
        n: dst.cols,
        k: a.cols,
        a: a.ptr,
        a_rs: a.rs,
        a_cs: a.cs,
        b: b.ptr,
        b_rs: b.rs,
        b_cs: b.cs,
        c: dst.ptr,
        c_rs: dst.rs,
    };
    assert!(
        level <= Level::detected(),
        "{level:?} products on a CPU without them"
    );
    // SAFETY: the views were built from borrowed slices with checked
    // bounds, dst is borrowed exclusively, and the shapes agree; each kernel
    // is taken only where its instructions exist (checked just above).
    unsafe {
        match level {
            Level::Avx512 => small_gemm512::product(o, accumulate),
            Level::Avx2 => small_gemm::product(o, accumulate),
            Level::Portable => gemm_crate_product(o, accumulate),
        }
    }
}

/// `C = A·B` (or `C += A·B`) by the `gemm` crate on one thread: the path
/// for CPUs without AVX2/FMA, and the yardstick of kusari's kernel.
///
/// # Safety
///
/// As [`small_gemm::product`], without its need for AVX2 and FMA.
pub(super) unsafe fn gemm_crate_product(o: small_gemm::Operands, accumulate: bool) {
    gemm::gemm(
        o.m,
        o.n,
        o.k,
        o.c,
        1,
        o.c_rs as isize,
        accumulate,
        o.a,
        o.a_cs,
        o.a_rs,
        o.b,
        o.b_cs,
        o.b_rs,
        1.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// The column-block width for splitting `n` output columns across threads:
/// a function of `n` alone, so the split never depends on the thread count.
pub fn block_width(n: usize) -> usize {
    if n <= 64 {
        return n.max(1);
    }
    // About eight blocks: two threads then share them evenly to within a
    // small block (four blocks left one thread idle for a quarter of the
    // 400-wide layers). The small kernel reads A in place, so narrower
    // blocks cost no extra copies.
    n.div_ceil(8).next_multiple_of(16).clamp(32, 256)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    /// Patterned A (`m×k`) and B (`k×n`), their product by the naive loop,
    /// and an output buffer of ones (so a product that writes nothing shows).
    fn operands(m: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 11) as f32 * 0.3 - 1.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.2 - 0.5).collect();
        let want = naive(&a, &b, m, k, n);
        (a, b, want, vec![1f32; m * n])
    }

    /// Every level the CPU has against a naive loop in f64 (≤ 1e-5 of the
    /// largest value): every tile edge (rows and columns past whole tiles,
    /// k = 1, k past a block), plain and accumulating, A and B read directly
    /// or through their transposes, C a block of a wider matrix; and the
    /// AVX-512 and AVX2 kernels bit for bit alike.
    #[test]
    fn every_level_matches_a_naive_loop_on_every_edge() {
        let levels: Vec<Level> = [Level::Portable, Level::Avx2, Level::Avx512]
            .into_iter()
            .filter(|l| *l <= Level::detected())
            .collect();
        eprintln!("levels on this CPU: {levels:?}");
        for (m, k, n) in [
            (1, 1, 1),
            (7, 5, 3),
            (9, 300, 20),
            (13, 40, 37),
            (100, 33, 112),
            (6, 9, 16),
            (8, 1, 32),
            (17, 2, 33),
            (13, 40, 26),
            (64, 600, 49),
            (3, 257, 15),
            (25, 7, 65),
        ] {
            let a = values(m * k, 1);
            let at: Vec<f32> = (0..k * m).map(|q| a[(q % m) * k + q / m]).collect();
            let b = values(k * n, 2);
            let bt: Vec<f32> = (0..n * k).map(|q| b[(q % k) * n + q / k]).collect();
            let want: Vec<f64> = (0..m * n)
                .map(|q| {
                    let (i, j) = (q / n, q % n);
                    (0..k)
                        .map(|p| f64::from(a[i * k + p]) * f64::from(b[p * n + j]))
                        .sum()
                })
                .collect();
            let scale = want.iter().fold(1e-6f64, |s, v| s.max(v.abs()));
            // C is columns 2..2+n of a wider matrix, the rest never touched.
            let width = n + 5;
            let old = values(m * width, 3);
            for (a_t, b_t) in [(false, false), (true, false), (false, true), (true, true)] {
                let av = if a_t {
                    MatRef::new(&at, k, m).t()
                } else {
                    MatRef::new(&a, m, k)
                };
                let bv = if b_t {
                    MatRef::new(&bt, n, k).t()
                } else {
                    MatRef::new(&b, k, n)
                };
                let mut bits: Option<Vec<u32>> = None;
                for &level in &levels {
                    for accumulate in [false, true] {
                        let mut c = old.clone();
                        // SAFETY: rows of `width` values, columns 2..2+n exist.
                        let mut dst =
                            unsafe { MatMut::from_raw(c.as_mut_ptr().add(2), m, n, width) };
                        gemm_at(level, &mut dst, av, bv, accumulate);
                        for i in 0..m {
                            for j in 0..width {
                                let got = c[i * width + j];
                                let before = old[i * width + j];
                                if !(2..2 + n).contains(&j) {
                                    assert_eq!(got, before, "{level:?} wrote outside C");
                                    continue;
                                }
                                let expect = want[i * n + j - 2]
                                    + if accumulate { f64::from(before) } else { 0.0 };
                                assert!(
                                    (f64::from(got) - expect).abs() <= 1e-5 * scale,
                                    "{level:?} {m}×{k}·{k}×{n} (aᵀ {a_t}, bᵀ {b_t}, acc {accumulate}) \
                                     [{i},{j}]: {got} vs {expect}"
                                );
                            }
                        }
                        if level >= Level::Avx2 && !accumulate {
                            let now: Vec<u32> = c.iter().map(|v| v.to_bits()).collect();
                            match &bits {
                                Some(prev) => assert_eq!(prev, &now, "AVX-512 and AVX2 differ"),
                                None => bits = Some(now),
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn products_and_transposes_match_a_naive_loop() {
        let (m, k, n) = (7, 5, 150);
        let (a, b, want, mut c) = operands(m, k, n);
        let (av, bv) = (MatRef::new(&a, m, k), MatRef::new(&b, k, n));
        gemm(&mut MatMut::new(&mut c, m, n), av, bv, false);
        for (x, y) in c.iter().zip(&want) {
            assert!((x - y).abs() < 1e-5);
        }
        // Accumulating adds the product again.
        gemm(&mut MatMut::new(&mut c, m, n), av, bv, true);
        for (x, y) in c.iter().zip(&want) {
            assert!((x - 2.0 * y).abs() < 1e-4);
        }
        // (bᵀ aᵀ) = (a b)ᵀ through transposed views.
        let mut ct = vec![0f32; n * m];
        gemm(
            &mut MatMut::new(&mut ct, n, m),
            MatRef::new(&b, k, n).t(),
            MatRef::new(&a, m, k).t(),
            false,
        );
        for i in 0..m {
            for j in 0..n {
                assert!((ct[j * m + i] - want[i * n + j]).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn the_gemm_crate_fallback_matches_a_naive_loop() {
        let (m, k, n) = (9, 6, 40);
        let (a, b, want, mut c) = operands(m, k, n);
        let o = small_gemm::Operands {
            m,
            n,
            k,
            a: a.as_ptr(),
            a_rs: k as isize,
            a_cs: 1,
            b: b.as_ptr(),
            b_rs: n as isize,
            b_cs: 1,
            c: c.as_mut_ptr(),
            c_rs: n,
        };
        // SAFETY: the operands point into the live vectors above, with their shapes.
        unsafe { gemm_crate_product(o, false) };
        for (x, y) in c.iter().zip(&want) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }

    #[test]
    fn block_widths_cover_common_sizes() {
        assert_eq!(block_width(3200), 256);
        assert_eq!(block_width(1024), 128);
        assert_eq!(block_width(784), 112);
        assert_eq!(block_width(400), 64);
        assert_eq!(block_width(128), 32);
        assert_eq!(block_width(10), 10);
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919 + seed * 104_729) % 1013) as f32 / 506.5 - 1.0)
            .collect()
    }

    /// Throughput against the `gemm` crate on the small config's shapes
    /// (best of batches, hot caches):
    /// `cargo test --release -p kusari-models small_kernel_timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn small_kernel_timing() {
        use std::time::Instant;
        for (name, m, k, n, a_t, b_t, reps) in [
            ("fwd 100x400x112", 100, 400, 112, false, false, 2000),
            ("wgrad 104x100x256", 104, 100, 256, true, false, 2000),
            ("igrad 100x256x104", 100, 256, 104, false, true, 2000),
            ("wgrad D 200x200x128", 200, 200, 128, true, false, 2000),
            ("seed fwd 100x3200x256", 100, 3200, 256, false, false, 200),
            ("seed wgrad 128x100x256", 128, 100, 256, true, false, 2000),
            ("seed igrad 100x256x128", 100, 256, 128, false, true, 2000),
        ] {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            let mut c = vec![0f32; m * n];
            let (a_rs, a_cs) = if a_t {
                (1, m as isize)
            } else {
                (k as isize, 1)
            };
            let (b_rs, b_cs) = if b_t {
                (1, k as isize)
            } else {
                (n as isize, 1)
            };
            let o = small_gemm::Operands {
                m,
                n,
                k,
                a: a.as_ptr(),
                a_rs,
                a_cs,
                b: b.as_ptr(),
                b_rs,
                b_cs,
                c: c.as_mut_ptr(),
                c_rs: n,
            };
            let mut ours = f64::MAX;
            let mut wide = f64::MAX;
            let mut theirs = f64::MAX;
            for _ in 0..reps / 20 {
                let t = Instant::now();
                for _ in 0..20 {
                    unsafe { small_gemm::product(o, false) };
                }
                ours = ours.min(t.elapsed().as_secs_f64() / 20.0);
                if Level::detected() == Level::Avx512 {
                    let t = Instant::now();
                    for _ in 0..20 {
                        unsafe { small_gemm512::product(o, false) };
                    }
                    wide = wide.min(t.elapsed().as_secs_f64() / 20.0);
                }
                let t = Instant::now();
                for _ in 0..20 {
                    unsafe { gemm_crate_product(o, false) };
                }
                theirs = theirs.min(t.elapsed().as_secs_f64() / 20.0);
            }
            let gf = 2.0 * (m * n * k) as f64 / 1e9;
            eprintln!(
                "{name}: AVX-512 {:.1} GFLOP/s, AVX2 {:.1} GFLOP/s, gemm {:.1} GFLOP/s",
                gf / wide,
                gf / ours,
                gf / theirs
            );
        }
    }
}
