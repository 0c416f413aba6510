//! The adversarial step on every objective: each optimizer moves its own
//! net only; the autograd engine gives each net the gradients of its own
//! loss from one graph; K D steps draw K batches; the clip holds; every
//! objective, strategy and variant runs with finite losses on MLP and conv
//! nets; snapshots give G back.

mod common;

use anyhow::Result;
use candle_core::{Device, Tensor};
use kusari_models::objective::{self, DisOutputs, Objective};
use kusari_models::setup::UPDATE_STREAM;
use kusari_models::{
    AdversarialStep, BnStrategy, Config, EbganConfig, ImageShape, ModelConfig, Nets,
    ObjectiveConfig, OutputActivation, Phase, PtVariant,
};
use kusari_trainer::{Optimizers, Rng, Sgd, State, Updater};

use common::{run, synthetic, tiny_config, trainer, values};

/// Every shipped objective with its default settings.
fn objectives() -> Vec<ObjectiveConfig> {
    ObjectiveConfig::NAMES
        .iter()
        .map(|n| ObjectiveConfig::from_name(n).expect("a shipped objective"))
        .collect()
}

/// The guide's example objective, the relativistic average GAN: both
/// losses read both batches, so under joint batch normalization `L_G`'s
/// gradient on the real rows reaches G.
#[path = "../examples/ragan.rs"]
#[allow(dead_code)]
mod ragan;

fn real_batch(config: &Config) -> Result<Tensor> {
    let data = synthetic(config.batch_size, config.model.image);
    let mut dims = vec![config.batch_size];
    dims.extend(config.model.image.dims());
    Ok(Tensor::from_slice(data.all_values(), dims, &Device::Cpu)?)
}

/// Conv nets of `units` channels for `image`, z-dim 8, batch 3.
fn tiny_conv_config(objective: ObjectiveConfig, image: ImageShape, units: usize) -> Config {
    let mut c = Config::seed_with(objective);
    c.model = ModelConfig::conv(image);
    c.model.z_dim = 8;
    c.model.gen.units = units;
    c.model.dis.units = units;
    c.batch_size = 3;
    c
}

/// A step over fresh nets for `config`, on either engine.
fn step_for(config: &Config, nets: &Nets, fused: bool) -> Result<AdversarialStep> {
    let step = nets.step(config, 0)?;
    Ok(if fused {
        step
    } else {
        step.with_reference_step()
    })
}

#[test]
fn each_optimizer_moves_only_its_own_net() -> Result<()> {
    for objective in objectives() {
        let mut config = tiny_config(objective.clone());
        config.dis_weight_clip = None;
        config.dis_steps = 1;
        for fused in [true, false] {
            for frozen in ["gen", "dis"] {
                let nets = Nets::build(&config, &Device::Cpu, 0)?;
                let mut step = step_for(&config, &nets, fused)?;
                assert_eq!(step.uses_fused_step(), fused);
                let (gen_opt, dis_opt) = nets.optimizers(&config)?;
                let mut optimizers = Optimizers::new();
                optimizers.insert("gen", gen_opt);
                optimizers.insert("dis", dis_opt);
                optimizers.get_mut(frozen)?.set_learning_rate(0.0);
                let (mine, other) = if frozen == "gen" {
                    (nets.dis.params(), nets.gen.params())
                } else {
                    (nets.gen.params(), nets.dis.params())
                };
                let (mine_before, other_before) = (values(mine)?, values(other)?);
                step.step(&real_batch(&config)?, &mut optimizers, true)?;
                let what = format!(
                    "{} ({}), `{frozen}` frozen",
                    objective.name(),
                    if fused { "fused" } else { "autograd" }
                );
                assert_eq!(
                    values(other)?,
                    other_before,
                    "{what}: the frozen net changed"
                );
                let mine_after = values(mine)?;
                for (name, before) in &mine_before {
                    if name.ends_with("weight") || name.ends_with("gamma") {
                        assert_ne!(&mine_after[name], before, "{what}: `{name}` did not change");
                    }
                }
            }
        }
    }
    Ok(())
}

