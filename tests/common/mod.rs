//! Shared helpers of the end-to-end tests: run the `kusari` binary, find
//! MNIST, make small synthetic data.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `kusari` binary cargo built for these tests, or the one
/// `KUSARI_TEST_BINARY` names (to try the tests on another build).
pub fn kusari() -> Command {
    let binary = std::env::var_os("KUSARI_TEST_BINARY")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_kusari").into());
    let mut cmd = Command::new(binary);
    // Plain progress lines, no terminal bar; quiet logs.
    cmd.env("RUST_LOG", "warn").env("NO_COLOR", "1");
    cmd
}

/// Runs `kusari ARGS`, returning its output.
pub fn run(args: &[&str]) -> Output {
    kusari().args(args).output().expect("run kusari")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts a clean failure: non-zero exit, the expected words, no panic.
pub fn assert_fails_with(output: &Output, needles: &[&str]) {
    let err = stderr(output);
    assert!(
        !output.status.success(),
        "expected failure, got success; stderr:\n{err}"
    );
    assert!(!err.contains("panicked"), "kusari panicked:\n{err}");
    for needle in needles {
        assert!(
            err.to_lowercase().contains(&needle.to_lowercase()),
            "stderr lacks `{needle}`:\n{err}"
        );
    }
}

/// `MNIST_DIR` when set: it must point at the MNIST files (a wrong path fails
/// the test loudly). `None` (with a note) when unset.
pub fn mnist_dir(test: &str) -> Option<PathBuf> {
    match std::env::var_os("MNIST_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            assert!(
                dir.join("train-images-idx3-ubyte.gz").exists()
                    || dir.join("train-images-idx3-ubyte").exists(),
                "MNIST_DIR={} does not hold the MNIST files",
                dir.display()
            );
            Some(dir)
        }
        _ => {
            eprintln!("skipped {test}: MNIST_DIR is not set");
            None
        }
    }
}

/// `kusari train` flags of nets small enough for hundreds of iterations a second.
pub const TINY: &[&str] = &[
    "--units-g",
    "16",
    "--units-d",
    "8",
    "--batch-size",
    "10",
    "--device",
    "cpu",
];

/// A valid MNIST folder at `path` of `n` synthetic digits (both splits,
/// gzipped); another `salt` gives other pixels.
pub fn synthetic_mnist(path: &Path, n: usize, salt: usize) -> PathBuf {
    use kusari_trainer::datasets::mnist::{Mnist, Split};
    // Pixels of a multiplicative hash: every image differs from the others.
    let images: Vec<u8> = (0..n * 784)
        .map(|i| ((i as u64 + 1 + salt as u64 * 7919).wrapping_mul(2_654_435_761) >> 16) as u8)
        .collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let mnist = Mnist::from_raw(images, labels).unwrap();
    mnist.save(path, Split::Train).unwrap();
    mnist.save(path, Split::Test).unwrap();
    path.to_path_buf()
}

/// Files and folders under `dir` whose names mark them as temporaries.
pub fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut found = vec![];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with(".tmp"))
        {
            found.push(path.clone());
        }
        if path.is_dir() {
            found.extend(temporaries(&path));
        }
    }
    found
}

/// Reads a `.npy` file of `uint8` as the NumPy format defines it: magic,
/// version, header length, a Python-dict header, then the data.
pub fn read_npy_u8(path: &Path) -> (Vec<usize>, Vec<u8>) {
    let bytes = std::fs::read(path).expect("read npy");
    assert_eq!(&bytes[..6], b"\x93NUMPY", "bad magic");
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => panic!("unknown npy version {v}"),
    };
    assert_eq!(
        (start + header_len) % 64,
        0,
        "npy data must be 64-byte aligned"
    );
    let header = std::str::from_utf8(&bytes[start..start + header_len]).expect("ascii header");
    assert!(header.contains("'descr': '|u1'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("shape");
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("dimension"))
        .collect();
    let data = bytes[start + header_len..].to_vec();
    assert_eq!(data.len(), shape.iter().product::<usize>(), "data length");
    (shape, data)
}

/// Width and height of a PNG file, decoded fully (so a broken file fails).
pub fn png_size(path: &Path) -> (u32, u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (img.width(), img.height())
}

/// The log as JSON entries.
pub fn read_log(out: &Path) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let text = std::fs::read_to_string(out.join("log")).expect("read log");
    serde_json::from_str(&text).expect("log is a JSON array of objects")
}

/// The log without `elapsed_time`, which differs between any two runs.
pub fn without_time(
    log: Vec<serde_json::Map<String, serde_json::Value>>,
) -> Vec<serde_json::Map<String, serde_json::Value>> {
    log.into_iter()
        .map(|mut e| {
            e.remove("elapsed_time");
            e
        })
        .collect()
}

/// Every tensor of a snapshot whose name starts with one of `prefixes`, in order.
pub fn snapshot_tensors(snapshot: &Path, prefixes: &[&str]) -> Vec<(String, Vec<f32>)> {
    let state = kusari_trainer::State::load(snapshot, &candle_core::Device::Cpu).unwrap();
    let out: Vec<_> = state
        .tensors()
        .iter()
        .filter(|(name, _)| prefixes.iter().any(|p| name.starts_with(p)))
        .map(|(name, t)| {
            (
                name.clone(),
                t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            )
        })
        .collect();
    assert!(
        !out.is_empty(),
        "{} holds no {prefixes:?} tensors",
        snapshot.display()
    );
    out
}
