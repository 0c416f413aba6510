use anyhow::Result;

use super::{DisOutputs, Losses, Objective};
use crate::config::DisHead;

/// Mao et al.'s least-squares GAN (2017) with the labels a = 0 (fake),
/// b = c = 1 (real, and what G wants):
///
/// ```text
/// L_D = ½ E[(D(x) − 1)²] + ½ E[D(G(z))²]        L_G = ½ E[(D(G(z)) − 1)²]
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Lsgan;

impl Objective for Lsgan {
    fn name(&self) -> &str {
        "lsgan"
    }

    fn head(&self) -> DisHead {
        DisHead::Logit
    }

    fn losses(&self, d: &DisOutputs) -> Result<Losses> {
        let real = d.real.affine(1.0, -1.0)?.sqr()?.mean_all()?;
        let fake = d.fake.sqr()?.mean_all()?;
        let dis = ((real + fake)? * 0.5)?;
        let gen = (d.fake.affine(1.0, -1.0)?.sqr()?.mean_all()? * 0.5)?;
        Ok(Losses::new(dis, gen))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_near, logit_grads, logits, values};
    use super::*;

    #[test]
    fn hand_worked_losses_and_gradients() -> Result<()> {
        let (real, fake) = ([1.0f32, 3.0], [0.5f32, -1.0]);
        let (dis, gen) = values(&Lsgan.losses(&logits(&real, &fake)?)?)?;
        // ½·(0 + 4)/2 + ½·(0.25 + 1)/2 = 1 + 0.3125; ½·(0.25 + 4)/2.
        assert!((dis - 1.3125).abs() < 1e-6, "{dis}");
        assert!((gen - 1.0625).abs() < 1e-6, "{gen}");
        let [dr, df, gr, gf] = logit_grads(&Lsgan, &real, &fake)?;
        // ∂/∂D(x) = (D(x) − 1)/N; ∂/∂D(G(z)) = D(G(z))/N for D, (D(G(z)) − 1)/N for G.
        assert_near(&dr, &[0.0, 1.0], "∂L_D/∂real");
        assert_near(&df, &[0.25, -0.5], "∂L_D/∂fake");
        assert_near(&gr, &[0.0, 0.0], "∂L_G/∂real");
        assert_near(&gf, &[-0.25, -1.0], "∂L_G/∂fake");
        Ok(())
    }
}
