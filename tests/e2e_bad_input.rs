//! Bad input gets a clear message and a non-zero exit, never a panic or a
//! half-written file. These tests need no real MNIST: they build a tiny one.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A valid MNIST folder of `n` synthetic digits (both splits, gzipped).
fn tiny_mnist(dir: &Path, n: usize) -> PathBuf {
    synthetic_mnist(&dir.join("mnist"), n, 0)
}

fn train_args<'a>(mnist: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train", "ebgan", "--data-dir", mnist, "--out", out];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    args
}

#[test]
fn a_missing_data_folder_says_where_to_put_mnist() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let output = run(&train_args(
        "/nonexistent/mnist",
        out.to_str().unwrap(),
        &["--iterations", "1"],
    ));
    assert_fails_with(&output, &["/nonexistent/mnist", "MNIST_DIR"]);
    assert!(temporaries(dir.path()).is_empty());
}

#[test]
fn a_truncated_idx_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mnist = tiny_mnist(dir.path(), 30);
    let file = mnist.join("train-images-idx3-ubyte.gz");
    // Replace the gzipped file by a raw one cut short.
    std::fs::remove_file(&file).unwrap();
    let mut raw = vec![0, 0, 8, 3, 0, 0, 0, 30, 0, 0, 0, 28, 0, 0, 0, 28];
    raw.extend(std::iter::repeat_n(0u8, 784 * 10));
    std::fs::write(mnist.join("train-images-idx3-ubyte"), raw).unwrap();
    let out = dir.path().join("out");
    let output = run(&train_args(
        mnist.to_str().unwrap(),
        out.to_str().unwrap(),
        &["--iterations", "1"],
    ));
    assert_fails_with(&output, &["train-images-idx3-ubyte", "truncated"]);
}

#[test]
fn a_wrong_magic_number_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mnist = tiny_mnist(dir.path(), 30);
    std::fs::remove_file(mnist.join("train-labels-idx1-ubyte.gz")).unwrap();
    std::fs::write(
        mnist.join("train-labels-idx1-ubyte"),
        [0u8, 0, 8, 3, 0, 0, 0, 30],
    )
    .unwrap();
    let out = dir.path().join("out");
    let output = run(&train_args(
        mnist.to_str().unwrap(),
        out.to_str().unwrap(),
        &["--iterations", "1"],
    ));
    assert_fails_with(&output, &["train-labels-idx1-ubyte", "magic"]);
}

#[test]
fn bad_flags_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mnist = tiny_mnist(dir.path(), 30);
    let m = mnist.to_str().unwrap();
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();

    let output = run(&train_args(
        m,
        o,
        &["--iterations", "1", "--batch-size", "0"],
    ));
    assert_fails_with(&output, &["--batch-size", "at least 1"]);

    let output = run(&train_args(
        m,
        o,
        &["--iterations", "1", "--batch-size", "31"],
    ));
    assert_fails_with(&output, &["batch size 31", "larger than the dataset", "30"]);

    let output = run(&train_args(m, o, &["--iterations", "1", "--device", "tpu"]));
    assert_fails_with(&output, &["unknown device `tpu`", "cuda:N"]);

    let output = run(&train_args(
        m,
        o,
        &["--iterations", "1", "--device", "cuda:x"],
    ));
    assert_fails_with(&output, &["cuda:x"]);

    let output = run(&train_args(
        m,
        o,
        &["--iterations", "1", "--time-limit", "soon"],
    ));
    assert_fails_with(&output, &["soon"]);

    for decay in ["--gen-ema=1", "--gen-ema=-0.5", "--gen-ema=nan"] {
        let output = run(&train_args(m, o, &["--iterations", "1", decay]));
        assert_fails_with(&output, &["--gen-ema", "(0, 1)"]);
    }

    let output = run(&["train", "gan", "--margin", "3", "--iterations", "1"]);
    assert_fails_with(&output, &["--margin", "EBGAN"]);
    assert!(temporaries(dir.path()).is_empty());
}

#[test]
fn an_unwritable_output_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mnist = tiny_mnist(dir.path(), 30);
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let out = file.join("out");
    let output = run(&train_args(
        mnist.to_str().unwrap(),
        out.to_str().unwrap(),
        &["--iterations", "1"],
    ));
    assert_fails_with(&output, &["a-file", "--out"]);
}

