//! Eigendecomposition of symmetric matrices by the cyclic Jacobi method, in
//! `f64` and pure Rust, for the exact matrix square roots FID needs.
//!
//! Jacobi is slower than the QR algorithm LAPACK uses, but for the 128×128
//! covariance matrices here it takes well under a second, it needs no system
//! library, and it computes small eigenvalues of positive semi-definite
//! matrices to high relative accuracy.

use anyhow::{bail, Result};

/// Eigenvalues and orthonormal eigenvectors of a symmetric matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct SymmetricEigen {
    /// Matrix order.
    pub n: usize,
    /// Eigenvalues, in no particular order.
    pub values: Vec<f64>,
    /// Row-major `n×n`; column `k` is the unit eigenvector of `values[k]`.
    pub vectors: Vec<f64>,
}

/// Sweeps after which Jacobi is declared not to converge; it normally needs fewer than 15.
const MAX_SWEEPS: usize = 100;

/// Decomposes the symmetric `n×n` row-major matrix `a` as `V diag(λ) Vᵀ`.
///
/// Only the upper triangle is read, so a matrix that is symmetric up to
/// round-off is treated as exactly symmetric.
pub fn symmetric_eigen(a: &[f64], n: usize) -> Result<SymmetricEigen> {
    if a.len() != n * n {
        bail!("a {n}×{n} matrix needs {} entries, got {}", n * n, a.len());
    }
    if a.iter().any(|x| !x.is_finite()) {
        bail!("the matrix to decompose contains NaN or infinite entries");
    }
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        for j in i..n {
            m[i * n + j] = a[i * n + j];
            m[j * n + i] = a[i * n + j];
        }
    }
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    // Entries below this perturb no eigenvalue by more than ε² of the
    // matrix's norm (Weyl); skipping them guarantees termination even where
    // the relative criterion below would ask for more than f64 can give.
    let norm = m.iter().map(|x| x * x).sum::<f64>().sqrt();
    let negligible = f64::EPSILON * f64::EPSILON * norm;

    for _ in 0..MAX_SWEEPS {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                let (app, aqq) = (m[p * n + p], m[q * n + q]);
                // Rotating away an entry this small cannot change any
                // eigenvalue beyond round-off, relative to the diagonal it
                // couples (Demmel & Veselić's criterion).
                if apq.abs() <= f64::EPSILON * (app * aqq).abs().sqrt() || apq.abs() <= negligible {
                    m[p * n + q] = 0.0;
                    m[q * n + p] = 0.0;
                    continue;
                }
                rotated = true;
                rotate(&mut m, &mut v, n, p, q);
            }
        }
        if !rotated {
            let values = (0..n).map(|i| m[i * n + i]).collect();
            return Ok(SymmetricEigen {
                n,
                values,
                vectors: v,
            });
        }
    }
    bail!("the Jacobi eigendecomposition did not converge in {MAX_SWEEPS} sweeps")
}

/// One Jacobi rotation in the `(p, q)` plane that zeroes `m[p][q]`.
fn rotate(m: &mut [f64], v: &mut [f64], n: usize, p: usize, q: usize) {
    let apq = m[p * n + q];
    let theta = (m[q * n + q] - m[p * n + p]) / (2.0 * apq);
    // The smaller root of t² + 2θt − 1 = 0, written to avoid cancellation;
    // for huge θ, θ² overflows and t correctly becomes 1/(2θ) ≈ 0.
    let t = if theta.abs() > 1e150 {
        0.5 / theta
    } else {
        theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt())
    };
    let c = 1.0 / (t * t + 1.0).sqrt();
    let s = t * c;
    m[p * n + p] -= t * apq;
    m[q * n + q] += t * apq;
    m[p * n + q] = 0.0;
    m[q * n + p] = 0.0;
    for k in 0..n {
        if k == p || k == q {
            continue;
        }
        let akp = m[k * n + p];
        let akq = m[k * n + q];
        let new_p = c * akp - s * akq;
        let new_q = s * akp + c * akq;
        m[k * n + p] = new_p;
        m[p * n + k] = new_p;
        m[k * n + q] = new_q;
        m[q * n + k] = new_q;
    }
    for k in 0..n {
        let vkp = v[k * n + p];
        let vkq = v[k * n + q];
        v[k * n + p] = c * vkp - s * vkq;
        v[k * n + q] = s * vkp + c * vkq;
    }
}

