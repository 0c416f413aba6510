use anyhow::Result;

use super::{DisOutputs, Losses, Objective};
use crate::config::DisHead;

/// The hinge loss of SNGAN (Miyato et al. 2018) and BigGAN:
///
/// ```text
/// L_D = E[relu(1 − D(x))] + E[relu(1 + D(G(z)))]        L_G = −E[D(G(z))]
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Hinge;

impl Objective for Hinge {
    fn name(&self) -> &str {
        "hinge"
    }

    fn head(&self) -> DisHead {
        DisHead::Logit
    }

    fn losses(&self, d: &DisOutputs) -> Result<Losses> {
        let real = d.real.affine(-1.0, 1.0)?.relu()?.mean_all()?;
        let fake = d.fake.affine(1.0, 1.0)?.relu()?.mean_all()?;
        let dis = (real + fake)?;
        let gen = d.fake.mean_all()?.neg()?;
        Ok(Losses::new(dis, gen))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_near, logit_grads, logits, values};
    use super::*;

    #[test]
    fn hand_worked_losses_and_gradients() -> Result<()> {
        // Real logits 0.5 (inside the margin) and 2 (outside); fakes −3 (outside) and 0.
        let (real, fake) = ([0.5f32, 2.0], [-3.0f32, 0.0]);
        let (dis, gen) = values(&Hinge.losses(&logits(&real, &fake)?)?)?;
        // (0.5 + 0)/2 + (0 + 1)/2; −(−3 + 0)/2.
        assert!((dis - 0.75).abs() < 1e-6, "{dis}");
        assert!((gen - 1.5).abs() < 1e-6, "{gen}");
        let [dr, df, gr, gf] = logit_grads(&Hinge, &real, &fake)?;
        assert_near(&dr, &[-0.5, 0.0], "∂L_D/∂real");
        assert_near(&df, &[0.0, 0.5], "∂L_D/∂fake");
        assert_near(&gr, &[0.0, 0.0], "∂L_G/∂real");
        assert_near(&gf, &[-0.5, -0.5], "∂L_G/∂fake");
        Ok(())
    }
}
