//! The fused backward of a Linear weight: for each block of the weight's
//! rows, the weight gradient `xᵀ·δy` one tile at a time, the input gradient
//! `δy·Wᵀ` from the same tile of W (read before it changes), and the
//! optimizer's element-wise update of that tile right away. The full
//! gradient is never stored, and W and the optimizer's state cross memory
//! once per step.

use std::cell::RefCell;

use kusari_trainer::{ElementState, ElementStep};
use rayon::prelude::*;

use super::columns::SharedMut;
use super::matmul::{gemm, MatMut, MatRef};

/// Columns of W per tile: a tile's gradient (up to 128 × 256 values) stays
/// in the core's cache until the optimizer has used it.
const TILE_COLS: usize = 256;

/// Rows of W per task: a function of the shape alone (never of the thread
/// count), so every sum keeps its order.
pub fn rows_per_task(inputs: usize) -> usize {
    inputs.div_ceil(4).next_multiple_of(8).clamp(8, 128)
}

thread_local! {
    static TILE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// What the update reads.
pub struct WeightBackward<'a> {
    /// The Linear's inputs for the rows whose gradient trains W (`[r × in]`).
    pub x: MatRef<'a>,
    /// Those rows' gradients with respect to the Linear's output (`[r × out]`).
    pub dy: MatRef<'a>,
    /// Rows of output gradients (`[r' × out]`) whose input gradients
    /// (`[r' × in]`) are wanted, and where to put them.
    pub input_grad: Option<(MatRef<'a>, SharedMut<'a>)>,
    /// Set when the forward pass used `W/σ` (spectral normalization).
    pub spectral: Option<SpectralBackward<'a>>,
}

/// The forward pass's `W/σ`, with `σ = vᵀ W u` for the power iteration's
/// vectors `v` (`[in]`) and `u` (`[out]`), held constant. W's gradient is
/// then `(G − c·v uᵀ)/σ` for the gradient `G = xᵀ·δy` of `W/σ` and
/// `c = ⟨G, W/σ⟩ = ⟨δy, x·W/σ⟩`, and the input gradient `δy·(W/σ)ᵀ`.
#[derive(Clone, Copy)]
pub struct SpectralBackward<'a> {
    /// `1/σ`.
    pub inv_sigma: f32,
    /// `⟨δy, x·W/σ⟩` over the rows that train W.
    pub c: f32,
    /// The right singular vector estimate (`[out]`).
    pub u: &'a [f32],
    /// The left singular vector estimate (`[in]`).
    pub v: &'a [f32],
}

/// Updates `w` (`[in × out]`, row-major) and its optimizer `state` by one
/// `step` with W's gradient, after computing the input gradient, then clips
/// the new values to `[−clip, clip]` when asked. Each task, once its
/// columns of the input gradient are complete, calls `then` with them (the
/// previous layer's elementwise backward runs there).
pub fn update(
    w: &mut [f32],
    state: ElementState<'_>,
    step: ElementStep,
    clip: Option<f32>,
    b: WeightBackward<'_>,
    then: Option<&(dyn Fn(std::ops::Range<usize>) + Sync)>,
) {
    let (inputs, outputs) = (b.x.cols(), b.dy.cols());
    assert!(w.len() == inputs * outputs && state.fits(w.len()));
    assert_eq!(b.x.rows(), b.dy.rows());
    let rows = rows_per_task(inputs);
    if let Some((dy_in, _)) = &b.input_grad {
        assert_eq!(dy_in.cols(), outputs);
    }
    if let Some(sn) = &b.spectral {
        assert!(sn.u.len() == outputs && sn.v.len() == inputs);
    }
    let (x, dy, input_grad, spectral) = (b.x, b.dy, b.input_grad, b.spectral);
    w.par_chunks_mut(rows * outputs)
        .zip(state.into_chunks(rows * outputs, inputs * outputs))
        .enumerate()
        .for_each(|(t, (w, mut state))| {
            let i0 = t * rows;
            let ri = w.len() / outputs;
            let columns = i0..i0 + ri;
            {
                // SAFETY: the tasks' column ranges of dx are disjoint.
                let mut dx = input_grad
                    .map(|(dy_in, dx)| (dy_in, unsafe { dx.columns(dy_in.rows(), &columns) }));
                TILE.with(|tile| {
                    let mut tile = tile.borrow_mut();
                    tile.resize(ri * TILE_COLS.min(outputs), 0.0);
                    for j0 in (0..outputs).step_by(TILE_COLS) {
                        let cj = TILE_COLS.min(outputs - j0);
                        let tile = &mut tile[..ri * cj];
                        gemm(
                            &mut MatMut::new(tile, ri, cj),
                            x.block(0, x.rows(), i0, ri).t(),
                            dy.block(0, dy.rows(), j0, cj),
                            false,
                        );
                        if let Some((dy_in, dx)) = dx.as_mut() {
                            let w_tile = MatRef::new(w, ri, outputs).block(0, ri, j0, cj);
                            gemm(dx, dy_in.block(0, dy_in.rows(), j0, cj), w_tile.t(), j0 > 0);
                        }
                        if let Some(sn) = &spectral {
                            correct_for_spectral_norm(tile, sn, i0, ri, j0, cj);
                        }
                        for r in 0..ri {
                            let at = r * outputs + j0..r * outputs + j0 + cj;
                            step.apply(
                                &mut w[at.clone()],
                                &tile[r * cj..(r + 1) * cj],
                                state.slice(at.clone()),
                            );
                            if let Some(c) = clip {
                                clamp(&mut w[at], c);
                            }
                        }
                    }
                });
                if let (Some((_, dx)), Some(sn)) = (dx.as_mut(), &spectral) {
                    dx.scale(sn.inv_sigma);
                }
            }
            // The task's columns of dx are complete and its view of them gone.
            if let Some(then) = then {
                then(columns);
            }
        });
}

