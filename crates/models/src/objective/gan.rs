use anyhow::Result;
use candle_core::Tensor;

use super::{DisOutputs, Losses, Objective};
use crate::config::DisHead;

/// Label D gives real images (the seed's convention).
const REAL: f64 = 0.0;
/// Label D gives fakes.
const FAKE: f64 = 1.0;

/// Goodfellow et al.'s GAN with the seed blog's labels (real 0, fake 1) and
/// G's non-saturating loss:
///
/// ```text
/// L_D = CE(D(x), 0) + CE(D(G(z)), 1)        L_G = CE(D(G(z)), 0)
/// ```
///
/// with CE the mean sigmoid cross-entropy of a logit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gan;

impl Objective for Gan {
    fn name(&self) -> &str {
        "gan"
    }

    fn head(&self) -> DisHead {
        DisHead::Logit
    }

    fn losses(&self, d: &DisOutputs) -> Result<Losses> {
        let dis = (sigmoid_cross_entropy(&d.real, REAL)? + sigmoid_cross_entropy(&d.fake, FAKE)?)?;
        let gen = sigmoid_cross_entropy(&d.fake, REAL)?;
        Ok(Losses::new(dis, gen))
    }
}

/// Mean sigmoid cross-entropy of `logits` against the constant label
/// `target` (0 or 1), in the stable form
/// `max(x, 0) − x·t + log(1 + exp(−|x|))`, finite for any finite logit.
pub fn sigmoid_cross_entropy(logits: &Tensor, target: f64) -> Result<Tensor> {
    let per_example = (softplus(logits)? - (logits * target)?)?;
    Ok(per_example.mean_all()?)
}

/// `log(1 + exp(x))` for every value, as `max(x, 0) + log(1 + exp(−|x|))`:
/// finite for any finite `x` (−log σ(x) is `softplus(−x)`).
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    let tail = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok((x.relu()? + tail)?)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_near, logit_grads, logits, values};
    use super::*;
    use candle_core::{Device, Var};

    fn reference(x: f64, t: f64) -> f64 {
        let p = 1.0 / (1.0 + (-x).exp());
        -(t * p.ln() + (1.0 - t) * (1.0 - p).ln())
    }

    #[test]
    fn cross_entropy_matches_the_definition_and_stays_finite() -> Result<()> {
        let xs = [-3.0f32, -0.5, 0.0, 0.7, 4.0];
        for t in [0.0, 1.0] {
            let got = sigmoid_cross_entropy(&Tensor::new(&xs, &Device::Cpu)?, t)?
                .to_scalar::<f32>()? as f64;
            let want = xs.iter().map(|&x| reference(x as f64, t)).sum::<f64>() / xs.len() as f64;
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        let big = Var::new(&[1000f32, -1000.0], &Device::Cpu)?;
        let loss = sigmoid_cross_entropy(big.as_tensor(), 0.0)?;
        assert!((loss.to_scalar::<f32>()? - 500.0).abs() < 1e-3);
        let g = loss.backward()?.get(&big).unwrap().to_vec1::<f32>()?;
        assert!((g[0] - 0.5).abs() < 1e-6 && g[1].abs() < 1e-6, "{g:?}");
        Ok(())
    }

    /// Logits 0 (σ = ½) and ln 3 (σ = ¾), worked by hand.
    #[test]
    fn hand_worked_losses_and_gradients() -> Result<()> {
        let l3 = 3f32.ln();
        let l = Gan.losses(&logits(&[0.0, l3], &[l3, 0.0])?)?;
        // CE(x, 0) = −ln(1 − σ(x)): ln 2 at 0, ln 4 at ln 3; CE(x, 1) = −ln σ(x): ln 2, ln(4/3).
        let (dis, gen) = values(&l)?;
        let (ln2, ln4, ln43) = (2f64.ln(), 4f64.ln(), (4.0f64 / 3.0).ln());
        assert!((dis - ((ln2 + ln4) / 2.0 + (ln43 + ln2) / 2.0)).abs() < 1e-6);
        assert!((gen - (ln4 + ln2) / 2.0).abs() < 1e-6);
        // ∂CE(x, t)/∂x = (σ(x) − t)/N.
        let [dr, df, gr, gf] = logit_grads(&Gan, &[0.0, l3], &[l3, 0.0])?;
        assert_near(&dr, &[0.25, 0.375], "∂L_D/∂real");
        assert_near(&df, &[-0.125, -0.25], "∂L_D/∂fake");
        assert_near(&gr, &[0.0, 0.0], "∂L_G/∂real");
        assert_near(&gf, &[0.375, 0.25], "∂L_G/∂fake");
        Ok(())
    }
}
