use anyhow::Result;
use candle_core::Tensor;

/// The energy `E = MSE(reconstruction, x)`: the mean squared difference over
/// every value of the batch, as Chainer's `mean_squared_error`.
pub fn energy(reconstruction: &Tensor, x: &Tensor) -> Result<Tensor> {
    Ok((reconstruction - x)?.sqr()?.mean_all()?)
}