/// Turns the tile (rows `i0..i0+ri`, columns `j0..j0+cj`) of the gradient
/// of `W/σ` into that of `W`.
fn correct_for_spectral_norm(
    tile: &mut [f32],
    sn: &SpectralBackward<'_>,
    i0: usize,
    ri: usize,
    j0: usize,
    cj: usize,
) {
    let u = &sn.u[j0..j0 + cj];
    for r in 0..ri {
        let cv = sn.c * sn.v[i0 + r];
        for (g, &uj) in tile[r * cj..(r + 1) * cj].iter_mut().zip(u) {
            *g = (*g - cv * uj) * sn.inv_sigma;
        }
    }
}

/// Clips every value to `[−c, c]`.
pub fn clamp(values: &mut [f32], c: f32) {
    values.iter_mut().for_each(|v| *v = v.clamp(-c, c));
}

/// One optimizer step on a small parameter with its full gradient, then
/// the clip when asked.
pub fn update_small(
    p: &mut [f32],
    g: &[f32],
    state: ElementState<'_>,
    step: ElementStep,
    clip: Option<f32>,
) {
    step.apply(p, g, state);
    if let Some(c) = clip {
        clamp(p, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Result;
    use candle_core::{Device, Tensor, Var};
    use kusari_trainer::{Adam, AdamConfig, Optimizer, RmsProp, RmsPropConfig, Rng};

    use crate::kernels::testing::assert_close;

    /// What candle computes for one case: W's gradient from a weighted sum
    /// of `x·W' + b` (W' = W, or W/σ with σ = vᵀ W u and u, v constant), the
    /// input gradient of other rows, and the optimizer's step on W.
    struct Case {
        rows: usize,
        inputs: usize,
        outputs: usize,
        spectral: bool,
        clip: Option<f32>,
    }

    fn effective(w: &Tensor, u: &Tensor, v: &Tensor, spectral: bool) -> Result<Tensor> {
        if !spectral {
            return Ok(w.clone());
        }
        let sigma = v.unsqueeze(0)?.matmul(w)?.matmul(&u.unsqueeze(1)?)?;
        Ok(w.broadcast_div(&sigma.squeeze(0)?)?)
    }

    fn check(
        case: &Case,
        mut reference: Box<dyn Optimizer>,
        mut fast: Box<dyn Optimizer>,
        w_ref: &Var,
        w_fast: &Var,
    ) -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = Rng::new(4);
        let Case {
            rows,
            inputs,
            outputs,
            spectral,
            clip,
        } = *case;
        let x = rng.normal_tensor((rows, inputs), 0.0, 1.0, &dev)?;
        let x_in = Var::from_tensor(&rng.normal_tensor((rows, inputs), 0.0, 1.0, &dev)?)?;
        let bias = rng.normal_tensor(outputs, 0.0, 1.0, &dev)?;
        let upstream = rng.normal_tensor((rows, outputs), 0.0, 1.0, &dev)?;
        let upstream_in = rng.normal_tensor((rows, outputs), 0.0, 1.0, &dev)?;
        let unit =
            |t: Tensor| -> Result<Tensor> { Ok(t.broadcast_div(&t.sqr()?.sum_all()?.sqrt()?)?) };
        let u = unit(rng.normal_tensor(outputs, 0.0, 1.0, &dev)?)?;
        let v = unit(rng.normal_tensor(inputs, 0.0, 1.0, &dev)?)?;
        for _ in 0..2 {
            // Reference: candle autograd, then the optimizer's own step.
            let w_eff = effective(w_ref.as_tensor(), &u, &v, spectral)?;
            let out = x.matmul(&w_eff)?.broadcast_add(&bias)?;
            let grads = (&out * &upstream)?.sum_all()?.backward()?;
            let in_loss = (x_in.as_tensor().matmul(&w_eff)?.broadcast_add(&bias)? * &upstream_in)?
                .sum_all()?;
            let want_dx: Vec<f32> = in_loss
                .backward()?
                .get(&x_in)
                .unwrap()
                .flatten_all()?
                .to_vec1()?;
            reference.step(&grads)?;
            if let Some(c) = clip {
                w_ref.set(&w_ref.as_tensor().clamp(-c, c)?)?;
            }

            let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
            let us: Vec<f32> = upstream.flatten_all()?.to_vec1()?;
            let uin: Vec<f32> = upstream_in.flatten_all()?.to_vec1()?;
            let (u_host, v_host): (Vec<f32>, Vec<f32>) = (u.to_vec1()?, v.to_vec1()?);
            let lin: Vec<f32> = x
                .matmul(&effective(w_fast.as_tensor(), &u, &v, spectral)?)?
                .flatten_all()?
                .to_vec1()?;
            let sigma: f32 = v
                .unsqueeze(0)?
                .matmul(w_fast.as_tensor())?
                .matmul(&u.unsqueeze(1)?)?
                .flatten_all()?
                .to_vec1::<f32>()?[0];
            let c: f32 = lin.iter().zip(&us).map(|(a, b)| a * b).sum();
            let mut dx = vec![0f32; rows * inputs];
            let host = fast.as_host().expect("CPU parameters");
            let step = host.begin_external_step();
            crate::kernels::storage::write(w_fast.as_tensor(), |w| {
                update(
                    w,
                    host.host_state_mut(w_fast)?,
                    step,
                    clip,
                    WeightBackward {
                        x: MatRef::new(&xs, rows, inputs),
                        dy: MatRef::new(&us, rows, outputs),
                        input_grad: Some((
                            MatRef::new(&uin, rows, outputs),
                            SharedMut::new(&mut dx, inputs),
                        )),
                        spectral: spectral.then_some(SpectralBackward {
                            inv_sigma: 1.0 / sigma,
                            c,
                            u: &u_host,
                            v: &v_host,
                        }),
                    },
                    None,
                );
                Ok(())
            })?;
            assert_close(&dx, &want_dx, 1e-5, "input gradient");
            let got: Vec<f32> = w_fast.flatten_all()?.to_vec1()?;
            let want: Vec<f32> = w_ref.flatten_all()?.to_vec1()?;
            assert_close(&got, &want, 1e-5, "updated weights");
            if let Some(c) = clip {
                assert!(got.iter().all(|v| v.abs() <= c) && got.iter().any(|v| v.abs() == c));
            }
        }
        assert_eq!(fast.steps(), 2);
        Ok(())
    }

    fn weights(case: &Case) -> Result<(Var, Var)> {
        let w0 = Rng::new(5).normal_tensor((case.inputs, case.outputs), 0.0, 0.1, &Device::Cpu)?;
        Ok((Var::from_tensor(&w0)?, Var::from_tensor(&w0)?))
    }

    /// The fused kernel against candle: Linear's autograd gradients of a
    /// weighted sum, then the optimizer's step; the input gradient of other
    /// rows; with Adam, with RMSProp and a clip, and through `W/σ`.
    #[test]
    fn matches_candle_gradients_and_optimizer_steps() -> Result<()> {
        let adam = AdamConfig {
            lr: 1e-2,
            beta1: 0.5,
            ..AdamConfig::default()
        };
        // 100 inputs: several row blocks; 700 outputs: three tiles.
        for (spectral, clip) in [
            (false, None),
            (true, None),
            (false, Some(0.05)),
            (true, Some(0.05)),
        ] {
            let case = Case {
                rows: 9,
                inputs: 100,
                outputs: 700,
                spectral,
                clip,
            };
            let (a, b) = weights(&case)?;
            if clip.is_none() {
                let reference = Adam::new(vec![("w".into(), a.clone())], adam)?;
                let fast = Adam::new(vec![("w".into(), b.clone())], adam)?;
                check(&case, Box::new(reference), Box::new(fast), &a, &b)?;
            } else {
                let rms = RmsPropConfig {
                    lr: 1e-2,
                    ..RmsPropConfig::default()
                };
                let reference = RmsProp::new(vec![("w".into(), a.clone())], rms)?;
                let fast = RmsProp::new(vec![("w".into(), b.clone())], rms)?;
                check(&case, Box::new(reference), Box::new(fast), &a, &b)?;
            }
        }
        Ok(())
    }
}