/// The autograd step's G and D gradients equal those of `L_G` and `L_D`
/// from one graph through G, D and the losses, though the step stops
/// `L_D`'s backward pass at the fake batch, leaves out terms whose gradient
/// is zero (EBGAN at margin 0: m − E(G(z)) < 0), skips D's weight gradients
/// in `L_G`'s pass, and carries real rows only under joint batch norm.
#[test]
fn the_autograd_step_gives_each_net_the_gradients_of_its_own_loss() -> Result<()> {
    type Custom = Option<fn() -> Box<dyn Objective>>;
    let mut cases: Vec<(Config, Custom)> = Vec::new();
    for margin in [10.0, 0.0] {
        let ebgan = ObjectiveConfig::Ebgan(EbganConfig {
            margin,
            ..EbganConfig::default()
        });
        cases.push((tiny_conv_config(ebgan.clone(), ImageShape::MNIST, 4), None));
        let mut mlp = tiny_config(ebgan);
        mlp.model.dis.dropout = 0.5;
        cases.push((mlp, None));
    }
    for objective in [
        ObjectiveConfig::Gan,
        ObjectiveConfig::Lsgan,
        ObjectiveConfig::Hinge,
        ObjectiveConfig::Wgan,
    ] {
        cases.push((
            tiny_conv_config(objective.clone(), ImageShape::MNIST, 4),
            None,
        ));
        let mut sn = tiny_config(objective);
        sn.model.dis.spectral_norm = true;
        cases.push((sn, None));
    }
    for strategy in [BnStrategy::Joint, BnStrategy::Separate] {
        let mut c = tiny_config(ObjectiveConfig::Gan);
        c.model.dis.batch_norm = strategy;
        cases.push((c, Some(|| Box::new(ragan::RaGan) as Box<dyn Objective>)));
    }
    for (mut config, custom) in cases {
        config.dis_weight_clip = None;
        let objective =
            || custom.map_or_else(|| objective::from_config(&config.objective), |f| f());
        let real = real_batch(&config)?;
        let head = objective().head();
        // Expected: one graph, both backward passes through everything.
        let graph = Nets::build_for(&config, head, &Device::Cpu, 0)?;
        let mut rng = Rng::derived(0, UPDATE_STREAM);
        let z = graph.gen.sample_z(config.batch_size, &mut rng)?;
        let fake = graph.gen.forward(&z, &mut Phase::Train(&mut rng))?;
        let (r, f) = graph
            .dis
            .judge_pair(&real, &fake, &mut Phase::Train(&mut rng))?;
        let outputs = DisOutputs {
            real: r.output,
            fake: f.output,
            real_code: r.code,
            fake_code: f.code,
            real_images: real.clone(),
            fake_images: fake,
        };
        let losses = objective().losses(&outputs)?;
        let (dis_grads, gen_grads) = (losses.dis.backward()?, losses.gen.backward()?);
        // Stepped: the same nets and noise, SGD at rate 1, so a weight moves by minus its gradient.
        let stepped = Nets::build_for(&config, head, &Device::Cpu, 0)?;
        let mut optimizers = Optimizers::new();
        optimizers.insert("gen", Sgd::new(stepped.gen.params().parameters(), 1.0));
        optimizers.insert("dis", Sgd::new(stepped.dis.params().parameters(), 1.0));
        let mut step = stepped.step_with(objective(), &config, 0)?;
        step.step(&real, &mut optimizers, true)?;
        for (store, after, grads) in [
            (graph.gen.params(), stepped.gen.params(), &gen_grads),
            (graph.dis.params(), stepped.dis.params(), &dis_grads),
        ] {
            for (name, var) in store.parameters() {
                let want = match grads.get(var.as_tensor()) {
                    Some(grad) => (var.as_tensor() - grad)?,
                    None => var.as_tensor().clone(),
                };
                let want = want.flatten_all()?.to_vec1::<f32>()?;
                let got = after.get(&name).unwrap().flatten_all()?.to_vec1::<f32>()?;
                // Spectral normalization divides by a small σ: larger
                // gradients, more rounding.
                let tolerance = if config.model.dis.spectral_norm {
                    1e-4
                } else {
                    1e-5
                };
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= tolerance * (1.0 + w.abs()),
                        "`{name}` for {}: {g} vs {w} ({:?})",
                        objective().name(),
                        config.model
                    );
                }
            }
        }
    }
    Ok(())
}

#[test]
fn k_dis_steps_draw_k_batches_and_the_clip_holds() -> Result<()> {
    for fused in [true, false] {
        let mut config = tiny_config(ObjectiveConfig::Wgan);
        config.dis_steps = 3;
        let dir = tempfile::tempdir()?;
        // 30 images in batches of 10: an epoch is one iteration of 3 D steps.
        let (mut t, log, nets) =
            trainer(&config, synthetic(30, config.model.image), 0, 2, dir.path())?;
        if !fused {
            *t.updater_mut().core_mut() = nets.step(&config, 0)?.with_reference_step();
        }
        t.run()?;
        let updater = t.updater();
        assert_eq!(updater.epoch(), 2, "each iteration drew three batches");
        assert_eq!(updater.optimizers().get("dis")?.steps(), 6);
        assert_eq!(updater.optimizers().get("gen")?.steps(), 2);
        let reports = log.lock().unwrap().clone();
        assert!(reports.iter().all(|r| r["dis/wasserstein"].is_finite()));
        for (name, var) in nets.dis.params().parameters() {
            let v = var.flatten_all()?.to_vec1::<f32>()?;
            assert!(
                v.iter().all(|x| x.abs() <= 0.01),
                "`{name}` left [−0.01, 0.01]"
            );
        }
    }
    Ok(())
}

