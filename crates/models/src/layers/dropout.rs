//! Inverted dropout with masks from kusari's seeded [`kusari_trainer::Rng`]
//! (never candle's unseedable generator), so runs repeat exactly.

use anyhow::Result;
use candle_core::Tensor;

use super::Phase;

/// In training, zeroes each value with probability `ratio` and scales the
/// rest by `1 / (1 − ratio)`; in evaluation (or with ratio 0) returns `x`.
pub fn dropout(x: &Tensor, ratio: f32, phase: &mut Phase<'_>) -> Result<Tensor> {
    match phase {
        Phase::Train(rng) if ratio > 0.0 => {
            let mask = rng.dropout_mask(x.shape(), ratio, x.device())?;
            Ok((x * mask)?)
        }
        _ => Ok(x.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use kusari_trainer::Rng;

    #[test]
    fn masks_are_seeded_and_eval_is_identity() -> Result<()> {
        let x = Tensor::ones((4, 50), candle_core::DType::F32, &Device::Cpu)?;
        let a = dropout(&x, 0.5, &mut Phase::Train(&mut Rng::new(1)))?;
        let b = dropout(&x, 0.5, &mut Phase::Train(&mut Rng::new(1)))?;
        let c = dropout(&x, 0.5, &mut Phase::Train(&mut Rng::new(2)))?;
        let va: Vec<f32> = a.flatten_all()?.to_vec1()?;
        assert_eq!(va, b.flatten_all()?.to_vec1::<f32>()?);
        assert_ne!(va, c.flatten_all()?.to_vec1::<f32>()?);
        assert!(va.iter().all(|&v| v == 0.0 || v == 2.0));
        assert!(va.contains(&0.0) && va.contains(&2.0));
        let e = dropout(&x, 0.5, &mut Phase::Eval)?;
        assert_eq!(e.sum_all()?.to_scalar::<f32>()?, 200.0);
        Ok(())
    }
}
