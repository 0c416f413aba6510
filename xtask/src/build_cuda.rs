//! `cargo xtask build-cuda`: build kusari with Candle's CUDA backend on a
//! machine without a CUDA installation (or a GPU).
//!
//! Phases, each timed and each skipped when already done:
//! 1. download the pinned CUDA 13.0 wheels from PyPI into `.cuda/downloads`;
//! 2. unpack them into `.cuda/wheels` (the toolkit root is `nvidia/cu13`);
//! 3. add the unversioned library names and the `libcuda.so.1` link stub;
//! 4. `cargo build --release --features <pkg>/cuda` into `target/cuda`, so
//!    the CPU build's cache in `target/` is left alone.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{cargo, cuda_stub, cuda_wheels, workspace_root};

/// The GPU generation the kernels are compiled for: 90 = Hopper (H100, H200).
const DEFAULT_COMPUTE_CAP: &str = "90";

/// Command-line options of `build-cuda`.
#[derive(Debug, Default)]
struct Options {
    skip_download: bool,
    packages: Vec<String>,
    cargo_args: Vec<String>,
}

fn usage() -> &'static str {
    "usage: cargo xtask build-cuda [--skip-download] [--package P]… [-- CARGO_ARGS…]

  --skip-download   use the CUDA toolkit already unpacked in .cuda/wheels
  -p, --package P   build package P with P/cuda (repeatable; default kusari-cli)
  -- CARGO_ARGS…    passed on to `cargo build` (e.g. -- --tests)

environment: CUDA_COMPUTE_CAP (default 90, for H100/H200), PYTHON (default python3), CC"
}

fn parse_options(args: &[String]) -> Result<Option<Options>> {
    let mut options = Options::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--skip-download" => options.skip_download = true,
            "-p" | "--package" => {
                let Some(package) = args.next() else {
                    bail!("{arg} needs a package name\n\n{}", usage());
                };
                options.packages.push(package.clone());
            }
            "--" => {
                options.cargo_args = args.cloned().collect();
                break;
            }
            "-h" | "--help" => {
                println!("{}", usage());
                return Ok(None);
            }
            other => bail!("unknown option `{other}` for build-cuda\n\n{}", usage()),
        }
    }
    if options.packages.is_empty() {
        options.packages.push("kusari-cli".into());
    }
    Ok(Some(options))
}