fn assert_finite(config: &Config, iterations: u64, keys: &[&str]) -> Result<()> {
    let reports = run(
        config,
        synthetic(3 * config.batch_size * config.dis_steps, config.model.image),
        5,
        iterations,
    )?;
    for r in &reports {
        for key in keys {
            assert!(
                r.get(*key).is_some_and(|v| v.is_finite()),
                "{key} in {r:?} for {config:?}"
            );
        }
    }
    Ok(())
}

/// The keys every step of `objective` reports.
fn step_keys(objective: &ObjectiveConfig) -> &'static [&'static str] {
    match objective {
        ObjectiveConfig::Ebgan(_) => &["dis/loss", "gen/loss", "gen/pt", "dis/real_energy"],
        ObjectiveConfig::Wgan => &["dis/loss", "gen/loss", "dis/wasserstein"],
        _ => &["dis/loss", "gen/loss"],
    }
}

#[test]
fn every_mlp_choice_trains() -> Result<()> {
    for bn in [
        BnStrategy::Joint,
        BnStrategy::Separate,
        BnStrategy::RealStats,
    ] {
        for pt in [PtVariant::Paper, PtVariant::Blog, PtVariant::Unsquared] {
            let mut c = tiny_config(ObjectiveConfig::Ebgan(EbganConfig {
                pt,
                ..EbganConfig::default()
            }));
            c.model.dis.batch_norm = bn;
            assert_finite(&c, 2, step_keys(&c.objective))?;
        }
        for objective in objectives() {
            let mut c = tiny_config(objective.clone());
            c.model.dis.batch_norm = bn;
            c.model.dis.spectral_norm = bn == BnStrategy::Joint;
            assert_finite(&c, 2, step_keys(&objective))?;
        }
    }
    for output in [OutputActivation::Tanh, OutputActivation::Sigmoid] {
        let mut c = tiny_config(ObjectiveConfig::Ebgan(EbganConfig::default()));
        c.model.gen.output = output;
        assert_finite(&c, 2, &["dis/loss", "gen/loss", "gen/pt"])?;
        let images = Nets::build(&c, &Device::Cpu, 0)?
            .gen
            .sample(4, &mut Rng::new(0))?;
        let v: Vec<f32> = images.flatten_all()?.to_vec1()?;
        let (lo, hi) = if output == OutputActivation::Tanh {
            (-1.0, 1.0)
        } else {
            (0.0, 1.0)
        };
        assert!(
            v.iter().all(|x| (lo..=hi).contains(x)),
            "{output:?} out of range"
        );
    }
    Ok(())
}

#[test]
fn conv_nets_train_on_28_gray_and_64_rgb() -> Result<()> {
    for (image, units) in [(ImageShape::MNIST, 4), (ImageShape::RGB64, 2)] {
        for objective in objectives() {
            let mut c = tiny_conv_config(objective.clone(), image, units);
            c.model.dis.spectral_norm = objective == ObjectiveConfig::Hinge;
            assert_finite(&c, 2, step_keys(&objective))?;
            let nets = Nets::build(&c, &Device::Cpu, 0)?;
            let images = nets.gen.sample(2, &mut Rng::new(0))?;
            assert_eq!(
                images.dims(),
                &[2, image.channels, image.height, image.width]
            );
            if objective.is_ebgan() {
                assert_eq!(nets.dis.reconstruct(&images)?.dims(), images.dims());
            } else {
                assert!(nets.dis.reconstruct(&images).is_err());
                assert!(nets.dis.logit().is_some());
            }
        }
    }
    Ok(())
}

/// Spectral normalization keeps its vectors as D's buffers: snapshots hold
/// them, and a D built without it refuses such a snapshot.
#[test]
fn spectral_norm_vectors_live_in_snapshots() -> Result<()> {
    let mut config = tiny_conv_config(ObjectiveConfig::Hinge, ImageShape::MNIST, 4);
    config.model.dis.spectral_norm = true;
    let nets = Nets::build(&config, &Device::Cpu, 0)?;
    let names: Vec<String> = nets
        .dis
        .params()
        .all()
        .into_iter()
        .map(|(n, _, _)| n)
        .collect();
    let vectors = names
        .iter()
        .filter(|n| n.ends_with("sn_u") || n.ends_with("sn_v"))
        .count();
    // 28 → 14 → 7: two convolutions, then the head's Linear; u and v each.
    assert_eq!(vectors, 2 * 3, "{names:?}");
    // The same seed gives the same weights with or without it.
    let mut plain = config.clone();
    plain.model.dis.spectral_norm = false;
    let without = Nets::build(&plain, &Device::Cpu, 0)?;
    assert_eq!(values(nets.dis.params())?, values(without.dis.params())?);
    let err = without
        .dis
        .params()
        .load_state(&nets.dis.params().state(), "the snapshot's D")
        .unwrap_err();
    assert!(format!("{err:#}").contains("sn_"), "{err:#}");
    Ok(())
}

