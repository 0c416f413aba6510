//! Choosing where tensors live: `--device auto|cpu|cuda|cuda:N`.
//!
//! Parsing ([`DeviceSpec::parse`]) is separate from opening
//! ([`DeviceSpec::open`]) so that a bad spelling is reported before any GPU
//! is touched, and so that the parsing is testable on machines without one.
//! CUDA exists only in binaries built with the `cuda` feature
//! (`cargo xtask build-cuda`, see `docs/cuda.md`).

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use candle_core::Device;

/// What the user asked for with `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The first CUDA GPU when this binary has CUDA and one is present, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// The CUDA GPU with this index (`cuda` is `cuda:0`).
    Cuda(usize),
}

/// Whether this binary was built with CUDA support (the `cuda` feature).
pub const fn cuda_compiled() -> bool {
    cfg!(feature = "cuda")
}

/// Parses `spec` (`auto`, `cpu`, `cuda` or `cuda:N`) and opens that device.
pub fn parse_device(spec: &str) -> Result<Device> {
    DeviceSpec::parse(spec)?.open()
}

impl DeviceSpec {
    /// Parses `auto`, `cpu`, `cuda` or `cuda:N` (case and surrounding spaces ignored).
    pub fn parse(spec: &str) -> Result<Self> {
        let lower = spec.trim().to_ascii_lowercase();
        match lower.as_str() {
            "auto" => return Ok(Self::Auto),
            "cpu" => return Ok(Self::Cpu),
            "cuda" => return Ok(Self::Cuda(0)),
            _ => {}
        }
        if let Some(index) = lower.strip_prefix("cuda:") {
            return match index.parse::<usize>() {
                Ok(i) => Ok(Self::Cuda(i)),
                Err(_) => bail!(
                    "bad device `{spec}`: the GPU index after `cuda:` must be a whole number \
                     such as cuda:0 (`nvidia-smi -L` lists the GPUs)"
                ),
            };
        }
        bail!("unknown device `{spec}`: use auto, cpu, cuda or cuda:N (N is the GPU index)")
    }

    /// Opens the device: `Auto` falls back to the CPU when this binary has no
    /// CUDA or no GPU can be opened; `Cuda` fails with the reason instead.
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(index) => open_cuda(index),
            Self::Auto if !cuda_compiled() => Ok(Device::Cpu),
            Self::Auto => match open_cuda(0) {
                Ok(device) => Ok(device),
                Err(e) => {
                    tracing::info!(
                        "--device auto: using the CPU, since no GPU could be opened ({e:#})"
                    );
                    Ok(Device::Cpu)
                }
            },
        }
    }
}

fn open_cuda(index: usize) -> Result<Device> {
    if !cuda_compiled() {
        bail!(
            "device cuda:{index} asked for, but this kusari was built without CUDA: \
             build it with `cargo xtask build-cuda` (see docs/cuda.md), or use --device cpu"
        );
    }
    Device::new_cuda(index).with_context(|| {
        format!(
            "cannot open GPU cuda:{index}: is an NVIDIA GPU present with that index and a driver \
             for CUDA 13 (version 580 or newer) installed? `nvidia-smi -L` lists the GPUs; \
             use --device cpu to train without one"
        )
    })
}

impl FromStr for DeviceSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        assert_eq!(DeviceSpec::parse("auto").unwrap(), DeviceSpec::Auto);
        assert_eq!(DeviceSpec::parse("cpu").unwrap(), DeviceSpec::Cpu);
        assert_eq!(DeviceSpec::parse(" CPU ").unwrap(), DeviceSpec::Cpu);
        assert_eq!(DeviceSpec::parse("cuda").unwrap(), DeviceSpec::Cuda(0));
        assert_eq!(DeviceSpec::parse("cuda:0").unwrap(), DeviceSpec::Cuda(0));
        assert_eq!(DeviceSpec::parse("CUDA:3").unwrap(), DeviceSpec::Cuda(3));
        assert_eq!(
            "cuda:12".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Cuda(12)
        );
    }

    #[test]
    fn display_round_trips() {
        for spec in [
            DeviceSpec::Auto,
            DeviceSpec::Cpu,
            DeviceSpec::Cuda(0),
            DeviceSpec::Cuda(7),
        ] {
            assert_eq!(DeviceSpec::parse(&spec.to_string()).unwrap(), spec);
        }
    }

    #[test]
    fn bad_index_is_named() {
        for bad in ["cuda:x", "cuda:", "cuda:-1", "cuda:1.5", "cuda:0:1"] {
            let message = format!("{:#}", DeviceSpec::parse(bad).unwrap_err());
            assert!(message.contains(bad), "{message}");
            assert!(message.contains("whole number"), "{message}");
        }
    }

    #[test]
    fn unknown_device_lists_the_choices() {
        for bad in ["gpu", "", "mps", "cuda0", "cpu:0"] {
            let message = format!("{:#}", DeviceSpec::parse(bad).unwrap_err());
            assert!(message.contains("unknown device"), "{message}");
            assert!(message.contains("auto, cpu, cuda or cuda:N"), "{message}");
        }
    }

    #[test]
    fn cpu_opens() {
        assert!(matches!(parse_device("cpu").unwrap(), Device::Cpu));
    }

    #[test]
    fn bad_spec_fails_before_opening() {
        assert!(parse_device("cuda:x").is_err());
        assert!(parse_device("tpu").is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn without_cuda_auto_is_cpu_and_cuda_says_how_to_get_it() {
        assert!(!cuda_compiled());
        assert!(matches!(parse_device("auto").unwrap(), Device::Cpu));
        for spec in ["cuda", "cuda:1"] {
            let message = format!("{:#}", parse_device(spec).unwrap_err());
            assert!(message.contains("built without CUDA"), "{message}");
            assert!(message.contains("cargo xtask build-cuda"), "{message}");
        }
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn with_cuda_auto_picks_the_gpu_exactly_when_one_opens() {
        assert!(cuda_compiled());
        let gpu = parse_device("cuda:0");
        let auto = parse_device("auto").unwrap();
        assert_eq!(
            auto.is_cuda(),
            gpu.is_ok(),
            "auto: {auto:?}, cuda:0: {gpu:?}"
        );
        // No machine has this many GPUs: the error must say what to check.
        let message = format!("{:#}", parse_device("cuda:4096").unwrap_err());
        assert!(message.contains("nvidia-smi"), "{message}");
    }
}
