//! EBGAN's energy and the pull-away term with their gradients, computed as
//! [`crate::ebgan::energy()`] and [`crate::ebgan::pull_away()`] compute them.

use rayon::prelude::*;

use super::matmul::{gemm, MatMut, MatRef};
use super::simd::with_avx2;
use crate::config::PtVariant;

/// Below this norm a code row counts as zero (as in `ebgan::pull_away`).
const MIN_NORM: f32 = 1e-12;

/// Values per parallel task of the energy: a constant, so the partial sums
/// and their order never depend on the thread count.
const CHUNK: usize = 1 << 13;

/// `mean((r − x)²)` over all values (accumulated in f64, eight running sums
/// per fixed chunk so the additions need not wait on one another).
pub fn energy(r: &[f32], x: &[f32]) -> f32 {
    assert_eq!(r.len(), x.len());
    let partial: Vec<f64> = r
        .par_chunks(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .map(|(r, x)| with_avx2(|| squared_distance(r, x)))
        .collect();
    (partial.iter().sum::<f64>() / r.len() as f64) as f32
}

/// `Σ (r − x)²` in f64 over eight lanes.
#[inline(always)]
fn squared_distance(r: &[f32], x: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let (rc, xc) = (r.chunks_exact(8), x.chunks_exact(8));
    let tail = rc.remainder().iter().zip(xc.remainder());
    for (a, b) in rc.zip(xc) {
        for l in 0..8 {
            let d = f64::from(a[l] - b[l]);
            lanes[l] += d * d;
        }
    }
    for (l, (a, b)) in tail.enumerate() {
        let d = f64::from(*a - *b);
        lanes[l] += d * d;
    }
    lanes.iter().sum()
}

/// Writes `scale · 2(r − x)/len` — `scale` times the energy's gradient with
/// respect to `r` — into `out`, or adds it to `out` when `add`.
pub fn energy_grad(r: &[f32], x: &[f32], scale: f32, out: &mut [f32], add: bool) {
    assert!(r.len() == x.len() && out.len() == r.len());
    let k = (2.0 / r.len() as f64) as f32 * scale;
    out.par_chunks_mut(CHUNK)
        .zip(r.par_chunks(CHUNK).zip(x.par_chunks(CHUNK)))
        .for_each(|(out, (r, x))| {
            with_avx2(|| {
                for ((o, a), b) in out.iter_mut().zip(r).zip(x) {
                    let g = (*a - *b) * k;
                    *o = if add { *o + g } else { g };
                }
            })
        });
}

/// Scratch space for [`pull_away`].
#[derive(Debug, Default)]
pub struct PullAwayScratch {
    unit: Vec<f32>,
    norms: Vec<f32>,
    cos: Vec<f32>,
    dunit: Vec<f32>,
}

/// The pull-away term of the `n` codes in `s` (`[n × k]`), and
/// `weight · ∂PT/∂s` written into `grad`.
pub fn pull_away(
    s: &[f32],
    n: usize,
    k: usize,
    variant: PtVariant,
    weight: f32,
    grad: &mut [f32],
    scratch: &mut PullAwayScratch,
) -> f32 {
    let PullAwayScratch {
        unit,
        norms,
        cos,
        dunit,
    } = scratch;
    unit.resize(n * k, 0.0);
    norms.resize(n, 0.0);
    cos.resize(n * n, 0.0);
    dunit.resize(n * k, 0.0);
    for i in 0..n {
        let row = &s[i * k..(i + 1) * k];
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(MIN_NORM);
        norms[i] = norm;
        for (u, v) in unit[i * k..(i + 1) * k].iter_mut().zip(row) {
            *u = *v / norm;
        }
    }
    let u = MatRef::new(unit, n, k);
    gemm(&mut MatMut::new(cos, n, n), u, u.t(), false);
    let nf = n as f64;
    let (pairs, squared, diagonal) = match variant {
        PtVariant::Paper => (nf * (nf - 1.0), true, false),
        PtVariant::Blog => (nf * nf, true, true),
        PtVariant::Unsquared => (nf * (nf - 1.0), false, false),
    };
    grad[..n * k].fill(0.0);
    if n < 2 && !diagonal {
        return 0.0;
    }
    let mut total = 0f64;
    // cos becomes ∂PT/∂cos (symmetric) as the sum is taken.
    for i in 0..n {
        for j in 0..n {
            let c = &mut cos[i * n + j];
            if i == j && !diagonal {
                *c = 0.0;
                continue;
            }
            if squared {
                total += f64::from(*c * *c);
                *c *= (2.0 / pairs) as f32;
            } else {
                total += f64::from(*c);
                *c = (1.0 / pairs) as f32;
            }
        }
    }
    // ∂PT/∂unit = (G + Gᵀ)·unit = 2·G·unit for the symmetric G.
    let g = MatRef::new(cos, n, n);
    gemm(&mut MatMut::new(dunit, n, k), g, u, false);
    for i in 0..n {
        let (ur, dr) = (&unit[i * k..(i + 1) * k], &dunit[i * k..(i + 1) * k]);
        let out = &mut grad[i * k..(i + 1) * k];
        let norm = norms[i];
        let scale = 2.0 * weight / norm;
        if s[i * k..(i + 1) * k]
            .iter()
            .map(|v| v * v)
            .sum::<f32>()
            .sqrt()
            > MIN_NORM
        {
            let dot: f32 = ur.iter().zip(dr).map(|(a, b)| a * b).sum();
            for j in 0..k {
                out[j] = (dr[j] - ur[j] * dot) * scale;
            }
        } else {
            for j in 0..k {
                out[j] = dr[j] * scale;
            }
        }
    }
    (total / pairs) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Result;
    use candle_core::{Device, Var};
    use kusari_trainer::Rng;

    use crate::ebgan::{energy as candle_energy, pull_away as candle_pull_away};
    use crate::fast::testing::assert_close;

    #[test]
    fn energy_and_gradient_match_candle() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = Rng::new(2);
        let r = Var::from_tensor(&rng.normal_tensor((10, 64), 0.0, 1.0, &dev)?)?;
        let x = rng.normal_tensor((10, 64), 0.5, 1.0, &dev)?;
        let e = candle_energy(r.as_tensor(), &x)?;
        let want_g: Vec<f32> = e.backward()?.get(&r).unwrap().flatten_all()?.to_vec1()?;
        let (rs, xs): (Vec<f32>, Vec<f32>) =
            (r.flatten_all()?.to_vec1()?, x.flatten_all()?.to_vec1()?);
        assert_close(
            &[energy(&rs, &xs)],
            &[e.to_scalar::<f32>()?],
            1e-5,
            "energy",
        );
        let mut g = vec![0f32; rs.len()];
        energy_grad(&rs, &xs, 1.0, &mut g, false);
        assert_close(&g, &want_g, 1e-5, "energy gradient");
        Ok(())
    }

    #[test]
    fn pull_away_and_gradient_match_candle() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = Rng::new(3);
        let (n, k) = (12, 40);
        for variant in [PtVariant::Paper, PtVariant::Blog, PtVariant::Unsquared] {
            let values: Vec<f32> = rng
                .normal_tensor((n, k), 0.1, 1.0, &dev)?
                .flatten_all()?
                .to_vec1()?;
            let s = Var::from_vec(values.clone(), (n, k), &dev)?;
            let pt = candle_pull_away(s.as_tensor(), variant)?;
            let want_g: Vec<f32> = (&pt * 0.1)?
                .backward()?
                .get(&s)
                .unwrap()
                .flatten_all()?
                .to_vec1()?;
            let mut g = vec![0f32; n * k];
            let got = pull_away(
                &values,
                n,
                k,
                variant,
                0.1,
                &mut g,
                &mut PullAwayScratch::default(),
            );
            assert_close(
                &[got],
                &[pt.to_scalar::<f32>()?],
                1e-5,
                &format!("{variant:?} value"),
            );
            assert_close(&g, &want_g, 1e-5, &format!("{variant:?} gradient"));
        }
        Ok(())
    }
}
