use anyhow::Result;

use super::{DisOutputs, Losses, Objective};
use crate::config::DisHead;

/// Arjovsky et al.'s Wasserstein GAN (2017): D is a critic whose mean gap
/// between real and fake batches estimates the Wasserstein-1 distance (up
/// to a constant) while its weights stay clipped:
///
/// ```text
/// L_D = E[D(G(z))] − E[D(x)]        L_G = −E[D(G(z))]
/// ```
///
/// The paper's training — weights clipped to ±0.01, 5 critic steps per G
/// step, RMSProp at 5e-5 — is set by `Config::use_wgan_training` (and by
/// `kusari train wgan`), not here. Reports `dis/wasserstein`, the estimate
/// `E[D(x)] − E[D(G(z))]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wgan;

impl Objective for Wgan {
    fn name(&self) -> &str {
        "wgan"
    }

    fn head(&self) -> DisHead {
        DisHead::Logit
    }

    fn losses(&self, d: &DisOutputs) -> Result<Losses> {
        let (real, fake) = (d.real.mean_all()?, d.fake.mean_all()?);
        let distance = (&real - &fake)?;
        Ok(Losses::new(distance.neg()?, fake.neg()?).report("dis/wasserstein", distance))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_near, logit_grads, logits, values};
    use super::*;

    #[test]
    fn hand_worked_losses_and_gradients() -> Result<()> {
        let (real, fake) = ([1.0f32, 3.0, 2.0], [-1.0f32, 0.5, 0.5]);
        let l = Wgan.losses(&logits(&real, &fake)?)?;
        let (dis, gen) = values(&l)?;
        assert!((dis - (0.0 - 2.0)).abs() < 1e-6, "{dis}");
        assert!(gen.abs() < 1e-6, "{gen}");
        assert_eq!(l.reports[0].0, "dis/wasserstein");
        assert!((l.reports[0].1.to_scalar::<f32>()? - 2.0).abs() < 1e-6);
        let [dr, df, gr, gf] = logit_grads(&Wgan, &real, &fake)?;
        let third = 1.0 / 3.0;
        assert_near(&dr, &[-third; 3], "∂L_D/∂real");
        assert_near(&df, &[third; 3], "∂L_D/∂fake");
        assert_near(&gr, &[0.0; 3], "∂L_G/∂real");
        assert_near(&gf, &[-third; 3], "∂L_G/∂fake");
        Ok(())
    }
}
