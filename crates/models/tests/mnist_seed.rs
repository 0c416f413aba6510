//! The seed configuration (MLP 3200/1024, z-dim 3, batch 100) on real MNIST.
//!
//! Runs whenever `MNIST_DIR` is set (CI sets it) and fails loudly if it
//! points at nothing; without it the test says it was skipped. This is the
//! crate's one heavy test: 100 iterations of the full-size seed nets.

mod common;

use std::path::Path;

use anyhow::{Context, Result};
use kusari_models::Config;
use kusari_trainer::datasets::{mnist, PixelRange, Split};
use kusari_trainer::Dataset;

#[test]
fn seed_ebgan_trains_100_iterations_on_mnist() -> Result<()> {
    let Some(dir) = std::env::var_os("MNIST_DIR") else {
        eprintln!("skipped: MNIST_DIR is not set");
        return Ok(());
    };
    let mnist = mnist::load(Path::new(&dir), Split::Train).with_context(|| {
        format!(
            "MNIST_DIR={} does not hold MNIST",
            Path::new(&dir).display()
        )
    })?;
    let dataset = mnist.to_dataset(PixelRange::MinusOneOne)?;
    assert_eq!(dataset.example_shape(), &[1, 28, 28]);
    assert_eq!(dataset.len(), 60_000);

    let config = Config::default();
    assert_eq!(
        (
            config.model.gen.units,
            config.model.dis.units,
            config.batch_size
        ),
        (3200, 1024, 100)
    );
    let out = tempfile::tempdir()?;
    let (mut trainer, log, nets) = common::trainer(&config, dataset, 0, 100, out.path())?;
    let g_before = common::values(nets.gen.params())?;
    let started = std::time::Instant::now();
    trainer.run()?;
    let seconds = started.elapsed().as_secs_f64();

    let reports = log.lock().unwrap().clone();
    assert_eq!(reports.len(), 100);
    for (i, r) in reports.iter().enumerate() {
        for key in ["dis/loss", "gen/loss", "gen/pt"] {
            let v = r.get(key).copied().unwrap_or(f64::NAN);
            assert!(v.is_finite(), "iteration {}: {key} = {v}", i + 1);
        }
    }
    assert_ne!(
        common::values(nets.gen.params())?,
        g_before,
        "G did not train"
    );
    let first = &reports[0];
    let last = &reports[99];
    eprintln!(
        "seed EBGAN-PT, 100 iterations on MNIST in {seconds:.1} s ({:.3} s/iter): \
         dis/loss {:.4} → {:.4}, gen/loss {:.4} → {:.4}, gen/pt {:.4} → {:.4}",
        seconds / 100.0,
        first["dis/loss"],
        last["dis/loss"],
        first["gen/loss"],
        last["gen/loss"],
        first["gen/pt"],
        last["gen/pt"],
    );
    Ok(())
}
