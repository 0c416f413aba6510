//! Training-mode batch normalization per channel of `[N, C, …]` f32 CPU
//! tensors as fused custom ops: the statistics (a mean pass and a variance
//! pass over each channel), the output in one pass, and the gradient in two.
//!
//! On candle's ops the same layer is a channel-major copy, a dozen
//! elementwise passes forward and twice that backward, each a separate
//! allocation; in a conv EBGAN step that was a large share of the time
//! outside the convolutions. Here, per channel with `m` values, mean `μ`,
//! biased variance `σ²` and `r = 1/√(σ² + ε)`:
//!
//! - forward: `y = γ·(x − μ)·r + β`;
//! - backward: `∂β = Σ dy`, `∂γ = Σ dy·x̂`, `∂x = γ·r/m · (m·dy − ∂β − x̂·∂γ)`,
//!   with `x̂ = (x − μ)·r`, the statistics' own gradients included.
//!
//! Every sum runs over one channel in a fixed order (in f64), so results do
//! not depend on the number of threads.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Per-channel mean and biased variance, `[2, C]` (no gradient).
struct ChannelStats;

/// `y = γ·(x − μ)·r + β` on `(x, [γ; β; μ; σ²])`, `(μ, σ²)` from a
/// [`ChannelStats`] of `x`; differentiable in `x`, γ and β.
struct NormalizeTrain {
    eps: f64,
}

/// The gradient of [`NormalizeTrain`]: `[∂x (flattened); ∂γ; ∂β; 0; 0]`.
struct NormalizeTrainGrad {
    eps: f64,
}

/// `(N, C, values per channel per sample)` of a `[N, C, …]` layout.
fn blocks(layout: &Layout) -> candle_core::Result<(usize, usize, usize)> {
    let dims = layout.dims();
    if dims.len() < 2 {
        candle_core::bail!("batch normalization needs [N, C, …], got {dims:?}");
    }
    Ok((dims[0], dims[1], dims[2..].iter().product()))
}

fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    super::storage::operand(storage, layout, "batch normalization")
}

/// The values of channel `c` of every sample, in order.
fn channel_values(
    x: &[f32],
    (n, c_count, plane): (usize, usize, usize),
    c: usize,
) -> impl Iterator<Item = &[f32]> {
    (0..n).map(move |i| {
        let start = (i * c_count + c) * plane;
        &x[start..start + plane]
    })
}

/// Independent running sums of the f64 reductions: additions that need
/// not wait on one another (one sum alone waits four cycles per value).
const LANES: usize = 8;

/// `Σ f(a)` over `values` in f64, in [`LANES`] running sums (a fixed
/// order for a given length).
#[inline(always)]
fn lane_sum(values: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0f64; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for l in 0..LANES {
            acc[l] += f(f64::from(chunk[l]));
        }
    }
    for (l, &a) in tail.iter().enumerate() {
        acc[l] += f(f64::from(a));
    }
    acc.iter().sum()
}

/// `(Σ d, Σ d·(x − mean))` over a channel's values in f64, in [`LANES`]
/// running sums.
#[inline(always)]
fn lane_grad_sums(d: &[f32], x: &[f32], mean: f64) -> (f64, f64) {
    let (mut a, mut b) = ([0f64; LANES], [0f64; LANES]);
    let (dc, xc) = (d.chunks_exact(LANES), x.chunks_exact(LANES));
    let tail = dc.remainder().iter().zip(xc.remainder());
    for (d, x) in dc.zip(xc) {
        for l in 0..LANES {
            let dv = f64::from(d[l]);
            a[l] += dv;
            b[l] += dv * (f64::from(x[l]) - mean);
        }
    }
    for (l, (&d, &x)) in tail.enumerate() {
        a[l] += f64::from(d);
        b[l] += f64::from(d) * (f64::from(x) - mean);
    }
    (a.iter().sum(), b.iter().sum())
}