#[test]
fn an_empty_image_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(images.join("sub")).unwrap();
    std::fs::write(images.join("notes.txt"), b"no images here").unwrap();
    let out = dir.path().join("out");
    let output = run(&[
        "train",
        "ebgan",
        "--dataset",
        "folder",
        "--data-dir",
        images.to_str().unwrap(),
        "--image-size",
        "16",
        "--iterations",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_fails_with(&output, &[images.to_str().unwrap(), "no"]);
}

/// Trains a tiny run for 3 iterations and returns its final snapshot.
fn tiny_snapshot(dir: &Path, mnist: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let output = run(&train_args(
        mnist.to_str().unwrap(),
        out.to_str().unwrap(),
        &[&["--iterations", "3"], extra].concat(),
    ));
    assert!(output.status.success(), "{}", stderr(&output));
    out.join("snapshot_iter_3")
}

#[test]
fn corrupt_and_mismatched_snapshots_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mnist = tiny_mnist(dir.path(), 30);
    let m = mnist.to_str().unwrap();
    let small = tiny_snapshot(dir.path(), &mnist, "small", &[]);
    let wide = tiny_snapshot(dir.path(), &mnist, "wide", &["--units-g", "24"]);

    // Corrupt tensors.
    let corrupt = dir.path().join("corrupt/snapshot_iter_3");
    std::fs::create_dir_all(&corrupt).unwrap();
    std::fs::copy(small.join("state.json"), corrupt.join("state.json")).unwrap();
    std::fs::write(
        corrupt.join("state.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json",
    )
    .unwrap();
    let output = run(&train_args(
        m,
        dir.path().join("c").to_str().unwrap(),
        &["--iterations", "5", "--resume", corrupt.to_str().unwrap()],
    ));
    assert_fails_with(&output, &["corrupt", "snapshot_iter_3"]);
    let output = run(&[
        "sample",
        "--snapshot",
        corrupt.to_str().unwrap(),
        "--n",
        "2",
        "--out",
        dir.path().join("x.npy").to_str().unwrap(),
    ]);
    assert_fails_with(&output, &["corrupt"]);
    assert!(!dir.path().join("x.npy").exists());

    // Corrupt JSON.
    std::fs::copy(
        small.join("state.safetensors"),
        corrupt.join("state.safetensors"),
    )
    .unwrap();
    std::fs::write(corrupt.join("state.json"), b"{\"format\": ").unwrap();
    let output = run(&train_args(
        m,
        dir.path().join("c").to_str().unwrap(),
        &["--iterations", "5", "--resume", corrupt.to_str().unwrap()],
    ));
    assert_fails_with(&output, &["corrupt", "state.json"]);

    // Tensors of another architecture under this run's configuration.
    let mixed = dir.path().join("mixed/snapshot_iter_3");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::copy(small.join("state.json"), mixed.join("state.json")).unwrap();
    std::fs::copy(
        wide.join("state.safetensors"),
        mixed.join("state.safetensors"),
    )
    .unwrap();
    let output = run(&train_args(
        m,
        dir.path().join("m").to_str().unwrap(),
        &["--iterations", "5", "--resume", mixed.to_str().unwrap()],
    ));
    assert_fails_with(&output, &["different architecture"]);
    let output = run(&[
        "sample",
        "--snapshot",
        mixed.to_str().unwrap(),
        "--n",
        "2",
        "--out",
        dir.path().join("y.npy").to_str().unwrap(),
    ]);
    assert_fails_with(&output, &["different architecture"]);

    // Resuming with flags that change the model.
    let output = run(&train_args(
        m,
        dir.path().join("s").to_str().unwrap(),
        &[
            "--iterations",
            "5",
            "--units-d",
            "12",
            "--seed",
            "5",
            "--resume",
            small.to_str().unwrap(),
        ],
    ));
    // Every flag that differs is named, not only the first.
    assert_fails_with(
        &output,
        &[
            "resumed run keeps what it trains",
            "--units-d (8 → 12)",
            "--seed (0 → 5)",
        ],
    );

    // A GAN snapshot given to `train ebgan`.
    let gan_out = dir.path().join("gan");
    let mut args = vec![
        "train",
        "gan",
        "--data-dir",
        m,
        "--out",
        gan_out.to_str().unwrap(),
        "--iterations",
        "2",
    ];
    args.extend_from_slice(TINY);
    assert!(run(&args).status.success());
    let output = run(&train_args(
        m,
        dir.path().join("g").to_str().unwrap(),
        &[
            "--iterations",
            "5",
            "--resume",
            gan_out.join("snapshot_iter_2").to_str().unwrap(),
        ],
    ));
    assert_fails_with(&output, &["gan"]);

    // Nothing to resume from.
    let output = run(&train_args(
        m,
        dir.path().join("empty").to_str().unwrap(),
        &["--iterations", "5", "--resume"],
    ));
    assert_fails_with(&output, &["no snapshot"]);
    assert!(
        temporaries(dir.path()).is_empty(),
        "{:?}",
        temporaries(dir.path())
    );
}
