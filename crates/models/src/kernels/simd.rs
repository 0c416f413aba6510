//! Which instruction set the kernels use, and AVX2 code generation for the
//! elementwise kernels where the CPU has it.
//!
//! [`level`] is the widest set both the CPU and `KUSARI_SIMD` allow: the
//! matrix products run the AVX-512 kernel, the AVX2 kernel or the `gemm`
//! crate accordingly. `KUSARI_SIMD=avx2` or `KUSARI_SIMD=portable` narrows
//! it, so the narrower paths can be run (and tested) on a wider machine.
//! The AVX-512 and AVX2 kernels sum every element in the same order with
//! the same operations: they give the same bits.
//!
//! The crate is compiled for baseline x86-64 (SSE2), so loops the compiler
//! vectorizes use 4 lanes; run inside [`with_avx2`] they use 8. The
//! operations are the same IEEE ones (no fused multiply-add is formed), so
//! the results are the same bits either way.

use std::sync::OnceLock;

/// The environment variable that narrows the instruction set: `avx512`
/// (or `auto`, or unset: the widest the CPU has), `avx2`, `portable`.
pub const SIMD_ENV: &str = "KUSARI_SIMD";

/// An instruction set the kernels have a path for, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Plain Rust, and the `gemm` crate for products.
    Portable,
    /// AVX2 with FMA.
    Avx2,
    /// AVX-512 F (with AVX2 and FMA).
    Avx512,
}

impl Level {
    /// The widest level this CPU supports.
    pub fn detected() -> Level {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma");
            if avx2 && std::arch::is_x86_feature_detected!("avx512f") {
                return Level::Avx512;
            }
            if avx2 {
                return Level::Avx2;
            }
        }
        Level::Portable
    }

    /// The level a `KUSARI_SIMD` value asks for, if it is one.
    pub fn parse(text: &str) -> Option<Level> {
        match text.trim() {
            "" | "auto" | "avx512" => Some(Level::Avx512),
            "avx2" => Some(Level::Avx2),
            "portable" => Some(Level::Portable),
            _ => None,
        }
    }
}

/// The level the kernels run at: the CPU's, narrowed by `KUSARI_SIMD`
/// (read once; an unknown value is reported and ignored).
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let detected = Level::detected();
        match std::env::var(SIMD_ENV) {
            Ok(text) => match Level::parse(&text) {
                Some(cap) => detected.min(cap),
                None => {
                    tracing::warn!(
                        "{SIMD_ENV}={text} is not understood (use auto, avx512, avx2 or portable); \
                         using {detected:?}"
                    );
                    detected
                }
            },
            Err(_) => detected,
        }
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_narrows_but_never_widens() {
        assert_eq!(Level::parse("avx2"), Some(Level::Avx2));
        assert_eq!(Level::parse(" portable "), Some(Level::Portable));
        assert_eq!(Level::parse("auto"), Some(Level::Avx512));
        assert_eq!(Level::parse("avx1024"), None);
        assert!(level() <= Level::detected());
        assert!(Level::Portable < Level::Avx2 && Level::Avx2 < Level::Avx512);
    }
}