/// Per-channel `(mean, biased variance)`.
fn stats(x: &[f32], shape: (usize, usize, usize)) -> Vec<(f64, f64)> {
    let (n, c_count, plane) = shape;
    let m = (n * plane).max(1) as f64;
    (0..c_count)
        .into_par_iter()
        .map(|c| {
            super::simd::with_avx2(|| {
                let sum: f64 = channel_values(x, shape, c)
                    .map(|v| lane_sum(v, |a| a))
                    .sum();
                let mean = sum / m;
                let sq: f64 = channel_values(x, shape, c)
                    .map(|v| lane_sum(v, |a| (a - mean) * (a - mean)))
                    .sum();
                (mean, sq / m)
            })
        })
        .collect()
}

/// Writes `(a − mean[c])·scale[c] + shift[c]` (per channel of `a`) into `out`.
fn per_channel_affine(
    a: &[f32],
    out: &mut [f32],
    (_, c_count, plane): (usize, usize, usize),
    mean: &[f32],
    scale: &[f32],
    shift: &[f32],
) {
    if c_count * plane == 0 {
        return;
    }
    out.par_chunks_mut(c_count * plane)
        .zip(a.par_chunks(c_count * plane))
        .for_each(|(o, a)| {
            for (c, (o, a)) in o.chunks_mut(plane).zip(a.chunks(plane)).enumerate() {
                let (m, s, t) = (mean[c], scale[c], shift[c]);
                o.iter_mut().zip(a).for_each(|(o, &a)| *o = (a - m) * s + t);
            }
        });
}

impl CustomOp1 for ChannelStats {
    fn name(&self) -> &'static str {
        "kusari-channel-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let shape = blocks(l)?;
        let st = stats(f32_slice(s, l)?, shape);
        let mut out: Vec<f32> = st.iter().map(|&(mean, _)| mean as f32).collect();
        out.extend(st.iter().map(|&(_, var)| var as f32));
        Ok((CpuStorage::F32(out), Shape::from((2, shape.1))))
    }
}

impl CustomOp2 for NormalizeTrain {
    fn name(&self) -> &'static str {
        "kusari-batch-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let shape = blocks(xl)?;
        let (x, packed) = (f32_slice(xs, xl)?, f32_slice(ps, pl)?);
        let p = Packed::of(packed, shape.1)?;
        let scale: Vec<f32> = (0..shape.1)
            .map(|c| (p.gamma[c] as f64 * p.inv_std(c, self.eps)) as f32)
            .collect();
        let mut y = vec![0f32; x.len()];
        per_channel_affine(x, &mut y, shape, p.mean, &scale, p.beta);
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        packed: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let out = super::gradient_op3(&grad, x, packed, NormalizeTrainGrad { eps: self.eps })?;
        let n = x.elem_count();
        let grad_x = out.narrow(0, 0, n)?.reshape(x.shape())?;
        let grad_packed = out.narrow(0, n, packed.elem_count())?;
        Ok((Some(grad_x), Some(grad_packed)))
    }
}

/// `[γ; β; μ; σ²]`, each `C` values.
struct Packed<'a> {
    gamma: &'a [f32],
    beta: &'a [f32],
    mean: &'a [f32],
    var: &'a [f32],
}

impl<'a> Packed<'a> {
    fn of(packed: &'a [f32], channels: usize) -> candle_core::Result<Self> {
        if packed.len() != 4 * channels {
            candle_core::bail!(
                "batch normalization of {channels} channels got {} packed values, not {}",
                packed.len(),
                4 * channels
            );
        }
        let (gamma, rest) = packed.split_at(channels);
        let (beta, rest) = rest.split_at(channels);
        let (mean, var) = rest.split_at(channels);
        Ok(Self {
            gamma,
            beta,
            mean,
            var,
        })
    }

    fn inv_std(&self, c: usize, eps: f64) -> f64 {
        1.0 / (self.var[c] as f64 + eps).sqrt()
    }
}

