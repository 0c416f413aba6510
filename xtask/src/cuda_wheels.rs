//! The CUDA 13.0 toolkit as PyPI wheels: which ones, fetching them, and
//! unpacking them into a folder that works as `CUDA_HOME`.
//!
//! Every wheel is pinned to CUDA 13.0: left free, pip mixes minor versions
//! (nvidia-nvvm 13.5's PTX is rejected by 13.0's ptxas). CUDA 13.0 runs on
//! drivers of the 580 series and newer, and cudarc 0.19 supports it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// One pinned wheel.
pub struct Wheel {
    pub name: &'static str,
    pub version: &'static str,
}

/// The wheels candle's `cuda` feature needs to build and link.
pub const WHEELS: &[Wheel] = &[
    // nvcc, ptxas, fatbinary, nvlink
    Wheel {
        name: "nvidia-cuda-nvcc",
        version: "13.0.88",
    },
    // cicc and libdevice, which nvcc runs
    Wheel {
        name: "nvidia-nvvm",
        version: "13.0.88",
    },
    // nvcc's crt/ headers
    Wheel {
        name: "nvidia-cuda-crt",
        version: "13.0.88",
    },
    // libcu++/CUB/Thrust headers (`nv/target`) the kernels include
    Wheel {
        name: "nvidia-cuda-cccl",
        version: "13.0.85",
    },
    // cuda_runtime.h, cuda.h, libcudart
    Wheel {
        name: "nvidia-cuda-runtime",
        version: "13.0.88",
    },
    Wheel {
        name: "nvidia-cuda-nvrtc",
        version: "13.0.88",
    },
    Wheel {
        name: "nvidia-cublas",
        version: "13.0.2.14",
    },
    Wheel {
        name: "nvidia-curand",
        version: "10.4.0.35",
    },
];

/// Unversioned names the linker looks for (`-lcublas` finds `libcublas.so`),
/// pointing at the versioned files the wheels ship.
pub const LINKER_NAMES: &[(&str, &str)] = &[
    ("libcublas.so", "libcublas.so.13"),
    ("libcublasLt.so", "libcublasLt.so.13"),
    ("libcudart.so", "libcudart.so.13"),
    ("libnvrtc.so", "libnvrtc.so.13"),
    ("libcurand.so", "libcurand.so.10"),
];

/// The folder the wheels are unpacked into (`pip install --target`).
pub fn wheels_dir(cuda_dir: &Path) -> PathBuf {
    cuda_dir.join("wheels")
}

/// The toolkit root inside the unpacked wheels: `bin/nvcc`, `include/`, `lib/`, `nvvm/`.
pub fn toolkit_dir(cuda_dir: &Path) -> PathBuf {
    wheels_dir(cuda_dir).join("nvidia").join("cu13")
}

fn downloads_dir(cuda_dir: &Path) -> PathBuf {
    cuda_dir.join("downloads")
}

/// Records which pins `wheels/` was unpacked from; a different list means unpack again.
fn stamp_path(cuda_dir: &Path) -> PathBuf {
    wheels_dir(cuda_dir).join("kusari-wheels.txt")
}

fn stamp_text() -> String {
    WHEELS
        .iter()
        .map(|w| format!("{}=={}\n", w.name, w.version))
        .collect()
}

impl Wheel {
    fn requirement(&self) -> String {
        format!("{}=={}", self.name, self.version)
    }

    /// The downloaded file of this wheel in `dir`, if there is one.
    fn find_in(&self, dir: &Path) -> Option<PathBuf> {
        let prefix = format!("{}-{}-", self.name.replace('-', "_"), self.version);
        fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
            })
    }
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn pip() -> Command {
    let mut command = Command::new(python());
    command
        .args(["-m", "pip", "--disable-pip-version-check"])
        .env("PIP_ROOT_USER_ACTION", "ignore");
    command
}

fn check_pip() -> Result<()> {
    let ok = pip()
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !ok {
        bail!(
            "`{} -m pip` does not run: install Python 3 with pip, or point PYTHON at a Python that has it",
            python()
        );
    }
    Ok(())
}

