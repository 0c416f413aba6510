//! Each optimizer step changes its own net only; every objective, strategy
//! and variant runs with finite losses; snapshots give G back.

mod common;

use anyhow::Result;
use candle_core::{Device, Tensor};
use kusari_models::{
    BnStrategy, Config, Discriminator, EbganConfig, EbganUpdater, GanUpdater, ImageShape,
    ModelConfig, Nets, Objective, OutputActivation, PtVariant,
};
use kusari_trainer::{Optimizer, Rng, State};

use common::{run, synthetic, tiny_config, trainer, values};

fn real_batch(config: &Config) -> Result<Tensor> {
    let data = synthetic(config.batch_size, config.model.image);
    let mut dims = vec![config.batch_size];
    dims.extend(config.model.image.dims());
    Ok(Tensor::from_slice(data.all_values(), dims, &Device::Cpu)?)
}

/// Asserts that stepping `own` moved every weight and γ of `mine` and left `other` bit-identical.
fn assert_step_isolated(
    step: impl FnOnce() -> Result<()>,
    mine: &kusari_trainer::ParamStore,
    other: &kusari_trainer::ParamStore,
) -> Result<()> {
    let (mine_before, other_before) = (values(mine)?, values(other)?);
    step()?;
    assert_eq!(values(other)?, other_before, "a step changed the other net");
    let mine_after = values(mine)?;
    for (name, before) in &mine_before {
        if name.ends_with("weight") || name.ends_with("gamma") {
            assert_ne!(&mine_after[name], before, "`{name}` did not change");
        }
    }
    Ok(())
}

#[test]
fn ebgan_steps_change_only_their_own_net() -> Result<()> {
    let config = tiny_config(Objective::Ebgan(EbganConfig::default()));
    let nets = Nets::build(&config, &Device::Cpu, 0)?;
    let Discriminator::AutoEncoder(dis) = &nets.dis else {
        panic!("EBGAN needs an auto-encoder")
    };
    let mut updater = EbganUpdater::new(
        nets.gen.clone(),
        dis.clone(),
        EbganConfig::default(),
        Rng::new(1),
    );
    let losses = updater.losses(&real_batch(&config)?)?;
    let dis_grads = losses.dis.backward()?;
    let gen_grads = losses.gen.backward()?;
    let (mut gen_opt, mut dis_opt) = nets.optimizers(&config)?;
    let (g, d) = (nets.gen.params(), nets.dis.params());
    assert_step_isolated(|| dis_opt.step(&dis_grads), d, g)?;
    assert_step_isolated(|| gen_opt.step(&gen_grads), g, d)?;
    Ok(())
}

/// The reference step's G and D gradients equal those of L_G and L_D from
/// one graph (as `EbganUpdater::losses` builds it), though the step itself
/// stops L_D's backward pass at the fake batch, skips D's fake half when the
/// hinge is zero (margin 0: m − E(G(z)) < 0) and leaves out D's weight
/// gradients from L_G's pass. Margin 10 keeps the hinge active.
#[test]
fn the_reference_step_gives_each_net_the_gradients_of_its_own_loss() -> Result<()> {
    for margin in [10.0, 0.0] {
        reference_step_gradients_with_margin(margin)?;
    }
    Ok(())
}

fn reference_step_gradients_with_margin(margin: f64) -> Result<()> {
    let conv = tiny_conv_config(
        Objective::Ebgan(EbganConfig::default()),
        ImageShape::MNIST,
        4,
    );
    let mut mlp = tiny_config(Objective::Ebgan(EbganConfig::default()));
    mlp.model.dis.dropout = 0.5;
    for config in [conv, mlp] {
        let real = real_batch(&config)?;
        let updater = |nets: &Nets| -> Result<EbganUpdater> {
            let Discriminator::AutoEncoder(dis) = &nets.dis else {
                panic!("EBGAN needs an auto-encoder")
            };
            let ebgan = EbganConfig {
                margin,
                ..EbganConfig::default()
            };
            Ok(
                EbganUpdater::new(nets.gen.clone(), dis.clone(), ebgan, Rng::new(1))
                    .with_reference_step(),
            )
        };
        // Expected: one graph, both backward passes through everything.
        let graph = Nets::build(&config, &Device::Cpu, 0)?;
        let losses = updater(&graph)?.losses(&real)?;
        let hinge = margin - losses.fake_energy.to_scalar::<f32>()? as f64;
        assert_eq!(hinge >= 0.0, margin > 0.0, "E(G(z)) = {}", margin - hinge);
        let (dis_grads, gen_grads) = (losses.dis.backward()?, losses.gen.backward()?);
        // Stepped: the same nets and noise, SGD at rate 1, so a weight moves by minus its gradient.
        let stepped = Nets::build(&config, &Device::Cpu, 0)?;
        let mut optimizers = kusari_trainer::Optimizers::new();
        optimizers.insert(
            "gen",
            kusari_trainer::Sgd::new(stepped.gen.params().parameters(), 1.0),
        );
        optimizers.insert(
            "dis",
            kusari_trainer::Sgd::new(stepped.dis.params().parameters(), 1.0),
        );
        let models = kusari_trainer::Models::new();
        let mut ctx = kusari_trainer::UpdateContext {
            iteration: 1,
            device: &Device::Cpu,
            models: &models,
            optimizers: &mut optimizers,
        };
        let batch = kusari_trainer::Batch {
            values: real.clone(),
            labels: None,
        };
        let mut stepping = updater(&stepped)?;
        let observation = kusari_trainer::Observation::default();
        kusari_trainer::reporter::scope(&observation, || {
            kusari_trainer::UpdateCore::update_core(&mut stepping, batch, &mut ctx)
        })?;
        for (store, after, grads) in [
            (graph.gen.params(), stepped.gen.params(), &gen_grads),
            (graph.dis.params(), stepped.dis.params(), &dis_grads),
        ] {
            for (name, var) in store.parameters() {
                let grad = grads.get(var.as_tensor()).expect("a gradient");
                let want = (var.as_tensor() - grad)?.flatten_all()?.to_vec1::<f32>()?;
                let got = after.get(&name).unwrap().flatten_all()?.to_vec1::<f32>()?;
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                        "`{name}` at margin {margin}: {g} vs {w}"
                    );
                }
            }
        }
    }
    Ok(())
}

