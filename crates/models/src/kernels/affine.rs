//! A fully connected layer's `x·W + b` as one candle custom op for f32 on
//! the CPU, with its gradients, for the candle-ops layers (the conv nets'
//! Linear layers, and every Linear on the autograd engine).
//!
//! candle would run it as a matmul through the `gemm` crate and a
//! broadcast add, and its backward as two more matmuls and a sum over the
//! batch, the weight's gradient computed even where nobody applies it. Here
//! the three products run on kusari's kernels ([`super::matmul`]), split
//! over fixed column blocks (so the results do not depend on the thread
//! count), and the weight and bias gradients are skipped inside
//! [`super::input_gradients_only`] as the convolutions' are.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::columns::{par_ranges, SharedMut};
use super::grad_scope::{weight_gradient, WeightGradient};
use super::matmul::{block_width, gemm, MatRef};
use super::tally::{self, ProductShape};

/// `x [N, in] · w [in, out] + b [out]` for f32 CPU tensors, differentiable
/// in all three.
pub fn affine(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, Affine)
}

/// The forward op.
struct Affine;
/// `grad [N, out] · wᵀ` → `[N, in]`.
struct InputGrad;
/// `xᵀ · grad [N, out]` → `[in, out]`.
struct WeightGrad;
/// `grad [N, out]` → `[out]`, each column summed in row order.
struct ColumnSum;

fn operand<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    super::storage::operand(s, l, "fully connected layer")
}

fn dims2(l: &Layout, what: &str) -> candle_core::Result<(usize, usize)> {
    match l.dims() {
        &[r, c] => Ok((r, c)),
        other => candle_core::bail!("{what} must be 2-d, got shape {other:?}"),
    }
}

/// `dst [m, n] = a [m, k] · b [k, n]` (`a`, `b` possibly transposed views),
/// over fixed column blocks of `dst` in parallel.
fn product(m: usize, n: usize, a: MatRef<'_>, b: MatRef<'_>) -> Vec<f32> {
    let shape = ProductShape {
        m,
        k: a.cols(),
        n,
        a_t: a.is_transposed(),
        b_t: b.is_transposed(),
    };
    tally::record(shape, 1);
    let mut out = vec![0f32; m * n];
    let shared = SharedMut::new(&mut out, n);
    par_ranges(n, block_width(n), |cols| {
        // SAFETY: each task writes only its own column block.
        let mut dst = unsafe { shared.columns(m, &cols) };
        gemm(
            &mut dst,
            a,
            b.block(0, b.rows(), cols.start, cols.len()),
            false,
        );
    });
    out
}

