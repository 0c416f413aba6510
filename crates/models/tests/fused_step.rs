//! The fused CPU step against the autograd step: from the same state
//! (passed by snapshot, so snapshots are interchangeable between the
//! engines) one iteration gives the same reported values within 1e-5
//! relative and nearly the same parameters and buffers, for every shipped
//! objective, batch-norm strategy, pull-away variant, output activation,
//! optimizer, spectral normalization, number of D steps and clip, and for
//! objectives that read D's codes and the real batch in G's loss; and the
//! fused step repeats bit for bit whatever the number of threads.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;
use candle_core::Device;
use kusari_models::objective::{self, DisOutputs, Losses, Objective};
use kusari_models::setup::Updater as NetsUpdater;
use kusari_models::{
    BnStrategy, Config, DisHead, EbganConfig, ImageShape, Init, ModelConfig, Nets, ObjectiveConfig,
    OutputActivation, PtVariant,
};
use kusari_trainer::reporter::{scope, Observation};
use kusari_trainer::{ArrayDataset, SerialIterator, Sgd, Updater};

use common::synthetic;

type Updaters = NetsUpdater<ArrayDataset>;

/// The guide's example objective, the relativistic average GAN: both
/// losses read both batches, so under joint batch normalization `L_G`'s
/// gradient on the real rows reaches G.
#[path = "../examples/ragan.rs"]
#[allow(dead_code)]
mod ragan;

/// GAN with feature matching on D's codes for G and a code penalty for D:
/// gradients enter D at its code layer from both losses and both batches.
struct CodeMatching;

impl Objective for CodeMatching {
    fn name(&self) -> &str {
        "code-matching"
    }
    fn head(&self) -> DisHead {
        DisHead::Logit
    }
    fn losses(&self, d: &DisOutputs) -> Result<Losses> {
        let gan = objective::Gan.losses(d)?;
        let dis = (gan.dis + (d.real_code.sqr()?.mean_all()? * 0.1)?)?;
        let gap = (d.real_code.mean(0)? - d.fake_code.mean(0)?)?;
        let gen = (gan.gen + gap.sqr()?.sum_all()?)?;
        Ok(Losses::new(dis, gen).report("gen/code_gap", gap.sqr()?.sum_all()?))
    }
}

/// Which optimizers a comparison runs with.
#[derive(Clone, Copy)]
enum Optim {
    /// The configuration's own (Adam): it turns rounding noise in gradients
    /// that should be zero into steps of up to ±lr, so parameters are
    /// compared loosely.
    Config,
    /// Plain gradient descent at this rate: every parameter moves by its
    /// gradient times the rate, so the gradients themselves are compared.
    Sgd(f64),
}

fn updater(
    config: &Config,
    seed: u64,
    fused: bool,
    objective: Option<Box<dyn Objective>>,
    optim: Optim,
) -> Result<Updaters> {
    let dev = Device::Cpu;
    let objective = objective.unwrap_or_else(|| objective::from_config(&config.objective));
    let nets = Nets::build_for(config, objective.head(), &dev, seed)?;
    let step = nets.step_with(objective, config, seed)?;
    assert!(
        step.uses_fused_step(),
        "the MLP nets on the CPU take the fused step"
    );
    let step = if fused {
        step
    } else {
        step.with_reference_step()
    };
    let data = synthetic(4 * config.batch_size, config.model.image);
    let iterator = SerialIterator::new(Arc::new(data), config.batch_size, true, seed)?;
    let mut updater = nets.updater_with(step, config, iterator, &dev)?;
    if let Optim::Sgd(lr) = optim {
        let optimizers = updater.optimizers_mut();
        optimizers.insert("gen", Sgd::new(nets.gen.params().parameters(), lr));
        optimizers.insert("dis", Sgd::new(nets.dis.params().parameters(), lr));
    }
    Ok(updater)
}

fn step(u: &mut Updaters) -> Result<BTreeMap<String, f64>> {
    let obs = Observation::new();
    scope(&obs, || u.update())?;
    obs.keys()
        .into_iter()
        .map(|k| Ok((k.clone(), obs.scalar(&k)?.expect("reported"))))
        .collect()
}

