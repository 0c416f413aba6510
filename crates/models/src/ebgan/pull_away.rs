//! The pull-away term (PT): how alike the codes of a fake batch are, as mean
//! (squared) cosine similarity. G adds `pt_weight · PT` to its loss so that
//! its samples spread out instead of collapsing onto one mode.

use anyhow::Result;
use candle_core::Tensor;

use crate::config::PtVariant;

/// Below this norm a code row counts as zero (its cosines are 0, not NaN).
const MIN_NORM: f64 = 1e-12;

/// PT of the codes `s` (`[N, ...]`, flattened to `[N, K]` rows):
///
/// - [`PtVariant::Paper`]: `1/(N(N−1)) Σ_{i≠j} cos²(S_i, S_j)`
/// - [`PtVariant::Blog`]: `1/N² Σ_{i,j} cos²(S_i, S_j)` (diagonal kept)
/// - [`PtVariant::Unsquared`]: `1/(N(N−1)) Σ_{i≠j} cos(S_i, S_j)`
///
/// With fewer than two rows there are no pairs and the paper and unsquared
/// variants are 0.
pub fn pull_away(s: &Tensor, variant: PtVariant) -> Result<Tensor> {
    let s = s.flatten_from(1)?;
    let n = s.dim(0)?;
    let norms = s.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(MIN_NORM)?;
    let unit = s.broadcast_div(&norms)?;
    let cos = unit.matmul(&unit.t()?)?;
    let nf = n as f64;
    Ok(match variant {
        PtVariant::Blog => (cos.sqr()?.sum_all()? / (nf * nf))?,
        PtVariant::Paper | PtVariant::Unsquared if n < 2 => {
            Tensor::zeros((), s.dtype(), s.device())?
        }
        PtVariant::Paper => {
            (cos.sqr()?.mul(&off_diagonal(n, &s)?)?.sum_all()? / (nf * (nf - 1.0)))?
        }
        PtVariant::Unsquared => (cos.mul(&off_diagonal(n, &s)?)?.sum_all()? / (nf * (nf - 1.0)))?,
    })
}

/// An `[n, n]` mask with 0 on the diagonal and 1 elsewhere.
fn off_diagonal(n: usize, like: &Tensor) -> Result<Tensor> {
    let mask: Vec<f32> = (0..n * n)
        .map(|k| if k / n == k % n { 0.0 } else { 1.0 })
        .collect();
    Ok(Tensor::from_vec(mask, (n, n), like.device())?.to_dtype(like.dtype())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn pt(rows: &[[f32; 4]], variant: PtVariant) -> Result<f64> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let s = Tensor::from_vec(flat, (rows.len(), 4), &Device::Cpu)?;
        Ok(pull_away(&s, variant)?.to_scalar::<f32>()? as f64)
    }

    #[test]
    fn three_variants_on_a_hand_made_batch() -> Result<()> {
        // Rows a, b, c with cos(a,b) = 1/√2, cos(a,c) = −1/√2, cos(b,c) = −1/2
        // (b is scaled by 3 and c by 2: cosines ignore length).
        let s = [
            [1.0, 0.0, 0.0, 0.0],
            [3.0, 3.0, 0.0, 0.0],
            [-2.0, 0.0, 2.0, 0.0],
        ];
        // Σ_{i≠j} cos² = 2 (1/2 + 1/2 + 1/4) = 5/2 over N(N−1) = 6 pairs.
        assert!((pt(&s, PtVariant::Paper)? - 5.0 / 12.0).abs() < 1e-6);
        // Diagonal adds 3 ones; N² = 9.
        assert!((pt(&s, PtVariant::Blog)? - 11.0 / 18.0).abs() < 1e-6);
        // Σ_{i≠j} cos = 2 (1/√2 − 1/√2 − 1/2) = −1, over 6.
        assert!((pt(&s, PtVariant::Unsquared)? + 1.0 / 6.0).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn identical_rows_give_one_and_orthogonal_rows_give_zero() -> Result<()> {
        let same = [[0.5, -1.0, 2.0, 0.1]; 5];
        assert!((pt(&same, PtVariant::Paper)? - 1.0).abs() < 1e-6);
        let orthogonal = [
            [2.0, 0.0, 0.0, 0.0],
            [0.0, -1.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 3.0],
        ];
        assert!(pt(&orthogonal, PtVariant::Paper)?.abs() < 1e-7);
        // A zero code has no direction: cosines 0, not NaN.
        let with_zero = [[0.0; 4], [1.0, 0.0, 0.0, 0.0]];
        assert_eq!(pt(&with_zero, PtVariant::Paper)?, 0.0);
        assert_eq!(pt(&[[1.0, 2.0, 3.0, 4.0]], PtVariant::Paper)?, 0.0);
        Ok(())
    }

    #[test]
    fn images_are_flattened_and_gradients_flow() -> Result<()> {
        let s = candle_core::Var::from_tensor(&Tensor::new(
            &[[[1f32, 2.0]], [[2.0, 1.0]], [[0.0, 1.0]]],
            &Device::Cpu,
        )?)?;
        let p = pull_away(s.as_tensor(), PtVariant::Paper)?;
        let g = p.backward()?;
        let gs = g
            .get(&s)
            .expect("gradient")
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert!(gs.iter().all(|v| v.is_finite()) && gs.iter().any(|v| *v != 0.0));
        Ok(())
    }
}