impl CustomOp3 for Affine {
    fn name(&self) -> &'static str {
        "kusari-affine"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, inputs) = dims2(l1, "a fully connected layer's input")?;
        let (w_in, outputs) = dims2(l2, "a fully connected layer's weight")?;
        if w_in != inputs || l3.dims() != [outputs] {
            candle_core::bail!(
                "fully connected layer: input {:?}, weight {:?} and bias {:?} do not fit",
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let (x, w, b) = (operand(s1, l1)?, operand(s2, l2)?, operand(s3, l3)?);
        let mut y = product(
            n,
            outputs,
            MatRef::new(x, n, inputs),
            MatRef::new(w, inputs, outputs),
        );
        if outputs > 0 {
            for row in y.chunks_mut(outputs) {
                row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((n, outputs))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        // Real images need no gradient, nor do weights inside `input_gradients_only`.
        let grad_x = if x.track_op() {
            Some(super::gradient_op2(&grad, w, InputGrad)?)
        } else {
            None
        };
        let grad_w = match weight_gradient(w) {
            WeightGradient::Skip => None,
            WeightGradient::Zeros => Some(w.zeros_like()?),
            WeightGradient::Compute => Some(super::gradient_op2(x, &grad, WeightGrad)?),
        };
        let grad_b = match weight_gradient(b) {
            WeightGradient::Skip => None,
            WeightGradient::Zeros => Some(b.zeros_like()?),
            WeightGradient::Compute => Some(super::gradient_op1(&grad, ColumnSum)?),
        };
        Ok((grad_x, grad_w, grad_b))
    }
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "kusari-affine-input-grad"
    }

    refuse_second_order!(2);

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, outputs) = dims2(l1, "the output gradient")?;
        let (inputs, w_out) = dims2(l2, "the weight")?;
        if w_out != outputs {
            candle_core::bail!("affine input gradient: {:?} · {:?}ᵀ", l1.dims(), l2.dims());
        }
        let (g, w) = (operand(s1, l1)?, operand(s2, l2)?);
        let dx = product(
            n,
            inputs,
            MatRef::new(g, n, outputs),
            MatRef::new(w, inputs, outputs).t(),
        );
        Ok((CpuStorage::F32(dx), Shape::from((n, inputs))))
    }
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "kusari-affine-weight-grad"
    }

    refuse_second_order!(2);

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, inputs) = dims2(l1, "the input")?;
        let (g_n, outputs) = dims2(l2, "the output gradient")?;
        if g_n != n {
            candle_core::bail!("affine weight gradient: {:?}ᵀ · {:?}", l1.dims(), l2.dims());
        }
        let (x, g) = (operand(s1, l1)?, operand(s2, l2)?);
        let dw = product(
            inputs,
            outputs,
            MatRef::new(x, n, inputs).t(),
            MatRef::new(g, n, outputs),
        );
        Ok((CpuStorage::F32(dw), Shape::from((inputs, outputs))))
    }
}

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "kusari-column-sum"
    }

    refuse_second_order!(1);

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, cols) = dims2(l, "the output gradient")?;
        let g = operand(s, l)?;
        let mut sums = vec![0f32; cols];
        if cols > 0 {
            for row in g.chunks(cols) {
                sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
            }
        }
        Ok((CpuStorage::F32(sums), Shape::from(cols)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};
    use kusari_trainer::Rng;

    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b)
            .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
            .expect("difference")
    }

    #[test]
    fn affine_matches_candle_with_gradients() {
        let dev = Device::Cpu;
        let mut rng = Rng::new(11);
        // Widths below, at and above one column block, batches of 1 and 100.
        for (n, inputs, outputs) in [(1, 3, 5), (100, 784, 64), (50, 6, 3136), (7, 64, 65)] {
            let draw = |rng: &mut Rng, shape: &[usize]| {
                Var::from_tensor(&rng.normal_tensor(shape, 0.0, 1.0, &dev).unwrap()).unwrap()
            };
            let (x, w, b) = (
                draw(&mut rng, &[n, inputs]),
                draw(&mut rng, &[inputs, outputs]),
                draw(&mut rng, &[outputs]),
            );
            let r = rng.normal_tensor((n, outputs), 0.0, 1.0, &dev).unwrap();
            let theirs = x
                .matmul(w.as_tensor())
                .unwrap()
                .broadcast_add(b.as_tensor())
                .unwrap();
            let ours = affine(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap();
            let scale = (inputs as f32).sqrt();
            assert!(
                max_diff(&ours, &theirs) < 1e-5 * scale,
                "forward {n}×{inputs}×{outputs}"
            );
            let grads = |y: Tensor| (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let (gt, go) = (grads(theirs), grads(ours));
            for (what, v, tol) in [
                ("input", &x, 1e-5 * (outputs as f32).sqrt()),
                ("weight", &w, 1e-5 * (n as f32).sqrt()),
                ("bias", &b, 1e-5 * (n as f32).sqrt()),
            ] {
                let d = max_diff(go.get(v).expect("ours"), gt.get(v).expect("candle's"));
                assert!(
                    d < tol * 10.0,
                    "{what} gradient of {n}×{inputs}×{outputs} differs by {d}"
                );
            }
        }
    }

    #[test]
    fn weights_get_no_gradient_inside_input_gradients_only() {
        let dev = Device::Cpu;
        let mut rng = Rng::new(2);
        let x = Var::from_tensor(&rng.normal_tensor((4, 3), 0.0, 1.0, &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&rng.normal_tensor((3, 2), 0.0, 1.0, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&rng.normal_tensor(2, 0.0, 1.0, &dev).unwrap()).unwrap();
        let y = affine(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap();
        let grads = super::super::input_gradients_only(|| y.sum_all().unwrap().backward()).unwrap();
        assert!(grads.get(&x).is_some());
        assert!(grads.get(&w).is_none() && grads.get(&b).is_none());
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let mut rng = Rng::new(8);
        let (n, inputs, outputs) = (37, 300, 700);
        let x = rng
            .normal_tensor((n, inputs), 0.0, 1.0, &Device::Cpu)
            .unwrap();
        let w = rng
            .normal_tensor((inputs, outputs), 0.0, 1.0, &Device::Cpu)
            .unwrap();
        let b = rng.normal_tensor(outputs, 0.0, 1.0, &Device::Cpu).unwrap();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            pool.install(|| {
                affine(&x, &w, &b)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
            })
            .unwrap()
        };
        assert_eq!(run(1), run(3));
    }
}