/// Every variable of both models (parameters and buffers), by name.
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

fn compare_with(
    config: &Config,
    steps: usize,
    optim: Optim,
    objective: impl Fn() -> Option<Box<dyn Objective>>,
) -> Result<()> {
    let mut fused = updater(config, 3, true, objective(), optim)?;
    let mut reference = updater(config, 3, false, objective(), optim)?;
    for i in 0..steps {
        // Start both from the fused step's state, through a snapshot.
        reference.load_state(&fused.state()?)?;
        let want = step(&mut reference)?;
        let got = step(&mut fused)?;
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>()
        );
        for (key, w) in &want {
            let g = got[key];
            assert!(
                (g - w).abs() <= 1e-5 * w.abs().max(1e-3),
                "step {i} {key}: fused {g} reference {w} ({config:?})"
            );
        }
        let (a, b) = (variables(&fused)?, variables(&reference)?);
        for (name, want) in &b {
            let got = &a[name];
            let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            let worst = got
                .iter()
                .zip(want)
                .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
            let allowed = match optim {
                // Adam turns tiny gradient differences near zero into ±lr
                // steps, so parameters agree less tightly than the losses.
                // Biases ahead of BatchNorm have no true gradient (only
                // rounding noise), so allow two steps of size
                // lr·sqrt(1 − β2)/(1 − β1) too.
                Optim::Config => 2e-3 * scale + 1.5e-4,
                // Biases ahead of BatchNorm: rounding noise times the rate.
                Optim::Sgd(lr) => 1e-4 * scale + 1e-5 * lr as f32,
            };
            assert!(
                worst <= allowed,
                "step {i} `{name}`: max difference {worst} of {scale}"
            );
        }
        for net in ["gen", "dis"] {
            assert_eq!(
                fused.optimizers().get(net)?.steps(),
                reference.optimizers().get(net)?.steps()
            );
        }
    }
    Ok(())
}

fn compare(config: &Config, steps: usize) -> Result<()> {
    compare_with(config, steps, Optim::Config, || None)
}

/// The comparison under plain gradient descent, which compares gradients.
fn compare_gradients(config: &Config, steps: usize) -> Result<()> {
    compare_with(config, steps, Optim::Sgd(0.1), || None)
}

fn small(objective: ObjectiveConfig, strategy: BnStrategy) -> Config {
    let mut c = Config::seed_with(objective);
    c.model = ModelConfig::mlp_with_units(150, 70);
    c.model.image = ImageShape {
        channels: 1,
        height: 10,
        width: 10,
    };
    c.model.gen.layers = 2;
    c.model.dis.layers = 2;
    c.model.dis.batch_norm = strategy;
    c.batch_size = 12;
    c
}

fn ebgan(strategy: BnStrategy, pt: PtVariant, output: OutputActivation) -> Config {
    let objective = ObjectiveConfig::Ebgan(EbganConfig {
        pt,
        ..EbganConfig::default()
    });
    let mut c = small(objective, strategy);
    c.model.gen.output = output;
    c
}

const STRATEGIES: [BnStrategy; 3] = [
    BnStrategy::Separate,
    BnStrategy::Joint,
    BnStrategy::RealStats,
];

#[test]
fn ebgan_matches_the_reference_with_every_strategy() -> Result<()> {
    for strategy in STRATEGIES {
        compare(
            &ebgan(strategy, PtVariant::Paper, OutputActivation::Identity),
            3,
        )?;
    }
    Ok(())
}

#[test]
fn pull_away_variants_and_output_activations_match() -> Result<()> {
    compare(
        &ebgan(
            BnStrategy::Separate,
            PtVariant::Blog,
            OutputActivation::Tanh,
        ),
        2,
    )?;
    compare(
        &ebgan(
            BnStrategy::Joint,
            PtVariant::Unsquared,
            OutputActivation::Sigmoid,
        ),
        2,
    )?;
    // A margin the fake energy exceeds: L_D's fake term and its gradient vanish.
    let mut c = ebgan(
        BnStrategy::RealStats,
        PtVariant::Paper,
        OutputActivation::Identity,
    );
    c.objective = ObjectiveConfig::Ebgan(EbganConfig {
        margin: 0.0,
        ..EbganConfig::default()
    });
    compare(&c, 2)
}