#[test]
fn gan_steps_change_only_their_own_net() -> Result<()> {
    let config = tiny_config(Objective::Gan);
    let nets = Nets::build(&config, &Device::Cpu, 0)?;
    let Discriminator::Logit(dis) = &nets.dis else {
        panic!("GAN needs a logit D")
    };
    let mut updater = GanUpdater::new(nets.gen.clone(), dis.clone(), Rng::new(1));
    let losses = updater.losses(&real_batch(&config)?)?;
    let dis_grads = losses.dis.backward()?;
    let gen_grads = losses.gen.backward()?;
    let (mut gen_opt, mut dis_opt) = nets.optimizers(&config)?;
    let (g, d) = (nets.gen.params(), nets.dis.params());
    assert_step_isolated(|| dis_opt.step(&dis_grads), d, g)?;
    assert_step_isolated(|| gen_opt.step(&gen_grads), g, d)?;
    Ok(())
}

/// Conv nets of `units` channels for `image`, z-dim 8, batch 3.
fn tiny_conv_config(objective: Objective, image: ImageShape, units: usize) -> Config {
    let mut c = Config {
        objective,
        ..Config::default()
    };
    c.model = ModelConfig::conv(image);
    c.model.z_dim = 8;
    c.model.gen.units = units;
    c.model.dis.units = units;
    c.batch_size = 3;
    c
}

/// The keys every step of `objective` reports.
fn step_keys(objective: &Objective) -> &'static [&'static str] {
    if objective.is_ebgan() {
        &["dis/loss", "gen/loss", "gen/pt"]
    } else {
        &["dis/loss", "gen/loss"]
    }
}

fn assert_finite(config: &Config, iterations: u64, keys: &[&str]) -> Result<()> {
    let reports = run(
        config,
        synthetic(3 * config.batch_size, config.model.image),
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

#[test]
fn every_mlp_choice_trains() -> Result<()> {
    for bn in [
        BnStrategy::Joint,
        BnStrategy::Separate,
        BnStrategy::RealStats,
    ] {
        for pt in [PtVariant::Paper, PtVariant::Blog, PtVariant::Unsquared] {
            let mut c = tiny_config(Objective::Ebgan(EbganConfig {
                pt,
                ..EbganConfig::default()
            }));
            c.model.dis.batch_norm = bn;
            assert_finite(&c, 2, &["dis/loss", "gen/loss", "gen/pt"])?;
        }
        let mut c = tiny_config(Objective::Gan);
        c.model.dis.batch_norm = bn;
        assert_finite(&c, 2, &["dis/loss", "gen/loss"])?;
    }
    for output in [OutputActivation::Tanh, OutputActivation::Sigmoid] {
        let mut c = tiny_config(Objective::Ebgan(EbganConfig::default()));
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
        for objective in [Objective::Ebgan(EbganConfig::default()), Objective::Gan] {
            let c = tiny_conv_config(objective.clone(), image, units);
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
            }
        }
    }
    Ok(())
}

#[test]
fn a_conv_code_size_puts_a_fully_connected_code_between_encoder_and_decoder() -> Result<()> {
    for objective in [Objective::Ebgan(EbganConfig::default()), Objective::Gan] {
        let mut c = tiny_conv_config(objective.clone(), ImageShape::MNIST, 4);
        c.model.dis.code_dim = 5;
        assert_finite(&c, 2, step_keys(&objective))?;
        let nets = Nets::build(&c, &Device::Cpu, 0)?;
        let images = nets.gen.sample(2, &mut Rng::new(0))?;
        if let Some(ae) = nets.dis.auto_encoder() {
            let encoded = ae.forward(&images, &mut kusari_models::Phase::Eval)?;
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
    let mut mlp = tiny_config(Objective::Ebgan(EbganConfig::default()));
    mlp.model.dis.code_dim = 5;
    let err = Nets::build(&mlp, &Device::Cpu, 0).err().expect("refused");
    assert!(err.to_string().contains("--code-dim"), "{err}");
    Ok(())
}

#[test]
fn g_and_d_come_back_from_a_snapshot() -> Result<()> {
    let config = tiny_config(Objective::Ebgan(EbganConfig::default()));
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
    let config = tiny_config(Objective::Ebgan(EbganConfig::default()));
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
