//! EBGAN (Zhao, Mathieu & LeCun 2016): D is an auto-encoder whose
//! reconstruction error is the energy; D pushes real energies down and fake
//! energies up to a margin, G pulls its samples' energy down, and the
//! pull-away term on D's codes keeps G's samples apart.

use anyhow::Result;
use candle_core::Tensor;

use super::{DisOutputs, Losses, Objective};
use crate::config::{DisHead, EbganConfig, PtVariant};

/// EBGAN(-PT) with energy `E(x) = MSE(D(x), x)`:
///
/// ```text
/// L_D = E(x) + relu(m − E(G(z)))        L_G = E(G(z)) + pt_weight · PT(S of G(z))
/// ```
///
/// Reports `gen/pt`, `dis/real_energy` and `dis/fake_energy` besides the losses.
#[derive(Debug, Clone, Copy)]
pub struct Ebgan {
    config: EbganConfig,
}

impl Ebgan {
    /// With margin, PT weight and PT variant from `config`.
    pub fn new(config: EbganConfig) -> Self {
        Self { config }
    }

    /// Margin, PT weight and variant.
    pub fn config(&self) -> &EbganConfig {
        &self.config
    }
}

impl Objective for Ebgan {
    fn name(&self) -> &str {
        "ebgan"
    }

    fn head(&self) -> DisHead {
        DisHead::AutoEncoder
    }

    fn losses(&self, d: &DisOutputs) -> Result<Losses> {
        let c = &self.config;
        let real_energy = energy(&d.real, &d.real_images)?;
        let fake_energy = energy(&d.fake, &d.fake_images)?;
        let dis = (&real_energy + fake_energy.affine(-1.0, c.margin)?.relu()?)?;
        let pt = pull_away(&d.fake_code, c.pt)?;
        let gen = (&fake_energy + (&pt * c.pt_weight)?)?;
        Ok(Losses::new(dis, gen)
            .report("gen/pt", pt)
            .report("dis/real_energy", real_energy)
            .report("dis/fake_energy", fake_energy))
    }
}

/// The energy `E = MSE(reconstruction, x)`: the mean squared difference over
/// every value of the batch, as Chainer's `mean_squared_error`.
pub fn energy(reconstruction: &Tensor, x: &Tensor) -> Result<Tensor> {
    Ok((reconstruction - x)?.sqr()?.mean_all()?)
}

/// Below this norm a code row counts as zero (its cosines are 0, not NaN).
const MIN_NORM: f64 = 1e-12;

/// The pull-away term (PT): how alike the codes of a fake batch are, as
/// mean (squared) cosine similarity. PT of the codes `s` (`[N, ...]`, flattened to `[N, K]` rows):
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
    // The floor goes under the square root: sqrt's gradient at an all-zero
    // row (a code whose units dropout all dropped) is infinite, and times
    // the floor's zero gradient it would be NaN.
    let norms = s
        .sqr()?
        .sum_keepdim(1)?
        .maximum(MIN_NORM * MIN_NORM)?
        .sqrt()?;
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
    use candle_core::{Device, Var};

    /// Two 1×2 images, reconstructions and codes small enough to work by hand.
    #[test]
    fn hand_worked_losses_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let t = |v: &[f32]| Tensor::from_slice(v, (2, 1, 1, 1), &dev);
        // E(x) = ((1−0)² + (0−0)²)/2 = 0.5; E(G(z)) = ((3−1)² + (1−1)²)/2 = 2.
        let fake_recon = Var::new(&[3f32, 1.0], &dev)?;
        let fake_images = Var::new(&[1f32, 1.0], &dev)?;
        let fake_code = Var::from_vec(vec![1f32, 0.0, 1.0, 1.0], (2, 2), &dev)?;
        let d = DisOutputs {
            real: t(&[1.0, 0.0])?,
            fake: fake_recon.as_tensor().reshape((2, 1, 1, 1))?,
            real_code: Tensor::zeros((2, 2), candle_core::DType::F32, &dev)?,
            fake_code: fake_code.as_tensor().clone(),
            real_images: t(&[0.0, 0.0])?,
            fake_images: fake_images.as_tensor().reshape((2, 1, 1, 1))?,
        };
        let config = EbganConfig {
            margin: 3.0,
            pt_weight: 0.1,
            pt: PtVariant::Paper,
        };
        let l = Ebgan::new(config).losses(&d)?;
        // L_D = 0.5 + relu(3 − 2) = 1.5. cos(S₀, S₁) = 1/√2, so PT = cos² = 0.5
        // over the 2 ordered pairs; L_G = 2 + 0.1 · 0.5.
        assert!((l.dis.to_scalar::<f32>()? - 1.5).abs() < 1e-6);
        assert!((l.gen.to_scalar::<f32>()? - 2.05).abs() < 1e-6);
        let keys: Vec<_> = l.reports.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["gen/pt", "dis/real_energy", "dis/fake_energy"]);
        // ∂E(G(z))/∂recon = 2(recon − x)/2 = (2, 0), and the opposite for the
        // images themselves; through L_D's hinge, −1 times that.
        let g = l.gen.backward()?;
        let grad = |v: &Var| {
            g.get(v)
                .expect("a gradient")
                .flatten_all()?
                .to_vec1::<f32>()
        };
        assert_eq!(grad(&fake_recon)?, vec![2.0, 0.0]);
        assert_eq!(grad(&fake_images)?, vec![-2.0, 0.0]);
        let gd = l.dis.backward()?;
        let recon = gd.get(&fake_recon).expect("a gradient").to_vec1::<f32>()?;
        assert_eq!(recon, vec![-2.0, 0.0]);
        // Past the margin, L_D no longer sees the fakes.
        let far = Ebgan::new(EbganConfig {
            margin: 1.0,
            ..config
        })
        .losses(&d)?;
        assert!((far.dis.to_scalar::<f32>()? - 0.5).abs() < 1e-6);
        Ok(())
    }
}

#[cfg(test)]
mod pull_away_tests {
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

    #[test]
    fn an_all_zero_code_has_cosines_and_gradients_of_zero_not_nan() -> Result<()> {
        // Dropout can zero every unit of a small code.
        let s = candle_core::Var::from_tensor(&Tensor::new(
            &[[1f32, 2.0], [0.0, 0.0], [2.0, 1.0]],
            &Device::Cpu,
        )?)?;
        for variant in [PtVariant::Paper, PtVariant::Blog, PtVariant::Unsquared] {
            let p = pull_away(s.as_tensor(), variant)?;
            assert!(p.to_scalar::<f32>()?.is_finite());
            let g = p.backward()?;
            let gs = g.get(&s).expect("gradient").to_vec2::<f32>()?;
            assert!(
                gs.iter().flatten().all(|v| v.is_finite()),
                "{variant:?}: {gs:?}"
            );
            if variant != PtVariant::Unsquared {
                // cos² is flat where cos is 0.
                assert_eq!(gs[1], vec![0.0, 0.0], "{variant:?}");
            }
        }
        Ok(())
    }
}
