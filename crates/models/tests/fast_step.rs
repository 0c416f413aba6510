//! The fast CPU step against the candle-ops reference: from the same state
//! (passed by snapshot, so snapshots are interchangeable between the paths)
//! one step gives the same losses within 1e-5 relative and nearly the same
//! parameters, for every batch-norm strategy, pull-away variant and output
//! activation; and the fast path repeats bit for bit whatever the number of
//! threads.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;
use candle_core::Device;
use kusari_models::setup::UPDATE_STREAM;
use kusari_models::{
    BnStrategy, Config, Core, Discriminator, EbganConfig, EbganUpdater, ImageShape, ModelConfig,
    Nets, Objective, OutputActivation, PtVariant,
};
use kusari_trainer::reporter::{scope, Observation};
use kusari_trainer::{ArrayDataset, ConcatExamples, Rng, SerialIterator, StandardUpdater, Updater};

use common::synthetic;

type Updaters = StandardUpdater<ArrayDataset, ConcatExamples, Core>;

const KEYS: [&str; 5] = [
    "dis/loss",
    "gen/loss",
    "gen/pt",
    "dis/real_energy",
    "dis/fake_energy",
];

fn updater(config: &Config, seed: u64, fast: bool) -> Result<Updaters> {
    let dev = Device::Cpu;
    let nets = Nets::build(config, &dev, seed)?;
    let Objective::Ebgan(e) = config.objective else {
        panic!("EBGAN expected")
    };
    let Discriminator::AutoEncoder(dis) = &nets.dis else {
        panic!("auto-encoder expected")
    };
    let rule = EbganUpdater::new(
        nets.gen.clone(),
        dis.clone(),
        e,
        Rng::derived(seed, UPDATE_STREAM),
    );
    assert!(
        rule.uses_fast_step(),
        "the MLP nets on the CPU take the fast path"
    );
    let rule = if fast {
        rule
    } else {
        rule.with_reference_step()
    };
    let data = synthetic(4 * config.batch_size, config.model.image);
    let iterator = SerialIterator::new(Arc::new(data), config.batch_size, true, seed)?;
    let (gen_opt, dis_opt) = nets.optimizers(config)?;
    Ok(
        StandardUpdater::new(iterator, ConcatExamples, dev, Core::Ebgan(rule))
            .with_model("gen", nets.gen.params().clone())
            .with_model("dis", nets.dis.params().clone())
            .with_optimizer("gen", gen_opt)
            .with_optimizer("dis", dis_opt),
    )
}

fn step(u: &mut Updaters) -> Result<BTreeMap<&'static str, f64>> {
    let obs = Observation::new();
    scope(&obs, || u.update())?;
    KEYS.iter()
        .map(|k| Ok((*k, obs.scalar(k)?.expect("reported"))))
        .collect()
}

/// Every variable of both models, by name.
fn variables(u: &Updaters) -> Result<BTreeMap<String, Vec<f32>>> {
    let mut out = BTreeMap::new();
    for (model, params) in u.models().iter() {
        for (name, var, _) in params.all() {
            out.insert(
                format!("{model}/{name}"),
                var.flatten_all()?.to_vec1::<f32>()?,
            );
        }
    }
    Ok(out)
}

fn compare(config: &Config, steps: usize) -> Result<()> {
    let mut fast = updater(config, 3, true)?;
    let mut reference = updater(config, 3, false)?;
    for i in 0..steps {
        // Start both from the fast path's state, through a snapshot.
        reference.load_state(&fast.state()?)?;
        let want = step(&mut reference)?;
        let got = step(&mut fast)?;
        for key in KEYS {
            let (g, w) = (got[key], want[key]);
            assert!(
                (g - w).abs() <= 1e-5 * w.abs().max(1e-3),
                "step {i} {key}: fast {g} reference {w} ({config:?})"
            );
        }
        let (a, b) = (variables(&fast)?, variables(&reference)?);
        for (name, want) in &b {
            let got = &a[name];
            let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            let worst = got
                .iter()
                .zip(want)
                .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
            // Adam turns tiny gradient differences near zero into ±lr steps,
            // so parameters agree less tightly than the losses.
            // Biases ahead of BatchNorm have no true gradient (only rounding
            // noise), so allow two steps of size lr·sqrt(1 − β2)/(1 − β1) too.
            assert!(
                worst <= 2e-3 * scale + 1.5e-4,
                "step {i} `{name}`: max difference {worst} of {scale}"
            );
        }
        assert_eq!(
            fast.optimizers().get("gen")?.steps(),
            reference.optimizers().get("gen")?.steps()
        );
    }
    Ok(())
}

fn small(strategy: BnStrategy, pt: PtVariant, output: OutputActivation) -> Config {
    let mut c = Config {
        objective: Objective::Ebgan(EbganConfig {
            pt,
            ..EbganConfig::default()
        }),
        ..Config::default()
    };
    c.model = ModelConfig::mlp_with_units(150, 70);
    c.model.image = ImageShape {
        channels: 1,
        height: 10,
        width: 10,
    };
    c.model.gen.layers = 2;
    c.model.dis.layers = 2;
    c.model.gen.output = output;
    c.model.dis.batch_norm = strategy;
    c.batch_size = 12;
    c
}

#[test]
fn every_strategy_matches_the_reference_step_by_step() -> Result<()> {
    for strategy in [
        BnStrategy::Separate,
        BnStrategy::Joint,
        BnStrategy::RealStats,
    ] {
        compare(
            &small(strategy, PtVariant::Paper, OutputActivation::Identity),
            3,
        )?;
    }
    Ok(())
}

#[test]
fn pull_away_variants_and_output_activations_match() -> Result<()> {
    compare(
        &small(
            BnStrategy::Separate,
            PtVariant::Blog,
            OutputActivation::Tanh,
        ),
        2,
    )?;
    compare(
        &small(
            BnStrategy::Joint,
            PtVariant::Unsquared,
            OutputActivation::Sigmoid,
        ),
        2,
    )?;
    // A margin the fake energy exceeds: L_D's fake term and its gradient vanish.
    let mut c = small(
        BnStrategy::RealStats,
        PtVariant::Paper,
        OutputActivation::Identity,
    );
    c.objective = Objective::Ebgan(EbganConfig {
        margin: 0.0,
        ..EbganConfig::default()
    });
    compare(&c, 2)
}

#[test]
fn the_fast_path_repeats_bit_for_bit_with_any_thread_count() -> Result<()> {
    let config = small(
        BnStrategy::Joint,
        PtVariant::Paper,
        OutputActivation::Identity,
    );
    let run = |threads: usize| -> Result<Vec<u64>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        pool.install(|| {
            let mut u = updater(&config, 9, true)?;
            let mut bits = Vec::new();
            for _ in 0..3 {
                bits.extend(step(&mut u)?.values().map(|v| v.to_bits()));
            }
            for values in variables(&u)?.values() {
                bits.extend(values.iter().map(|v| u64::from(v.to_bits())));
            }
            Ok(bits)
        })
    };
    let one = run(1)?;
    assert_eq!(one, run(3)?, "1 and 3 threads differ");
    assert_eq!(one, run(1)?, "two runs differ");
    Ok(())
}

#[test]
fn a_decoder_with_hidden_layers_matches_the_reference() -> Result<()> {
    for strategy in [BnStrategy::Separate, BnStrategy::Joint] {
        let mut c = small(strategy, PtVariant::Paper, OutputActivation::Identity);
        c.model.dis.decoder_layers = 2;
        c.model.dis.dropout = 0.0;
        compare(&c, 3)?;
    }
    Ok(())
}
