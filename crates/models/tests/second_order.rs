//! A loss that differentiates through a gradient (a gradient penalty such as
//! WGAN-GP's) fails loudly instead of training without it: as an objective
//! it stops at the first step before any parameter moves; as plain candle
//! code with `CANDLE_GRAD_DO_NOT_DETACH=1` (candle's switch for gradients
//! with a graph), kusari's kernels refuse to be differentiated twice.
//!
//! One test binary of its own: the switch is read once per thread, and the
//! test sets it for the whole process.

mod common;

use anyhow::Result;
use candle_core::{Device, Var};
use kusari_models::objective::{DisOutputs, Losses, Objective};
use kusari_models::{Config, DisHead, ImageShape, ModelConfig, Nets, ObjectiveConfig, Phase};
use kusari_trainer::Rng;

use common::{synthetic, values};

/// WGAN-GP (Gulrajani et al. 2017): the critic's gradient norm at random
/// interpolates of real and fake images pulled toward 1.
struct WganGp;

impl Objective for WganGp {
    fn name(&self) -> &str {
        "wgan-gp"
    }
    fn head(&self) -> DisHead {
        DisHead::Logit
    }
    fn losses(&self, d: &DisOutputs) -> Result<Losses> {
        let t = d.real_images.ones_like()?.affine(0.5, 0.0)?;
        let between = (&d.real_images * &t)? + (&d.fake_images * (1.0 - &t)?)?;
        let grad = d.gradient_at(&between?)?;
        let norm = grad.sqr()?.flatten_from(1)?.sum(1)?.sqrt()?;
        let penalty = norm.affine(1.0, -1.0)?.sqr()?.mean_all()?;
        let dis = ((d.fake.mean_all()? - d.real.mean_all()?)? + (penalty * 10.0)?)?;
        Ok(Losses::new(dis, d.fake.mean_all()?.neg()?))
    }
}

fn conv_config() -> Config {
    let mut c = Config::seed_with(ObjectiveConfig::Wgan);
    c.model = ModelConfig::conv(ImageShape::MNIST);
    c.model.z_dim = 8;
    c.model.gen.units = 4;
    c.model.dis.units = 4;
    c.batch_size = 3;
    c
}

fn assert_names_the_problem(err: &anyhow::Error) {
    let text = format!("{err:#}");
    assert!(
        text.contains("gradients of gradients are not supported")
            && text.contains("--spectral-norm"),
        "{text}"
    );
}

#[test]
fn second_order_gradients_fail_loudly() -> Result<()> {
    // Before any backward pass on this thread reads it.
    std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");

    // 1. As an objective, on the fused MLP step and on the autograd conv step.
    for config in [common::tiny_config(ObjectiveConfig::Wgan), conv_config()] {
        let dev = Device::Cpu;
        let nets = Nets::build_for(&config, DisHead::Logit, &dev, 0)?;
        let step = nets.step_with(Box::new(WganGp), &config, 0)?;
        let data = synthetic(4 * config.batch_size * config.dis_steps, config.model.image);
        let iterator = kusari_trainer::SerialIterator::new(
            std::sync::Arc::new(data),
            config.batch_size,
            true,
            0,
        )?;
        let mut updater = nets.updater_with(step, &config, iterator, &dev)?;
        let (gen_before, dis_before) = (values(nets.gen.params())?, values(nets.dis.params())?);
        let observation = kusari_trainer::Observation::new();
        let err = kusari_trainer::reporter::scope(&observation, || {
            kusari_trainer::Updater::update(&mut updater)
        })
        .expect_err("a gradient penalty must not train");
        assert_names_the_problem(&err);
        assert!(format!("{err:#}").contains("iteration 1"), "{err:#}");
        assert_eq!(values(nets.gen.params())?, gen_before, "G moved");
        assert_eq!(values(nets.dis.params())?, dis_before, "D moved");
    }

    // 2. As plain candle code through kusari's D: the penalty's backward pass
    // reaches the kernels' gradient ops, which refuse.
    for config in [common::tiny_config(ObjectiveConfig::Gan), conv_config()] {
        let dev = Device::Cpu;
        let nets = Nets::build(&config, &dev, 0)?;
        let d = nets.dis.logit().expect("a logit D");
        let mut dims = vec![config.batch_size];
        dims.extend(config.model.image.dims());
        let x = Var::from_tensor(&Rng::new(3).normal_tensor(dims.as_slice(), 0.0, 1.0, &dev)?)?;
        let logits = d.forward(x.as_tensor(), &mut Phase::Train(&mut Rng::new(4)))?;
        let grads = logits.sum_all()?.backward()?;
        let g = grads.get(x.as_tensor()).expect("a gradient at the input");
        let penalty = g.sqr()?.sum_all()?;
        let err = anyhow::Error::from(penalty.backward().expect_err("differentiated twice"));
        assert_names_the_problem(&err);
    }

    // Candle's own ops keep working twice with the switch on.
    let w = Var::new(&[3f32], &Device::Cpu)?;
    let g = (w.as_tensor().sqr()?.sum_all()?).backward()?;
    let dw = g.get(w.as_tensor()).expect("a gradient").clone();
    let second = dw.sum_all()?.backward()?;
    let d2 = second.get(w.as_tensor()).expect("a second derivative");
    assert_eq!(d2.to_vec1::<f32>()?, vec![2.0]);
    Ok(())
}
