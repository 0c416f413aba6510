//! The fused backward of a Linear weight: for each block of the weight's
//! rows, the weight gradient `xᵀ·δy` one tile at a time, the input gradient
//! `δy·Wᵀ` from the same tile of W (read before it changes), and Adam's
//! update of that tile right away. The full gradient is never stored, and W
//! and Adam's moments cross memory once per step.

use std::cell::RefCell;

use kusari_trainer::AdamStep;
use rayon::prelude::*;

use super::columns::SharedMut;
use super::matmul::{gemm, MatMut, MatRef};

/// Columns of W per tile: a tile's gradient (up to 128 × 256 values) stays
/// in the core's cache until Adam has used it.
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
}

/// Updates `w` (`[in × out]`, row-major) and its moments `m`, `v` by one
/// Adam step with the gradient `xᵀ·δy`, after computing the input gradient.
/// Each task, once its columns of the input gradient are complete, calls
/// `then` with them (the previous layer's elementwise backward runs there).
pub fn update(
    w: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    step: AdamStep,
    b: WeightBackward<'_>,
    then: Option<&(dyn Fn(std::ops::Range<usize>) + Sync)>,
) {
    let (inputs, outputs) = (b.x.cols(), b.dy.cols());
    assert!(w.len() == inputs * outputs && m.len() == w.len() && v.len() == w.len());
    assert_eq!(b.x.rows(), b.dy.rows());
    let rows = rows_per_task(inputs);
    if let Some((dy_in, _)) = &b.input_grad {
        assert_eq!(dy_in.cols(), outputs);
    }
    let (x, dy, input_grad) = (b.x, b.dy, b.input_grad);
    w.par_chunks_mut(rows * outputs)
        .zip(m.par_chunks_mut(rows * outputs))
        .zip(v.par_chunks_mut(rows * outputs))
        .enumerate()
        .for_each(|(t, ((w, m), v))| {
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
                        for r in 0..ri {
                            let at = r * outputs + j0..r * outputs + j0 + cj;
                            step.apply(
                                &mut w[at.clone()],
                                &tile[r * cj..(r + 1) * cj],
                                &mut m[at.clone()],
                                &mut v[at],
                            );
                        }
                    }
                });
            }
            // The task's columns of dx are complete and its view of them gone.
            if let Some(then) = then {
                then(columns);
            }
        });
}

/// One Adam step on a small parameter with its full gradient.
pub fn update_small(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], step: AdamStep) {
    step.apply(p, g, m, v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Result;
    use candle_core::{Device, Tensor, Var};
    use kusari_trainer::{Adam, AdamConfig, Optimizer, Rng};

    use crate::fast::testing::assert_close;
    use crate::layers::linear::linear;

    /// The fused kernel against candle: Linear's autograd gradients of a
    /// weighted sum, then kusari's Adam step; the input gradient of other rows.
    #[test]
    fn matches_candle_gradients_and_adam() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = Rng::new(4);
        // 100 inputs: several row blocks; 700 outputs: two tiles.
        let (rows, inputs, outputs) = (9, 100, 700);
        let x = rng.normal_tensor((rows, inputs), 0.0, 1.0, &dev)?;
        let x_in = Var::from_tensor(&rng.normal_tensor((rows, inputs), 0.0, 1.0, &dev)?)?;
        let w0 = rng.normal_tensor((inputs, outputs), 0.0, 0.1, &dev)?;
        let bias = Tensor::zeros(outputs, candle_core::DType::F32, &dev)?;
        let u = rng.normal_tensor((rows, outputs), 0.0, 1.0, &dev)?;
        let u_in = rng.normal_tensor((rows, outputs), 0.0, 1.0, &dev)?;
        let config = AdamConfig {
            lr: 1e-2,
            beta1: 0.5,
            ..AdamConfig::default()
        };

        // Reference: candle autograd, then two steps of Adam::step.
        let w_ref = Var::from_tensor(&w0)?;
        let mut adam_ref = Adam::new(vec![("w".into(), w_ref.clone())], config)?;
        let w_fast = Var::from_tensor(&w0)?;
        let mut adam_fast = Adam::new(vec![("w".into(), w_fast.clone())], config)?;
        for _ in 0..2 {
            let loss = (linear(&x, w_ref.as_tensor(), &bias)? * &u)?.sum_all()?;
            let grads = loss.backward()?;
            let in_loss =
                (linear(x_in.as_tensor(), w_ref.as_tensor(), &bias)? * &u_in)?.sum_all()?;
            let want_dx: Vec<f32> = in_loss
                .backward()?
                .get(&x_in)
                .unwrap()
                .flatten_all()?
                .to_vec1()?;
            adam_ref.step(&grads)?;

            let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
            let us: Vec<f32> = u.flatten_all()?.to_vec1()?;
            let uin: Vec<f32> = u_in.flatten_all()?.to_vec1()?;
            let mut dx = vec![0f32; rows * inputs];
            let step = adam_fast.begin_external_step();
            crate::fast::storage::write(w_fast.as_tensor(), |w| {
                let (m, v) = adam_fast.host_moments_mut(&w_fast)?;
                update(
                    w,
                    m,
                    v,
                    step,
                    WeightBackward {
                        x: MatRef::new(&xs, rows, inputs),
                        dy: MatRef::new(&us, rows, outputs),
                        input_grad: Some((
                            MatRef::new(&uin, rows, outputs),
                            SharedMut::new(&mut dx, inputs),
                        )),
                    },
                    None,
                );
                Ok(())
            })?;
            assert_close(&dx, &want_dx, 1e-5, "input gradient");
            let got: Vec<f32> = w_fast.flatten_all()?.to_vec1()?;
            let want: Vec<f32> = w_ref.flatten_all()?.to_vec1()?;
            assert_close(&got, &want, 1e-5, "updated weights");
            let (gm, gv) = adam_fast.moments("w")?;
            let (wm, wv) = adam_ref.moments("w")?;
            assert_close(&gm, &wm, 1e-5, "first moments");
            assert_close(&gv, &wv, 1e-5, "second moments");
        }
        assert_eq!(adam_fast.steps(), 2);
        Ok(())
    }
}
