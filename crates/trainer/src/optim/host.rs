//! Optimizers whose update is element by element, so a kernel that has just
//! computed a slice of a gradient can apply the update to that slice at
//! once, while it is still in the cache, instead of storing the gradient.
//!
//! [`Adam`](super::Adam) and [`RmsProp`](super::RmsProp) offer this through
//! [`HostOptimizer`] when their parameters live on the CPU:
//!
//! ```
//! use candle_core::{Device, Var};
//! use kusari_trainer::{Adam, AdamConfig, Optimizer};
//!
//! # fn main() -> anyhow::Result<()> {
//! let w = Var::new(&[1f32, 2.0, 3.0], &Device::Cpu)?;
//! let mut adam = Adam::new(vec![("w".into(), w.clone())], AdamConfig::default())?;
//! let host = adam.as_host().expect("CPU parameters");
//! assert!(host.updates_exactly(&[&w]));
//! let step = host.begin_external_step();
//! let mut p = w.to_vec1::<f32>()?;
//! step.apply(&mut p, &[0.5, -0.5, 0.0], host.host_state_mut(&w)?);
//! w.set(&candle_core::Tensor::new(p, &Device::Cpu)?)?;
//! assert_eq!(adam.steps(), 1);
//! # Ok(())
//! # }
//! ```

use std::ops::Range;

use anyhow::Result;
use candle_core::Var;

use super::{AdamStep, RmsPropStep};

/// The constants of one step of an element-wise update rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ElementStep {
    /// Adam's step (bias-corrected rate, betas, epsilon).
    Adam(AdamStep),
    /// RMSProp's step (rate, decay, epsilon).
    RmsProp(RmsPropStep),
    /// Plain gradient descent at this rate: `p −= lr · g`.
    Sgd(f32),
}

impl ElementStep {
    /// Updates the parameters `p` and their optimizer `state` in place from
    /// the gradients `g` (all the same length): exactly what the
    /// optimizer's own `step` does to those elements.
    #[inline]
    pub fn apply(&self, p: &mut [f32], g: &[f32], state: ElementState<'_>) {
        match self {
            ElementStep::Adam(s) => s.apply(p, g, state.first, state.second),
            ElementStep::RmsProp(s) => s.apply(p, g, state.second),
            ElementStep::Sgd(lr) => {
                assert_eq!(p.len(), g.len(), "sgd: length mismatch");
                for (p, g) in p.iter_mut().zip(g) {
                    *p -= g * lr;
                }
            }
        }
    }
}

/// The optimizer state of some elements of one parameter: Adam's first and
/// second moments, RMSProp's mean square in `second` (with `first` empty),
/// or nothing (both empty) for plain gradient descent.
#[derive(Debug)]
pub struct ElementState<'a> {
    /// The first moment (empty for a rule that keeps none).
    pub first: &'a mut [f32],
    /// The second moment, or the mean square (empty for a rule that keeps none).
    pub second: &'a mut [f32],
}

impl<'a> ElementState<'a> {
    /// Whether this state fits a parameter of `len` elements: each part is
    /// either empty (not kept) or `len` long.
    pub fn fits(&self, len: usize) -> bool {
        [self.first.len(), self.second.len()]
            .iter()
            .all(|&l| l == 0 || l == len)
    }

    /// The state of elements `range`.
    pub fn slice(&mut self, range: Range<usize>) -> ElementState<'_> {
        ElementState {
            first: part(self.first, range.clone()),
            second: part(self.second, range),
        }
    }

    /// The state cut as `slice::chunks_mut(size)` cuts a parameter of
    /// `len` elements: `len.div_ceil(size)` pieces, the last maybe shorter.
    pub fn into_chunks(self, size: usize, len: usize) -> Vec<ElementState<'a>> {
        assert!(size > 0, "chunks of zero elements");
        assert!(self.fits(len), "optimizer state of another length");
        let count = len.div_ceil(size);
        let cut = |v: &'a mut [f32]| -> Vec<&'a mut [f32]> {
            if v.is_empty() {
                (0..count).map(|_| <&mut [f32]>::default()).collect()
            } else {
                v.chunks_mut(size).collect()
            }
        };
        cut(self.first)
            .into_iter()
            .zip(cut(self.second))
            .map(|(first, second)| ElementState { first, second })
            .collect()
    }
}

/// Elements `range` of a part of the state, or nothing when it is not kept.
fn part(v: &mut [f32], range: Range<usize>) -> &mut [f32] {
    if v.is_empty() {
        v
    } else {
        &mut v[range]
    }
}

/// An optimizer whose element-wise update a caller can apply itself, slice
/// by slice, on parameters in host memory.
pub trait HostOptimizer {
    /// Starts a step that the caller applies with [`ElementStep::apply`] on
    /// the state from [`HostOptimizer::host_state_mut`], counting it as the
    /// optimizer's own `step` would. Every parameter must be updated exactly
    /// once before the next step; snapshots and resumption work as after a
    /// normal step.
    fn begin_external_step(&mut self) -> ElementStep;

    /// The state of `var` (found by identity). Fails when `var` is not one
    /// of this optimizer's parameters or its state is not in host memory.
    fn host_state_mut(&mut self, var: &Var) -> Result<ElementState<'_>>;

    /// Whether this optimizer updates exactly `vars` (by identity, in any
    /// order), keeping all its state in host memory.
    fn updates_exactly(&self, vars: &[&Var]) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_follow_the_parameter_with_or_without_a_first_moment() {
        let (mut m, mut v) = (vec![0f32; 10], vec![0f32; 10]);
        let lens = |chunks: Vec<ElementState<'_>>| -> Vec<(usize, usize)> {
            chunks
                .iter()
                .map(|c| (c.first.len(), c.second.len()))
                .collect()
        };
        let both = ElementState {
            first: &mut m,
            second: &mut v,
        };
        assert_eq!(lens(both.into_chunks(4, 10)), vec![(4, 4), (4, 4), (2, 2)]);
        let second = ElementState {
            first: &mut [],
            second: &mut v,
        };
        assert_eq!(
            lens(second.into_chunks(4, 10)),
            vec![(0, 4), (0, 4), (0, 2)]
        );
        let none = ElementState {
            first: &mut [],
            second: &mut [],
        };
        assert!(none.fits(10));
        assert_eq!(lens(none.into_chunks(4, 10)), vec![(0, 0), (0, 0), (0, 0)]);
        let mut s = ElementState {
            first: &mut [],
            second: &mut v,
        };
        assert_eq!(s.slice(2..5).second.len(), 3);
        assert!(!s.fits(9));
    }
}
