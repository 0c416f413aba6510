//! The README's main command, `cargo xtask train-ebgan`, on this checkout
//! (runs when `MNIST_DIR` is set, as in CI).

mod common;

use common::*;

#[test]
fn cargo_xtask_train_ebgan_trains_the_seed_preset() {
    let Some(mnist) = mnist_dir("cargo_xtask_train_ebgan_trains_the_seed_preset") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The seed preset with two iterations: enough to show the command works end to end.
    let output = std::process::Command::new(cargo)
        .current_dir(&root)
        .env("MNIST_DIR", &mnist)
        .args([
            "xtask",
            "train-ebgan",
            "--iterations",
            "2",
            "--out",
            out.to_str().unwrap(),
            "--device",
            "cpu",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let args: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("args.json")).unwrap()).unwrap();
    let config = &args["config"];
    assert_eq!(config["preset"], "seed");
    assert_eq!(config["model"]["model"]["gen"]["units"], 3200);
    assert_eq!(config["model"]["model"]["dis"]["units"], 1024);
    assert_eq!(config["model"]["batch_size"], 100);
    let log = read_log(&out);
    let last = log.last().expect("the completed run logs its last stretch");
    assert_eq!(last["iteration"], 2);
    assert!(last["dis/loss"].as_f64().is_some_and(f64::is_finite));
    assert!(out.join("snapshot_iter_2").exists());
}
