//! A link-time stand-in for the CUDA driver library, `libcuda.so.1`.
//!
//! candle 0.11 builds cudarc with `dynamic-linking`, so the binary is linked
//! against `-lcuda` (not loaded with dlopen). The driver library belongs to
//! the NVIDIA driver, not to the toolkit wheels, so this machine has none.
//! The stub defines every driver API function `cuda.h` declares (after its
//! macros pick the versioned names, e.g. `cuCtxCreate` → `cuCtxCreate_v4`)
//! and carries the soname `libcuda.so.1`: the binary then records a need for
//! `libcuda.so.1`, which the real driver provides at run time. The stub is
//! named `libcuda.so` only, so it can never be loaded in the driver's place.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Driver functions declared outside `cuda.h` (in `cudaProfiler.h`, which the wheels lack).
const EXTRA_SYMBOLS: &[&str] = &["cuProfilerStart", "cuProfilerStop"];

/// CUDA_ERROR_STUB_LIBRARY: what NVIDIA's own stub returns if it is ever called.
const STUB_RESULT: u32 = 34;

fn c_compiler() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

/// Makes `stub_dir/libcuda.so` from the toolkit's `cuda.h`, unless it is
/// already there and up to date; returns the folder to put on the link path.
pub fn ensure_stub(toolkit: &Path, stub_dir: &Path) -> Result<PathBuf> {
    let include = toolkit.join("include");
    let symbols = driver_symbols(&include)?;
    let source = stub_source(&symbols);
    let source_path = stub_dir.join("libcuda_stub.c");
    let library = stub_dir.join("libcuda.so");
    if library.exists() && fs::read_to_string(&source_path).is_ok_and(|s| s == source) {
        println!(
            "  {} is up to date ({} symbols)",
            library.display(),
            symbols.len()
        );
        return Ok(stub_dir.to_path_buf());
    }
    fs::create_dir_all(stub_dir)
        .with_context(|| format!("cannot create {}", stub_dir.display()))?;
    fs::write(&source_path, &source)
        .with_context(|| format!("cannot write {}", source_path.display()))?;
    let partial = stub_dir.join(format!(".libcuda.so.{}.tmp", std::process::id()));
    let status = Command::new(c_compiler())
        .args(["-shared", "-fPIC", "-O1", "-Wl,-soname,libcuda.so.1", "-o"])
        .arg(&partial)
        .arg(&source_path)
        .status()
        .with_context(|| {
            format!(
                "running the C compiler `{}` (set CC to choose one)",
                c_compiler()
            )
        })?;
    if !status.success() {
        let _ = fs::remove_file(&partial);
        bail!(
            "compiling the libcuda stub {} failed",
            source_path.display()
        );
    }
    fs::rename(&partial, &library)?;
    println!("  wrote {} ({} symbols)", library.display(), symbols.len());
    Ok(stub_dir.to_path_buf())
}

/// The driver API function names, as the linker sees them, from the preprocessed `cuda.h`.
fn driver_symbols(include: &Path) -> Result<BTreeSet<String>> {
    let header = include.join("cuda.h");
    if !header.exists() {
        bail!(
            "{} is missing: the CUDA wheels are incomplete",
            header.display()
        );
    }
    let output = Command::new(c_compiler())
        .args(["-E", "-P", "-I"])
        .arg(include)
        .arg(&header)
        .output()
        .with_context(|| format!("running the C preprocessor `{} -E`", c_compiler()))?;
    if !output.status.success() {
        bail!(
            "preprocessing {} failed:\n{}",
            header.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut symbols: BTreeSet<String> = called_identifiers(&text)
        .filter(|name| is_driver_function(name))
        .map(str::to_owned)
        .collect();
    symbols.extend(EXTRA_SYMBOLS.iter().map(|s| s.to_string()));
    if !symbols.contains("cuInit") {
        bail!("found no driver functions in {}", header.display());
    }
    Ok(symbols)
}

/// Driver API functions are `cu` + an upper-case letter: `cuInit`, `cuMemAlloc_v2`.
fn is_driver_function(name: &str) -> bool {
    name.strip_prefix("cu")
        .and_then(|rest| rest.chars().next())
        .is_some_and(|c| c.is_ascii_uppercase())
}

/// Identifiers directly followed by `(` (declarations, after preprocessing).
fn called_identifiers(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            if is_ident(bytes[i]) && (i == 0 || !is_ident(bytes[i - 1])) {
                let start = i;
                while i < bytes.len() && is_ident(bytes[i]) {
                    i += 1;
                }
                let mut j = i;
                while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                    j += 1;
                }
                if j < bytes.len() && bytes[j] == b'(' {
                    return Some(&text[start..i]);
                }
            } else {
                i += 1;
            }
        }
        None
    })
}

fn stub_source(symbols: &BTreeSet<String>) -> String {
    let mut source = String::from(
        "/* Generated by `cargo xtask build-cuda`: a link-time stand-in for the CUDA\n   \
         driver library libcuda.so.1. The NVIDIA driver's real library replaces it at\n   \
         run time; every function here only returns CUDA_ERROR_STUB_LIBRARY. */\n",
    );
    for name in symbols {
        source.push_str(&format!("int {name}(void) {{ return {STUB_RESULT}; }}\n"));
    }
    source
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_declared_driver_functions_only() {
        let text = "typedef int CUresult;\nCUresult cuInit(unsigned int Flags);\n\
                    CUresult cuCtxCreate_v4 (void *p);\nint cudaMalloc(void);\n\
                    typedef void (*CUhostFn)(void *);\nint x = cuda_thing + cuNotCalled;\n";
        let found: BTreeSet<&str> = called_identifiers(text)
            .filter(|n| is_driver_function(n))
            .collect();
        assert_eq!(found, BTreeSet::from(["cuCtxCreate_v4", "cuInit"]));
    }

    #[test]
    fn stub_defines_each_symbol_once() {
        let symbols = BTreeSet::from(["cuInit".to_string(), "cuMemAlloc_v2".to_string()]);
        let source = stub_source(&symbols);
        assert_eq!(source.matches("int cuInit(void)").count(), 1);
        assert_eq!(source.matches("int cuMemAlloc_v2(void)").count(), 1);
        assert_eq!(source.matches("return 34;").count(), 2);
    }
}
