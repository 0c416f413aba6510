//! The same seed on the same device gives bit-identical runs, another seed
//! a different one, and a resumed run continues exactly.

mod common;

use anyhow::Result;
use common::{run, synthetic, tiny_config, trainer, Reports};
use kusari_models::{EbganConfig, ObjectiveConfig};
use kusari_trainer::State;

fn ebgan_pt() -> kusari_models::Config {
    tiny_config(ObjectiveConfig::Ebgan(EbganConfig::default()))
}

fn bits(reports: &[Reports], key: &str) -> Vec<u64> {
    reports.iter().map(|r| r[key].to_bits()).collect()
}

#[test]
fn same_seed_same_losses_other_seed_other_losses() -> Result<()> {
    let config = ebgan_pt();
    let data = || synthetic(45, config.model.image);
    let a = run(&config, data(), 7, 30)?;
    let b = run(&config, data(), 7, 30)?;
    let c = run(&config, data(), 8, 30)?;
    for key in ["dis/loss", "gen/loss", "gen/pt"] {
        assert!(a.iter().all(|r| r[key].is_finite()), "{key} not finite");
        assert_eq!(
            bits(&a, key),
            bits(&b, key),
            "{key} differs between two runs with one seed"
        );
        assert_ne!(
            bits(&a, key),
            bits(&c, key),
            "{key} is the same for seeds 7 and 8"
        );
    }
    Ok(())
}

#[test]
fn a_resumed_run_continues_exactly() -> Result<()> {
    let config = ebgan_pt();
    let data = || synthetic(45, config.model.image);
    let straight = run(&config, data(), 3, 12)?;

    let dir = tempfile::tempdir()?;
    let snapshot = dir.path().join("snapshot_iter_6");
    let (mut first, _, _) = trainer(&config, data(), 3, 6, &dir.path().join("a"))?;
    first.run()?;
    first.save_snapshot(&snapshot)?;
    drop(first);

    // Another seed on purpose: everything must come from the snapshot.
    let (mut resumed, log, _) = trainer(&config, data(), 99, 12, &dir.path().join("b"))?;
    resumed.load_state(&State::load(&snapshot, &candle_core::Device::Cpu)?)?;
    resumed.run()?;
    let tail = log.lock().unwrap().clone();
    assert_eq!(tail.len(), 6);
    for key in ["dis/loss", "gen/loss", "gen/pt"] {
        assert_eq!(
            bits(&straight[6..], key),
            bits(&tail, key),
            "{key} after resuming"
        );
    }
    Ok(())
}
