//! AVX2 code generation for the elementwise kernels where the CPU has it.
//!
//! The crate is compiled for baseline x86-64 (SSE2), so loops the compiler
//! vectorizes use 4 lanes; run inside [`with_avx2`] they use 8. The
//! operations are the same IEEE ones (no fused multiply-add is formed), so
//! the results are the same bits either way.

/// Runs `f`, compiled for AVX2 when the CPU supports it.
#[inline(always)]
pub fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        unsafe fn run<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { run(f) };
    }
    f()
}