/// Times the phases and prints a summary at the end.
#[derive(Default)]
struct Phases(Vec<(&'static str, Duration)>);

impl Phases {
    fn run<T>(&mut self, name: &'static str, phase: impl FnOnce() -> Result<T>) -> Result<T> {
        println!("== {name}");
        let start = Instant::now();
        let result = phase();
        let elapsed = start.elapsed();
        println!("   {name}: {:.1} s", elapsed.as_secs_f64());
        self.0.push((name, elapsed));
        result
    }

    fn print_summary(&self) {
        println!("== timings");
        let mut total = Duration::ZERO;
        for (name, elapsed) in &self.0 {
            println!("   {name:<10} {:>8.1} s", elapsed.as_secs_f64());
            total += *elapsed;
        }
        println!("   {:<10} {:>8.1} s", "total", total.as_secs_f64());
    }
}

/// Runs `cargo xtask build-cuda ARGS`.
pub fn build_cuda(args: &[String]) -> Result<()> {
    let Some(options) = parse_options(args)? else {
        return Ok(());
    };
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        bail!("build-cuda fetches the Linux x86-64 CUDA wheels and needs a Linux x86-64 machine");
    }
    let root = workspace_root();
    let cuda_dir = root.join(".cuda");
    let toolkit = cuda_wheels::toolkit_dir(&cuda_dir);
    let mut phases = Phases::default();

    if options.skip_download {
        cuda_wheels::check_installed(&cuda_dir)?;
    } else {
        let bytes = phases.run("download", || cuda_wheels::download(&cuda_dir))?;
        println!("   wheels: {:.0} MB", bytes as f64 / 1e6);
        phases.run("unpack", || cuda_wheels::install(&cuda_dir))?;
    }
    let stub_dir = phases.run("link-libs", || {
        cuda_wheels::link_unversioned(&toolkit)?;
        cuda_stub::ensure_stub(&toolkit, &cuda_dir.join("stub"))
    })?;
    let target_dir = root.join("target").join("cuda");
    phases.run("cargo", || {
        cargo_build(&root, &toolkit, &stub_dir, &target_dir, &options)
    })?;
    phases.print_summary();

    if options.packages.iter().any(|p| p == "kusari-cli") {
        let binary = target_dir.join("release").join("kusari");
        println!("built {}", binary.display());
    }
    println!(
        "at run time it needs the NVIDIA driver (580 or newer) and the CUDA 13 libraries \
         cuBLAS, cuBLASLt, cuRAND, NVRTC and cudart on LD_LIBRARY_PATH: see docs/cuda.md"
    );
    Ok(())
}

/// `cargo build --release --features P/cuda` with what candle's build scripts need.
fn cargo_build(
    root: &Path,
    toolkit: &Path,
    stub_dir: &Path,
    target_dir: &Path,
    options: &Options,
) -> Result<()> {
    let bin = toolkit.join("bin");
    let include = toolkit.join("include");
    let lib = toolkit.join("lib");
    let compute_cap =
        std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| DEFAULT_COMPUTE_CAP.into());
    println!(
        "   CUDA_HOME={}  CUDA_COMPUTE_CAP={compute_cap}",
        toolkit.display()
    );

    let mut command = cargo();
    command
        .current_dir(root)
        .args(["build", "--release", "--target-dir"])
        .arg(target_dir);
    for package in &options.packages {
        command.args([
            "--package",
            package,
            "--features",
            &format!("{package}/cuda"),
        ]);
    }
    command
        .args(&options.cargo_args)
        // cudarc asks `nvcc --version` (from PATH) which CUDA it builds for;
        // candle-kernels' build finds nvcc through NVCC.
        .env("PATH", prepend_path([bin.clone()], "PATH")?)
        .env("NVCC", bin.join("nvcc"))
        // cudarc's link-search root.
        .env("CUDA_HOME", toolkit)
        // The wheels keep headers in include/ and include/cccl/ rather than
        // where nvcc.profile looks (targets/x86_64-linux/include).
        .env(
            "CPATH",
            prepend_path([include.clone(), include.join("cccl")], "CPATH")?,
        )
        // -lcublas, -lcudart, … and the libcuda stub for the final link.
        .env(
            "LIBRARY_PATH",
            prepend_path([lib, stub_dir.to_path_buf()], "LIBRARY_PATH")?,
        )
        .env("CUDA_COMPUTE_CAP", &compute_cap);
    let status = command.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build with the cuda feature failed (see above)");
    }
    Ok(())
}

/// `dirs` followed by the current value of the path-list variable `var`.
fn prepend_path(dirs: impl IntoIterator<Item = PathBuf>, var: &str) -> Result<OsString> {
    let current = std::env::var_os(var).unwrap_or_default();
    let all = dirs.into_iter().chain(std::env::split_paths(&current));
    std::env::join_paths(all).with_context(|| format!("cannot extend {var}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_to_the_cli() {
        let options = parse_options(&[]).unwrap().unwrap();
        assert_eq!(options.packages, ["kusari-cli"]);
        assert!(!options.skip_download);
    }

    #[test]
    fn reads_packages_and_cargo_args() {
        let args = strings(&[
            "--skip-download",
            "-p",
            "kusari-trainer",
            "--package",
            "kusari-models",
            "--",
            "--tests",
        ]);
        let options = parse_options(&args).unwrap().unwrap();
        assert!(options.skip_download);
        assert_eq!(options.packages, ["kusari-trainer", "kusari-models"]);
        assert_eq!(options.cargo_args, ["--tests"]);
    }

    #[test]
    fn rejects_unknown_options() {
        let message = format!("{:#}", parse_options(&strings(&["--fast"])).unwrap_err());
        assert!(message.contains("unknown option `--fast`"), "{message}");
        assert!(parse_options(&strings(&["--package"])).is_err());
    }
}
