use anyhow::Result;
use candle_core::Tensor;

/// Mean sigmoid cross-entropy of `logits` against the constant label
/// `target` (0 or 1), in the stable form
/// `max(x, 0) − x·t + log(1 + exp(−|x|))`, finite for any finite logit.
pub fn sigmoid_cross_entropy(logits: &Tensor, target: f64) -> Result<Tensor> {
    let softplus_neg_abs = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    let per_example = ((logits.relu()? - (logits * target)?)? + softplus_neg_abs)?;
    Ok(per_example.mean_all()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn reference(x: f64, t: f64) -> f64 {
        let p = 1.0 / (1.0 + (-x).exp());
        -(t * p.ln() + (1.0 - t) * (1.0 - p).ln())
    }

    #[test]
    fn matches_the_definition_and_stays_finite() -> Result<()> {
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
}
