//! A scope in which kusari's custom ops leave out their weights' gradients.
//!
//! EBGAN's `L_G` reaches G through D, so its backward pass runs through all
//! of D, yet only `∂L_G/∂fake` is used: D's weight gradients from it would
//! be computed and thrown away. Inside [`input_gradients_only`] the
//! convolutions and their biases skip them (about half the arithmetic of
//! that pass through D); gradients with respect to the inputs are unchanged. candle's
//! own ops (matmul, element-wise) still compute everything.

use std::cell::Cell;

thread_local! {
    static INPUT_GRADIENTS_ONLY: Cell<bool> = const { Cell::new(false) };
}

/// Runs `backward` (a closure calling candle's `backward()`) with the custom
/// ops' weight gradients left out of the result. The gradient store it
/// returns lacks those weights: use it for input gradients only.
pub fn input_gradients_only<R>(backward: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            INPUT_GRADIENTS_ONLY.with(|flag| flag.set(self.0));
        }
    }
    let _restore = Restore(INPUT_GRADIENTS_ONLY.with(|flag| flag.replace(true)));
    backward()
}

/// What a custom op's backward pass owes its weight `w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WeightGradient {
    /// Its gradient: `w` is tracked and the caller is not in [`input_gradients_only`].
    Compute,
    /// Nothing: `w` is a constant, or a variable inside the scope.
    Skip,
    /// Zeros: inside the scope, `w` is computed from variables (a
    /// spectrally normalized weight), and candle's backward pass needs a
    /// gradient for every tracked tensor it reaches.
    Zeros,
}

/// What the backward pass of a custom op owes its weight `w`.
pub(crate) fn weight_gradient(w: &candle_core::Tensor) -> WeightGradient {
    if !w.track_op() {
        WeightGradient::Skip
    } else if !INPUT_GRADIENTS_ONLY.with(Cell::get) {
        WeightGradient::Compute
    } else if w.is_variable() {
        WeightGradient::Skip
    } else {
        WeightGradient::Zeros
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor, Var};

    #[test]
    fn the_scope_ends_with_the_closure_even_when_it_panics() -> anyhow::Result<()> {
        use WeightGradient::*;
        let w = Var::zeros(3, candle_core::DType::F32, &Device::Cpu)?;
        assert_eq!(weight_gradient(w.as_tensor()), Compute);
        assert_eq!(
            input_gradients_only(|| weight_gradient(w.as_tensor())),
            Skip
        );
        assert_eq!(weight_gradient(w.as_tensor()), Compute);
        let caught = std::panic::catch_unwind(|| input_gradients_only(|| panic!("inside")));
        assert!(caught.is_err());
        assert_eq!(weight_gradient(w.as_tensor()), Compute);
        let constant = Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu)?;
        assert_eq!(weight_gradient(&constant), Skip);
        let computed = (w.as_tensor() * 2.0)?;
        assert_eq!(input_gradients_only(|| weight_gradient(&computed)), Zeros);
        Ok(())
    }
}