#[test]
fn a_conv_code_size_puts_a_fully_connected_code_between_encoder_and_decoder() -> Result<()> {
    for objective in [
        ObjectiveConfig::Ebgan(EbganConfig::default()),
        ObjectiveConfig::Gan,
    ] {
        let mut c = tiny_conv_config(objective.clone(), ImageShape::MNIST, 4);
        c.model.dis.code_dim = 5;
        assert_finite(&c, 2, step_keys(&objective))?;
        let nets = Nets::build(&c, &Device::Cpu, 0)?;
        let images = nets.gen.sample(2, &mut Rng::new(0))?;
        if let Some(ae) = nets.dis.auto_encoder() {
            let encoded = ae.forward(&images, &mut Phase::Eval)?;
            assert_eq!(encoded.code.dims(), &[2, 5]);
            assert_eq!(encoded.reconstruction.dims(), images.dims());
        }
        // The code's Linear (weights stored [inputs, outputs]): 8 maps of 7×7 → 5 values.
        let code_weights = nets
            .dis
            .params()
            .all()
            .into_iter()
            .filter(|(name, v, _)| name.starts_with("enc/") && v.dims() == [8 * 7 * 7, 5])
            .count();
        assert_eq!(code_weights, 1, "one Linear from the maps to the code");
        if objective.is_ebgan() {
            let back = nets
                .dis
                .params()
                .all()
                .into_iter()
                .filter(|(name, v, _)| name.starts_with("dec/") && v.dims() == [5, 8 * 7 * 7])
                .count();
            assert_eq!(back, 1, "one Linear from the code back to the maps");
        }
    }
    let mut mlp = tiny_config(ObjectiveConfig::Ebgan(EbganConfig::default()));
    mlp.model.dis.code_dim = 5;
    let err = Nets::build(&mlp, &Device::Cpu, 0).err().expect("refused");
    assert!(err.to_string().contains("--code-dim"), "{err}");
    Ok(())
}

#[test]
fn a_step_refuses_a_d_built_for_another_objective() -> Result<()> {
    let config = tiny_config(ObjectiveConfig::Ebgan(EbganConfig::default()));
    let nets = Nets::build(&config, &Device::Cpu, 0)?;
    let err = nets
        .step_with(Box::new(objective::Hinge), &config, 0)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("build_for"), "{err}");
    Ok(())
}

#[test]
fn g_and_d_come_back_from_a_snapshot() -> Result<()> {
    let config = tiny_config(ObjectiveConfig::Ebgan(EbganConfig::default()));
    let dir = tempfile::tempdir()?;
    let (mut t, _, nets) = trainer(&config, synthetic(30, config.model.image), 4, 5, dir.path())?;
    t.run()?;
    let path = dir.path().join("snap");
    t.save_snapshot(&path)?;
    let state = State::load(&path, &Device::Cpu)?;

    let fresh = Nets::build(&config, &Device::Cpu, 1234)?;
    let want = nets
        .gen
        .sample(6, &mut Rng::new(9))?
        .flatten_all()?
        .to_vec1::<f32>()?;
    assert_ne!(
        fresh
            .gen
            .sample(6, &mut Rng::new(9))?
            .flatten_all()?
            .to_vec1::<f32>()?,
        want
    );
    fresh.gen.load_snapshot(&state)?;
    assert_eq!(
        fresh
            .gen
            .sample(6, &mut Rng::new(9))?
            .flatten_all()?
            .to_vec1::<f32>()?,
        want
    );

    // A G of another width is refused with a message naming the problem.
    let mut other = config.clone();
    other.model.gen.units = 12;
    let err = Nets::build(&other, &Device::Cpu, 0)?
        .gen
        .load_snapshot(&state)
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("different architecture"),
        "{err:#}"
    );
    assert!(fresh.gen.load_snapshot(&State::new()).is_err());
    Ok(())
}

#[test]
fn wrong_image_shapes_are_reported() -> Result<()> {
    let config = tiny_config(ObjectiveConfig::Ebgan(EbganConfig::default()));
    let mut other = config.clone();
    other.model.image = ImageShape {
        channels: 1,
        height: 4,
        width: 4,
    };
    // Data of 4×4 images for nets built for 8×8.
    let err = run(&config, synthetic(30, other.model.image), 0, 1).unwrap_err();
    assert!(format!("{err:#}").contains("[N, 1, 8, 8]"), "{err:#}");
    Ok(())
}