impl CustomOp3 for NormalizeTrainGrad {
    fn name(&self) -> &'static str {
        "kusari-batch-norm-grad"
    }

    refuse_second_order!(3);

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        xs: &CpuStorage,
        xl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let shape = blocks(xl)?;
        let (n, c_count, plane) = shape;
        let (dy, x) = (f32_slice(gs, gl)?, f32_slice(xs, xl)?);
        if dy.len() != x.len() {
            candle_core::bail!("batch normalization gradient: mismatched operands");
        }
        let p = Packed::of(f32_slice(ps, pl)?, c_count)?;
        let m = (n * plane).max(1) as f64;
        // Per channel: (Σ dy, Σ dy·x̂).
        let sums: Vec<(f64, f64)> = (0..c_count)
            .into_par_iter()
            .map(|c| {
                let (mean, r) = (p.mean[c] as f64, p.inv_std(c, self.eps));
                let (sd, sdx) = super::simd::with_avx2(|| {
                    channel_values(dy, shape, c)
                        .zip(channel_values(x, shape, c))
                        .fold((0.0, 0.0), |(sd, sdx), (d, x)| {
                            let (a, b) = lane_grad_sums(d, x, mean);
                            (sd + a, sdx + b)
                        })
                });
                (sd, sdx * r)
            })
            .collect();
        // ∂x = k·dy + a·(x − μ) + b per channel, with k = γr,
        // a = −γr²·Σdy·x̂/m, b = −γr·Σdy/m.
        let mut coeff = vec![(0f32, 0f32, 0f32, 0f32); c_count];
        for c in 0..c_count {
            let (mean, r) = (p.mean[c] as f64, p.inv_std(c, self.eps));
            let k = p.gamma[c] as f64 * r;
            let a = -k * r * sums[c].1 / m;
            let b = -k * sums[c].0 / m;
            coeff[c] = (k as f32, a as f32, b as f32, mean as f32);
        }
        // ∂μ and ∂σ² stay zero: the statistics' contribution is inside ∂x.
        let mut out = vec![0f32; x.len() + 4 * c_count];
        let (dx, dparams) = out.split_at_mut(x.len());
        if c_count * plane > 0 {
            dx.par_chunks_mut(c_count * plane)
                .zip(
                    dy.par_chunks(c_count * plane)
                        .zip(x.par_chunks(c_count * plane)),
                )
                .for_each(|(o, (d, x))| {
                    for (c, ((o, d), x)) in o
                        .chunks_mut(plane)
                        .zip(d.chunks(plane))
                        .zip(x.chunks(plane))
                        .enumerate()
                    {
                        let (k, a, b, mean) = coeff[c];
                        for ((o, &d), &x) in o.iter_mut().zip(d).zip(x) {
                            *o = k * d + a * (x - mean) + b;
                        }
                    }
                });
        }
        for c in 0..c_count {
            dparams[c] = sums[c].1 as f32;
            dparams[c_count + c] = sums[c].0 as f32;
        }
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

/// Per-channel mean and biased variance of `x [N, C, …]`, each `[C]`.
pub fn channel_stats(x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let st = x.contiguous()?.apply_op1_no_bwd(&ChannelStats)?;
    Ok((st.get(0)?, st.get(1)?))
}