impl SymmetricEigen {
    /// `V diag(f(λ)) Vᵀ`: the matrix function `f` applied to the decomposed matrix.
    pub fn map(&self, f: impl Fn(f64) -> f64) -> Vec<f64> {
        let n = self.n;
        let fl: Vec<f64> = self.values.iter().map(|&l| f(l)).collect();
        let mut out = vec![0.0; n * n];
        for i in 0..n {
            for j in i..n {
                let row_i = &self.vectors[i * n..(i + 1) * n];
                let row_j = &self.vectors[j * n..(j + 1) * n];
                let sum: f64 = row_i
                    .iter()
                    .zip(&fl)
                    .zip(row_j)
                    .map(|((a, f), b)| a * f * b)
                    .sum();
                out[i * n + j] = sum;
                out[j * n + i] = sum;
            }
        }
        out
    }
}

/// The product of two row-major `n×n` matrices.
pub(crate) fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        let row = &mut out[i * n..(i + 1) * n];
        for k in 0..n {
            let aik = a[i * n + k];
            if aik == 0.0 {
                continue;
            }
            for (o, &bkj) in row.iter_mut().zip(&b[k * n..(k + 1) * n]) {
                *o += aik * bkj;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kusari_trainer::Rng;

    fn random_spd(n: usize, rng: &mut Rng) -> Vec<f64> {
        let b: Vec<f64> = (0..n * n).map(|_| rng.next_f64() * 2.0 - 1.0).collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|k| b[k * n + i] * b[k * n + j]).sum::<f64>();
            }
            a[i * n + i] += 1e-3;
        }
        a
    }

    #[test]
    fn reconstructs_a_random_spd_matrix() -> Result<()> {
        let n = 40;
        let mut rng = Rng::new(5);
        let a = random_spd(n, &mut rng);
        let eig = symmetric_eigen(&a, n)?;
        let rebuilt = eig.map(|l| l);
        let scale = a.iter().map(|x| x.abs()).fold(0.0, f64::max);
        let err = a
            .iter()
            .zip(&rebuilt)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(
            err < 1e-12 * scale,
            "reconstruction error {err} at scale {scale}"
        );
        assert!(
            eig.values.iter().all(|&l| l > 0.0),
            "an SPD matrix has positive eigenvalues"
        );

        // Vᵀ V = I.
        let v = &eig.vectors;
        for i in 0..n {
            for j in 0..n {
                let dot: f64 = (0..n).map(|k| v[k * n + i] * v[k * n + j]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-12, "VᵀV[{i}][{j}] = {dot}");
            }
        }

        // The square root squares back to the matrix.
        let root = eig.map(f64::sqrt);
        let squared = matmul(&root, &root, n);
        let err = a
            .iter()
            .zip(&squared)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-11 * scale, "sqrt² error {err}");
        Ok(())
    }

    #[test]
    fn known_eigenvalues_and_degenerate_inputs() -> Result<()> {
        // [[2, 1], [1, 2]] has eigenvalues 1 and 3.
        let eig = symmetric_eigen(&[2.0, 1.0, 1.0, 2.0], 2)?;
        let mut values = eig.values.clone();
        values.sort_by(f64::total_cmp);
        assert!(
            (values[0] - 1.0).abs() < 1e-15 && (values[1] - 3.0).abs() < 1e-15,
            "{values:?}"
        );
        // Singular and diagonal matrices, and the empty one.
        let eig = symmetric_eigen(&[0.0; 9], 3)?;
        assert_eq!(eig.values, vec![0.0; 3]);
        let eig = symmetric_eigen(&[], 0)?;
        assert!(eig.values.is_empty());
        assert!(symmetric_eigen(&[1.0, f64::NAN, f64::NAN, 1.0], 2).is_err());
        assert!(symmetric_eigen(&[1.0; 3], 2).is_err());
        Ok(())
    }
}