/// Downloads the wheels not already in `.cuda/downloads`; returns the bytes on disk of all of them.
pub fn download(cuda_dir: &Path) -> Result<u64> {
    let dest = downloads_dir(cuda_dir);
    fs::create_dir_all(&dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let missing: Vec<&Wheel> = WHEELS
        .iter()
        .filter(|w| w.find_in(&dest).is_none())
        .collect();
    if missing.is_empty() {
        println!("  all {} wheels already downloaded", WHEELS.len());
    } else {
        check_pip()?;
        // pip writes into a private folder; finished wheels are then renamed
        // into place, so an interrupted download leaves nothing that looks done.
        let partial = dest.join(format!(".partial-{}", std::process::id()));
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir_all(&partial)?;
        let status = pip()
            .args(["download", "--no-deps", "--only-binary=:all:", "--dest"])
            .arg(&partial)
            .args(missing.iter().map(|w| w.requirement()))
            .status()
            .context("running pip download")?;
        if !status.success() {
            let _ = fs::remove_dir_all(&partial);
            bail!("pip download failed (see above): is PyPI reachable?");
        }
        for entry in fs::read_dir(&partial)? {
            let path = entry?.path();
            let name = path.file_name().expect("read_dir yields names");
            fs::rename(&path, dest.join(name))?;
        }
        fs::remove_dir_all(&partial)?;
    }
    let mut bytes = 0;
    for wheel in WHEELS {
        let path = wheel
            .find_in(&dest)
            .with_context(|| format!("{} is missing after the download", wheel.requirement()))?;
        let size = fs::metadata(&path)?.len();
        println!(
            "  {:<36} {:>6.1} MB",
            wheel.requirement(),
            size as f64 / 1e6
        );
        bytes += size;
    }
    Ok(bytes)
}

/// Unpacks the downloaded wheels into `.cuda/wheels`, unless it already holds exactly these pins.
pub fn install(cuda_dir: &Path) -> Result<()> {
    let target = wheels_dir(cuda_dir);
    if fs::read_to_string(stamp_path(cuda_dir)).is_ok_and(|s| s == stamp_text()) {
        println!("  {} already holds these wheels", target.display());
        return Ok(());
    }
    check_pip()?;
    let downloads = downloads_dir(cuda_dir);
    let files: Vec<PathBuf> = WHEELS
        .iter()
        .map(|w| {
            w.find_in(&downloads).with_context(|| {
                format!(
                    "{} is not downloaded: run without --skip-download",
                    w.requirement()
                )
            })
        })
        .collect::<Result<_>>()?;
    let partial = cuda_dir.join(format!(".wheels-{}.tmp", std::process::id()));
    let _ = fs::remove_dir_all(&partial);
    let status = pip()
        .args(["install", "--quiet", "--no-deps", "--no-index", "--target"])
        .arg(&partial)
        .args(&files)
        .status()
        .context("running pip install")?;
    if !status.success() {
        let _ = fs::remove_dir_all(&partial);
        bail!(
            "pip install --target {} failed (see above)",
            partial.display()
        );
    }
    fs::write(partial.join("kusari-wheels.txt"), stamp_text())?;
    if target.exists() {
        fs::remove_dir_all(&target)
            .with_context(|| format!("cannot replace {}", target.display()))?;
    }
    fs::rename(&partial, &target)
        .with_context(|| format!("cannot move the unpacked wheels to {}", target.display()))?;
    Ok(())
}

/// Checks that `.cuda/wheels` was unpacked from these pins (for `--skip-download`).
pub fn check_installed(cuda_dir: &Path) -> Result<()> {
    match fs::read_to_string(stamp_path(cuda_dir)) {
        Ok(s) if s == stamp_text() => Ok(()),
        Ok(_) => bail!(
            "{} holds other CUDA wheels than this xtask pins: run without --skip-download",
            wheels_dir(cuda_dir).display()
        ),
        Err(_) => bail!(
            "no CUDA toolkit in {}: run `cargo xtask build-cuda` without --skip-download first",
            wheels_dir(cuda_dir).display()
        ),
    }
}

/// Creates the unversioned library names the linker needs, next to the versioned files.
pub fn link_unversioned(toolkit: &Path) -> Result<()> {
    let lib = toolkit.join("lib");
    for (link, target) in LINKER_NAMES {
        if !lib.join(target).exists() {
            bail!(
                "{} is missing from the CUDA wheels",
                lib.join(target).display()
            );
        }
        let link_path = lib.join(link);
        if fs::read_link(&link_path).is_ok_and(|t| t == Path::new(target)) {
            continue;
        }
        let _ = fs::remove_file(&link_path);
        symlink(Path::new(target), &link_path)
            .with_context(|| format!("cannot create {}", link_path.display()))?;
    }
    Ok(())
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(_target: &Path, _link: &Path) -> std::io::Result<()> {
    Err(std::io::Error::other(
        "the CUDA build from PyPI wheels needs Linux",
    ))
}