/// Training-mode batch normalization of `x [N, C, …]` with its own batch
/// statistics `(mean, var)` (as [`channel_stats`] gives them): differentiable
/// in `x`, `gamma` and `beta`, gradients through the statistics included.
pub fn normalize_train(
    x: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> candle_core::Result<Tensor> {
    let packed = Tensor::cat(&[gamma, beta, &mean.detach(), &var.detach()], 0)?;
    x.contiguous()?.apply_op2(&packed, NormalizeTrain { eps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};
    use kusari_trainer::Rng;

    const EPS: f64 = 2e-5;

    /// The same normalization on candle's ops (statistics over every axis but 1).
    fn on_candle_ops(x: &Tensor, gamma: &Tensor, beta: &Tensor) -> candle_core::Result<Tensor> {
        let c = x.dim(1)?;
        let mut shape = vec![1; x.rank()];
        shape[1] = c;
        let rows = x.transpose(0, 1)?.contiguous()?.reshape((c, ()))?;
        let mean = rows.mean_keepdim(D::Minus1)?;
        let var = rows.broadcast_sub(&mean)?.sqr()?.mean_keepdim(D::Minus1)?;
        let (mean, var) = (mean.reshape(shape.clone())?, var.reshape(shape.clone())?);
        x.broadcast_sub(&mean)?
            .broadcast_div(&(var + EPS)?.sqrt()?)?
            .broadcast_mul(&gamma.reshape(shape.clone())?)?
            .broadcast_add(&beta.reshape(shape)?)
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    fn check(shape: &[usize]) -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let mut rng = Rng::new(11);
        let c = shape[1];
        let normal = |rng: &mut Rng, s: &[usize], mean: f32, std: f32| {
            rng.normal_tensor(s, mean, std, &dev).unwrap()
        };
        // An offset and a scale per element, so the statistics are not trivial.
        let x = Var::from_tensor(&normal(&mut rng, shape, 0.7, 2.0))?;
        let gamma = Var::from_tensor(&normal(&mut rng, &[c], 1.0, 0.3))?;
        let beta = Var::from_tensor(&normal(&mut rng, &[c], 0.0, 0.3))?;
        let r = normal(&mut rng, shape, 0.0, 1.0);

        let expected = on_candle_ops(x.as_tensor(), gamma.as_tensor(), beta.as_tensor())?;
        let (mean, var) = channel_stats(x.as_tensor())?;
        let fused = normalize_train(
            x.as_tensor(),
            &mean,
            &var,
            gamma.as_tensor(),
            beta.as_tensor(),
            EPS,
        )?;
        assert!(
            max_abs_diff(&fused, &expected) < 1e-5,
            "forward of {shape:?}"
        );

        let want = (&expected * &r)?.sum_all()?.backward()?;
        let got = (&fused * &r)?.sum_all()?.backward()?;
        for (name, v) in [("x", &x), ("gamma", &gamma), ("beta", &beta)] {
            let (w, g) = (want.get(v).unwrap(), got.get(v).unwrap());
            let scale = w.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            let diff = max_abs_diff(w, g);
            assert!(
                diff <= 1e-4 * scale.max(1.0),
                "∂{name} of {shape:?}: off by {diff} (largest {scale})"
            );
        }
        Ok(())
    }

    #[test]
    fn matches_candle_ops_values_and_gradients_on_maps_and_rows() -> candle_core::Result<()> {
        check(&[6, 3, 5, 5])?;
        check(&[4, 8, 7, 7])?;
        check(&[9, 5])
    }

    #[test]
    fn stats_are_each_channels_mean_and_biased_variance() -> candle_core::Result<()> {
        // Channel 0 holds 1, 2, 3, 4 over two samples; channel 1 holds 10 everywhere.
        let x = Tensor::new(
            &[[[1f32, 2.], [10., 10.]], [[3., 4.], [10., 10.]]],
            &Device::Cpu,
        )?;
        let (mean, var) = channel_stats(&x)?;
        assert_eq!(mean.to_vec1::<f32>()?, [2.5, 10.0]);
        assert_eq!(var.to_vec1::<f32>()?, [1.25, 0.0]);
        Ok(())
    }

    #[test]
    fn wrong_operands_are_errors() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3, 2, 2), candle_core::DType::F32, &dev).unwrap();
        let (mean, var) = channel_stats(&x).unwrap();
        let short = Tensor::ones(2, candle_core::DType::F32, &dev).unwrap();
        let err = normalize_train(&x, &mean, &var, &short, &short, EPS).unwrap_err();
        assert!(err.to_string().contains("3 channels"), "{err}");
        let vector = Tensor::zeros(4, candle_core::DType::F32, &dev).unwrap();
        assert!(channel_stats(&vector)
            .unwrap_err()
            .to_string()
            .contains("[N, C"));
    }
}
