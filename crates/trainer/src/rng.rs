//! A small, seedable, serializable random number generator.
//!
//! Candle's CPU device cannot be seeded, so everything random in kusari —
//! weight initialization, noise, dropout masks, shuffles — draws from this
//! generator instead. Its whole state is four `u64`s, so a snapshot can store
//! it and a resumed run continues the exact same stream.
//!
//! The algorithm is xoshiro256++ seeded through SplitMix64, as recommended by
//! its authors.

use candle_core::{Device, Result as CandleResult, Shape, Tensor};
use serde::{Deserialize, Serialize};

/// The complete state of an [`Rng`]; restoring it resumes the stream exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState(pub [u64; 4]);

/// xoshiro256++ generator with helpers for the distributions training needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator whose stream is fully determined by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let s = [
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
        ];
        Self { s }
    }

    /// An independent generator derived from `seed` and a stream name, so
    /// that separate consumers (iterator shuffle, dropout, noise) do not
    /// share one stream and adding draws to one leaves the others unchanged.
    pub fn derived(seed: u64, stream: &str) -> Self {
        // FNV-1a of the stream name, mixed with the seed.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in stream.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
        }
        let mut x = seed ^ h;
        Self::new(splitmix64(&mut x))
    }

    pub fn state(&self) -> RngState {
        RngState(self.s)
    }

    pub fn from_state(state: RngState) -> Self {
        Self { s: state.0 }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 24 bits of precision.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `0..n` (Lemire's method, unbiased). `n` must be > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below needs a positive bound");
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            let low = m as u64;
            if low >= n.wrapping_neg() % n {
                return (m >> 64) as u64;
            }
        }
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// A random permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        self.shuffle(&mut order);
        order
    }

    pub fn fill_uniform(&mut self, out: &mut [f32], low: f32, high: f32) {
        let width = high - low;
        for x in out {
            *x = low + width * self.next_f32();
        }
    }

    /// Standard normal samples scaled to `mean + std * N(0, 1)` (Box–Muller).
    pub fn fill_normal(&mut self, out: &mut [f32], mean: f32, std: f32) {
        let mut chunks = out.chunks_exact_mut(2);
        for pair in &mut chunks {
            let (a, b) = self.normal_pair();
            pair[0] = mean + std * a as f32;
            pair[1] = mean + std * b as f32;
        }
        if let [last] = chunks.into_remainder() {
            *last = mean + std * self.normal_pair().0 as f32;
        }
    }

    fn normal_pair(&mut self) -> (f64, f64) {
        // 1 - u keeps the logarithm's argument in (0, 1].
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        (r * theta.cos(), r * theta.sin())
    }

    /// Inverted-dropout mask: each entry is `1 / (1 - ratio)` with probability
    /// `1 - ratio`, else 0, so that the expected activation is unchanged.
    pub fn fill_dropout_mask(&mut self, out: &mut [f32], ratio: f32) {
        let scale = 1.0 / (1.0 - ratio);
        for x in out {
            // A multiply, not a branch: kept draws are a coin flip, which
            // branch prediction cannot learn.
            *x = scale * f32::from(u8::from(self.next_f32() >= ratio));
        }
    }

    /// An f32 tensor of uniform samples in `[low, high)`.
    pub fn uniform_tensor<S: Into<Shape>>(
        &mut self,
        shape: S,
        low: f32,
        high: f32,
        device: &Device,
    ) -> CandleResult<Tensor> {
        let shape = shape.into();
        let mut data = vec![0f32; shape.elem_count()];
        self.fill_uniform(&mut data, low, high);
        Tensor::from_vec(data, shape, device)
    }

    /// An f32 tensor of normal samples with the given mean and standard deviation.
    pub fn normal_tensor<S: Into<Shape>>(
        &mut self,
        shape: S,
        mean: f32,
        std: f32,
        device: &Device,
    ) -> CandleResult<Tensor> {
        let shape = shape.into();
        let mut data = vec![0f32; shape.elem_count()];
        self.fill_normal(&mut data, mean, std);
        Tensor::from_vec(data, shape, device)
    }

    /// An f32 inverted-dropout mask tensor (see [`Rng::fill_dropout_mask`]).
    pub fn dropout_mask<S: Into<Shape>>(
        &mut self,
        shape: S,
        ratio: f32,
        device: &Device,
    ) -> CandleResult<Tensor> {
        let shape = shape.into();
        let mut data = vec![0f32; shape.elem_count()];
        self.fill_dropout_mask(&mut data, ratio);
        Tensor::from_vec(data, shape, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_state_round_trip() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let saved = a.state();
        let expected: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let mut restored = Rng::from_state(saved);
        let got: Vec<u64> = (0..5).map(|_| restored.next_u64()).collect();
        assert_eq!(expected, got);
        assert_ne!(Rng::new(8).next_u64(), Rng::new(7).next_u64());
    }

    #[test]
    fn derived_streams_differ() {
        let mut a = Rng::derived(1, "shuffle");
        let mut b = Rng::derived(1, "noise");
        assert_ne!(a.next_u64(), b.next_u64());
    }

    #[test]
    fn distributions_have_the_right_moments() {
        let mut rng = Rng::new(3);
        let mut x = vec![0f32; 200_000];
        rng.fill_normal(&mut x, 1.0, 2.0);
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!((mean - 1.0).abs() < 0.02, "mean {mean}");
        assert!((var.sqrt() - 2.0).abs() < 0.02, "std {}", var.sqrt());

        rng.fill_uniform(&mut x, -1.0, 1.0);
        assert!(x.iter().all(|&v| (-1.0..1.0).contains(&v)));
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        assert!(mean.abs() < 0.01);

        rng.fill_dropout_mask(&mut x, 0.5);
        let kept = x.iter().filter(|&&v| v == 2.0).count() as f64 / n;
        assert!((kept - 0.5).abs() < 0.01);
        assert!(x.iter().all(|&v| v == 0.0 || v == 2.0));
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut rng = Rng::new(11);
        let mut p = rng.permutation(1000);
        assert_ne!(p, (0..1000).collect::<Vec<_>>());
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<_>>());
        for n in [1u64, 2, 3, 7, 1000] {
            assert!((0..100).all(|_| rng.below(n) < n));
        }
    }
}