#[test]
fn a_decoder_with_hidden_layers_matches_the_reference() -> Result<()> {
    for strategy in [BnStrategy::Separate, BnStrategy::Joint] {
        let mut c = ebgan(strategy, PtVariant::Paper, OutputActivation::Identity);
        c.model.dis.decoder_layers = 2;
        c.model.dis.dropout = 0.0;
        compare(&c, 3)?;
    }
    Ok(())
}

#[test]
fn logit_objectives_match_the_reference() -> Result<()> {
    for objective in [
        ObjectiveConfig::Gan,
        ObjectiveConfig::Lsgan,
        ObjectiveConfig::Hinge,
    ] {
        compare_gradients(&small(objective.clone(), BnStrategy::Separate), 2)?;
    }
    compare_gradients(&small(ObjectiveConfig::Hinge, BnStrategy::Joint), 2)?;
    compare_gradients(&small(ObjectiveConfig::Gan, BnStrategy::RealStats), 2)?;
    // With Adam, the losses agree as EBGAN's do.
    compare(&small(ObjectiveConfig::Lsgan, BnStrategy::Separate), 2)
}

/// WGAN with the clip and several D steps per iteration (2 here: within an
/// iteration the engines are not resynchronized, and WGAN's losses, means
/// of clipped critics' outputs near 1e-4, show rounding noise after more),
/// each on its own batch. Its critic's last bias has a
/// gradient of exactly zero (mean fake minus mean real of 1), whose
/// rounding noise RMSProp would amplify, so this compares under gradient
/// descent; the fused RMSProp update is checked on its own in the kernels.
/// D's weights start wide (N(0, 0.05)), so the clip acts on most of them
/// and D's outputs are far from zero.
#[test]
fn wgan_with_clip_and_critic_steps_matches_the_reference() -> Result<()> {
    let mut c = small(ObjectiveConfig::Wgan, BnStrategy::Separate);
    c.dis_steps = 2;
    c.model.dis.init = Init::Normal { std: 0.05 };
    compare_gradients(&c, 2)
}

#[test]
fn spectral_normalization_matches_the_reference() -> Result<()> {
    let mut c = small(ObjectiveConfig::Hinge, BnStrategy::Separate);
    c.model.dis.spectral_norm = true;
    compare_gradients(&c, 3)?;
    let mut c = ebgan(BnStrategy::Joint, PtVariant::Paper, OutputActivation::Tanh);
    c.model.dis.spectral_norm = true;
    compare_gradients(&c, 2)
}

#[test]
fn objectives_reading_codes_and_both_batches_match_the_reference() -> Result<()> {
    for strategy in STRATEGIES {
        let c = small(ObjectiveConfig::Gan, strategy);
        compare_with(&c, 2, Optim::Sgd(0.1), || Some(Box::new(ragan::RaGan)))?;
        compare_with(&c, 2, Optim::Sgd(0.1), || Some(Box::new(CodeMatching)))?;
    }
    Ok(())
}

#[test]
fn the_fused_step_repeats_bit_for_bit_with_any_thread_count() -> Result<()> {
    let mut wgan = small(ObjectiveConfig::Wgan, BnStrategy::Joint);
    wgan.dis_steps = 2;
    wgan.model.dis.spectral_norm = true;
    for config in [
        ebgan(
            BnStrategy::Joint,
            PtVariant::Paper,
            OutputActivation::Identity,
        ),
        wgan,
    ] {
        let run = |threads: usize| -> Result<Vec<u64>> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()?;
            pool.install(|| {
                let mut u = updater(&config, 9, true, None, Optim::Config)?;
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
    }
    Ok(())
}
