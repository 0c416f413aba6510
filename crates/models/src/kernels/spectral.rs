//! One power iteration of spectral normalization (Miyato et al. 2018) on a
//! Linear weight `W` stored `[in × out]`: the estimates `v` (`[in]`) and
//! `u` (`[out]`) of its top singular vectors move one step, and
//! `σ = vᵀ W u` estimates its largest singular value.

use rayon::prelude::*;

use super::columns::par_columns;

/// Below this norm a vector counts as zero (as `F.normalize`'s epsilon).
pub const MIN_NORM: f64 = 1e-12;

/// Rows of W per task of `W u`: fixed, so sums keep their order.
const ROWS: usize = 64;

/// `v ← normalize(W u)`, `u ← normalize(Wᵀ v)`, and returns `σ = uᵀ (Wᵀ v)`
/// (with the new `v`, before `u` is normalized): the same steps as the
/// candle-ops layer takes.
pub fn power_iteration(
    w: &[f32],
    inputs: usize,
    outputs: usize,
    u: &mut [f32],
    v: &mut [f32],
) -> f32 {
    assert!(w.len() == inputs * outputs && u.len() == outputs && v.len() == inputs);
    let u_now: &[f32] = u;
    v.par_chunks_mut(ROWS).enumerate().for_each(|(t, chunk)| {
        for (k, out) in chunk.iter_mut().enumerate() {
            let i = t * ROWS + k;
            let row = &w[i * outputs..(i + 1) * outputs];
            *out = row.iter().zip(u_now).map(|(a, b)| a * b).sum();
        }
    });
    normalize(v);
    let mut wt_v = vec![0f32; outputs];
    {
        let shared = super::columns::SharedMut::new(&mut wt_v, outputs);
        let v: &[f32] = v;
        par_columns(outputs, |c| {
            // SAFETY: each task writes only its own columns.
            let acc = unsafe { shared.segment(0, &c) };
            for (i, &vi) in v.iter().enumerate() {
                let row = &w[i * outputs + c.start..i * outputs + c.end];
                for (a, &x) in acc.iter_mut().zip(row) {
                    *a += vi * x;
                }
            }
        });
    }
    u.copy_from_slice(&wt_v);
    normalize(u);
    u.iter().zip(&wt_v).map(|(a, b)| a * b).sum()
}

/// Divides `x` by its norm (at least [`MIN_NORM`]).
pub fn normalize(x: &mut [f32]) {
    let norm = x
        .iter()
        .map(|&a| f64::from(a) * f64::from(a))
        .sum::<f64>()
        .sqrt();
    let inv = (1.0 / norm.max(MIN_NORM)) as f32;
    x.iter_mut().for_each(|a| *a *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterations_converge_to_the_largest_singular_value() {
        // W = P·diag(5, 2, 1)·Q with permutations and signs: singular values 5, 2, 1.
        let (inputs, outputs) = (3, 4);
        let mut w = vec![0f32; inputs * outputs];
        w[3] = 5.0; // row 0, column 3
        w[outputs] = -2.0; // row 1, column 0
        w[2 * outputs + 2] = 1.0; // row 2, column 2
        let mut u = vec![0.5f32; outputs];
        let mut v = vec![0.0f32; inputs];
        let mut sigma = 0.0;
        for _ in 0..30 {
            sigma = power_iteration(&w, inputs, outputs, &mut u, &mut v);
        }
        assert!((sigma - 5.0).abs() < 1e-4, "σ = {sigma}");
        assert!((u[3].abs() - 1.0).abs() < 1e-4 && (v[0].abs() - 1.0).abs() < 1e-4);
        // A zero weight gives σ 0 and no NaN.
        let mut u = vec![1.0f32; outputs];
        let sigma = power_iteration(
            &vec![0.0; inputs * outputs],
            inputs,
            outputs,
            &mut u,
            &mut v,
        );
        assert_eq!(sigma, 0.0);
        assert!(u.iter().chain(&v).all(|x| x.is_finite()));
    }
}
