//! The fused step's BatchNorm kernel, on the row groups of each strategy,
//! against candle's BatchNorm layer and autograd.

use anyhow::Result;
use candle_core::{Device, Tensor, Var};
use kusari_trainer::{ParamStore, Rng};

use super::blocks::pair_groups;
use crate::config::BnStrategy;
use crate::kernels::batch_norm::{
    backward_columns, forward_columns, update_running, BnStats, RowBlock,
};
use crate::kernels::columns::{par_columns, SharedMut};
use crate::kernels::testing::assert_close;
use crate::layers::batch_norm::{BatchNorm, DECAY, EPS};
use crate::layers::Phase;

/// The fast forward and backward against candle's BatchNorm layer and
/// autograd, for one strategy: values, input gradients of both the
/// all-rows block (L_D) and the fake-only or all-rows block (L_G), γ/β
/// gradients and running statistics.
fn check(strategy: BnStrategy) -> Result<()> {
    let (n, cols) = (6, 150);
    let dev = Device::Cpu;
    let mut rng = Rng::new(11);
    let real = Var::from_tensor(&rng.normal_tensor((n, cols), 0.5, 2.0, &dev)?)?;
    let fake = Var::from_tensor(&rng.normal_tensor((n, cols), -1.0, 0.7, &dev)?)?;
    let params = ParamStore::new();
    let bn = BatchNorm::new(&params, cols, &dev)?;
    let gamma_v = params.get("gamma").unwrap();
    let beta_v = params.get("beta").unwrap();
    gamma_v.set(&rng.normal_tensor(cols, 1.0, 0.5, &dev)?)?;
    beta_v.set(&rng.normal_tensor(cols, 0.0, 0.5, &dev)?)?;
    let outs = bn.forward(
        &[real.as_tensor().clone(), fake.as_tensor().clone()],
        strategy,
        &Phase::Train(&mut Rng::new(0)),
    )?;
    let u_real = rng.normal_tensor((n, cols), 0.0, 1.0, &dev)?;
    let u_fake = rng.normal_tensor((n, cols), 0.0, 1.0, &dev)?;
    let loss_all = ((&outs[0] * &u_real)?.sum_all()? + (&outs[1] * &u_fake)?.sum_all()?)?;
    let g_all = loss_all.backward()?;
    let g_fake_only = (&outs[1] * &u_fake)?.sum_all()?.backward()?;

    // Fast path on the stacked [real; fake].
    let mut y: Vec<f32> = Tensor::cat(&[real.as_tensor(), fake.as_tensor()], 0)?
        .flatten_all()?
        .to_vec1()?;
    let gamma: Vec<f32> = gamma_v.to_vec1()?;
    let beta: Vec<f32> = beta_v.to_vec1()?;
    let groups = pair_groups(strategy, n);
    let mut out = vec![0f32; 2 * n * cols];
    let mut stats = BnStats::default();
    stats.resize(groups.len(), cols);
    {
        let ys = SharedMut::new(&mut y, cols);
        let os = SharedMut::new(&mut out, cols);
        let st = [
            SharedMut::new(&mut stats.mean, cols),
            SharedMut::new(&mut stats.var, cols),
            SharedMut::new(&mut stats.inv_std, cols),
        ];
        par_columns(cols, |c| unsafe {
            forward_columns(ys, os, st, &groups, &gamma, &beta, EPS as f32, &c)
        });
    }
    let want_out: Vec<f32> = Tensor::cat(&outs, 0)?.flatten_all()?.to_vec1()?;
    assert_close(&out, &want_out, 1e-5, &format!("{strategy} values"));

    let mut avg_mean = vec![0f32; cols];
    let mut avg_var = vec![0f32; cols];
    for (g, group) in groups.iter().enumerate() {
        let r = g * cols..(g + 1) * cols;
        update_running(
            &mut avg_mean,
            &mut avg_var,
            &stats.mean[r.clone()],
            &stats.var[r],
            group.stats.len(),
            DECAY,
        );
    }
    let want_mean: Vec<f32> = params.get("avg_mean").unwrap().to_vec1()?;
    let want_var: Vec<f32> = params.get("avg_var").unwrap().to_vec1()?;
    assert_close(&avg_mean, &want_mean, 1e-5, "running mean");
    assert_close(&avg_var, &want_var, 1e-5, "running var");

    // L_D-like block: every row, with γ/β gradients.
    let mut d: Vec<f32> = Tensor::cat(&[&u_real, &u_fake], 0)?
        .flatten_all()?
        .to_vec1()?;
    let mut dgamma = vec![0f32; cols];
    let mut dbeta = vec![0f32; cols];
    {
        let ds = SharedMut::new(&mut d, cols);
        let grads = (
            SharedMut::new(&mut dgamma, cols),
            SharedMut::new(&mut dbeta, cols),
        );
        let block = RowBlock {
            offset: 0,
            rows: 2 * n,
        };
        par_columns(cols, |c| unsafe {
            backward_columns(
                ds,
                block,
                &y,
                cols,
                &stats.inv_std,
                &groups,
                &gamma,
                Some(grads),
                &c,
            )
        });
    }
    let want_d: Vec<f32> = Tensor::cat(&[g_all.get(&real).unwrap(), g_all.get(&fake).unwrap()], 0)?
        .flatten_all()?
        .to_vec1()?;
    assert_close(&d, &want_d, 1e-5, &format!("{strategy} input gradients"));
    assert_close(
        &dgamma,
        &g_all.get(&gamma_v).unwrap().to_vec1::<f32>()?,
        1e-5,
        "dγ",
    );
    assert_close(
        &dbeta,
        &g_all.get(&beta_v).unwrap().to_vec1::<f32>()?,
        1e-5,
        "dβ",
    );

    // L_G-like block: the rows that depend on the fake batch.
    let offset = if strategy == BnStrategy::Joint { 0 } else { n };
    let mut d: Vec<f32> = if offset == 0 {
        Tensor::cat(&[&u_real.zeros_like()?, &u_fake], 0)?
    } else {
        u_fake.clone()
    }
    .flatten_all()?
    .to_vec1()?;
    {
        let ds = SharedMut::new(&mut d, cols);
        let block = RowBlock {
            offset,
            rows: 2 * n - offset,
        };
        par_columns(cols, |c| unsafe {
            backward_columns(
                ds,
                block,
                &y,
                cols,
                &stats.inv_std,
                &groups,
                &gamma,
                None,
                &c,
            )
        });
    }
    let want_fake: Vec<f32> = g_fake_only.get(&fake).unwrap().flatten_all()?.to_vec1()?;
    let got_fake = &d[(n - offset) * cols..];
    assert_close(
        got_fake,
        &want_fake,
        1e-5,
        &format!("{strategy} fake-only gradients"),
    );
    Ok(())
}

#[test]
fn every_strategy_matches_candle_values_and_gradients() -> Result<()> {
    for strategy in [
        BnStrategy::Separate,
        BnStrategy::Joint,
        BnStrategy::RealStats,
    ] {
        check(strategy)?;
    }
    Ok(())
}
