//! Convolutions on the CPU as matrix products over gathered patches
//! ("im2col"), for f32 tensors, parallel over the samples of a batch.
//!
//! candle 0.11 runs `conv_transpose2d` on the CPU as a direct loop, and the
//! gradient of every convolution with respect to its input is a transposed
//! convolution, so a conv EBGAN step spent most of its time there (0.9
//! iterations per second at 32 channels). Here all three products of a
//! convolution layer — forward, input gradient, weight gradient — are
//! single-threaded matrix products of one sample's patches, run over the
//! batch on rayon's threads:
//!
//! - [`Lowering::lower`]: big maps → small maps (a convolution's forward,
//!   and a transposed convolution's input gradient);
//! - [`Lowering::raise`]: small maps → big maps, the exact transpose (a
//!   transposed convolution's forward, and a convolution's input gradient);
//! - [`Lowering::weight_grad`]: the weight gradient of either.
//!
//! [`conv2d`] and [`deconv2d`] wrap them as candle custom ops with their
//! gradients, so the candle-ops step keeps its autograd. The weight gradient
//! sums over fixed blocks of samples in a fixed order, so results do not
//! depend on the number of threads.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::grad_scope::{weight_gradient, WeightGradient};
use super::matmul::{gemm, MatMut, MatRef};
use super::simd;
use super::strided::{self, Window2d};
use super::tally::{self, ProductShape};

/// Samples whose weight gradients one task sums before the blocks are added in order.
const WEIGHT_GRAD_BLOCK: usize = 8;

/// The geometry of one convolution between big maps `[C_b, H_b, W_b]` and
/// small maps `[C_s, H_s, W_s]`, with weight `[C_s, C_b, k, k]`: a
/// convolution takes big to small, a transposed convolution small to big.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lowering {
    pub big_channels: usize,
    pub big_height: usize,
    pub big_width: usize,
    pub small_channels: usize,
    pub small_height: usize,
    pub small_width: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Lowering {
    /// The geometry of a convolution of big maps `[c_b, h, w]` into `c_s`
    /// channels; `None` when the kernel does not fit.
    pub fn of_conv(
        (c_b, h, w): (usize, usize, usize),
        c_s: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Option<Self> {
        let side = |x: usize| -> Option<usize> {
            let padded = x + 2 * padding;
            (stride > 0 && padded >= kernel).then(|| (padded - kernel) / stride + 1)
        };
        Some(Self {
            big_channels: c_b,
            big_height: h,
            big_width: w,
            small_channels: c_s,
            small_height: side(h)?,
            small_width: side(w)?,
            kernel,
            stride,
            padding,
        })
    }

    /// The geometry of a transposed convolution of small maps `[c_s, h, w]`
    /// into `c_b` channels (output padding 0, dilation 1, as candle's
    /// `conv_transpose2d` with those arguments); `None` when the crop
    /// leaves nothing.
    pub fn of_deconv(
        (c_s, h, w): (usize, usize, usize),
        c_b: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Option<Self> {
        let side = |x: usize| -> Option<usize> {
            let full = x.checked_sub(1)? * stride + kernel;
            full.checked_sub(2 * padding).filter(|&s| s > 0)
        };
        Some(Self {
            big_channels: c_b,
            big_height: side(h)?,
            big_width: side(w)?,
            small_channels: c_s,
            small_height: h,
            small_width: w,
            kernel,
            stride,
            padding,
        })
    }

    fn big_len(&self) -> usize {
        self.big_channels * self.big_height * self.big_width
    }

    fn small_plane(&self) -> usize {
        self.small_height * self.small_width
    }

    fn small_len(&self) -> usize {
        self.small_channels * self.small_plane()
    }

    fn patch_len(&self) -> usize {
        self.big_channels * self.kernel * self.kernel
    }

    /// The per-sample product `[m × k] · [k × small plane]`.
    fn product(&self, m: usize, k: usize, a_t: bool, b_t: bool) -> ProductShape {
        ProductShape {
            m,
            k,
            n: self.small_plane(),
            a_t,
            b_t,
        }
    }

    /// Elements of the weight `[C_s, C_b, k, k]`.
    pub fn weight_len(&self) -> usize {
        self.small_channels * self.patch_len()
    }

    /// The small positions `lo..hi` along one side whose tap `k` lands
    /// inside a big side of length `big`, and the big index of position 0
    /// (which may lie outside).
    #[inline]
    fn valid(&self, k: usize, small: usize, big: usize) -> (usize, usize, isize) {
        let first = k as isize - self.padding as isize;
        let s = self.stride as isize;
        // The smallest o with first + o·s ≥ 0, and the end of those with first + o·s < big.
        let lo = if first >= 0 {
            0
        } else {
            ((-first + s - 1) / s) as usize
        };
        let hi = if (big as isize) <= first {
            0
        } else {
            (((big as isize - first) + s - 1) / s) as usize
        };
        (lo.min(small), hi.min(small).max(lo.min(small)), first)
    }

    /// Visits each kernel tap `(c, ki, kj)`: `f(cols offset of the first
    /// value the tap reads inside the map, big offset of that value, the
    /// window of values inside the map)`, for taps that read anything.
    #[inline]
    fn for_each_tap(&self, mut f: impl FnMut(usize, usize, Window2d)) {
        let (k, plane) = (self.kernel, self.small_plane());
        let (sh, sw) = (self.small_height, self.small_width);
        let (bh, bw) = (self.big_height, self.big_width);
        for c in 0..self.big_channels {
            let channel = (c * bh * bw) as isize;
            for ki in 0..k {
                let (y_lo, y_hi, y0) = self.valid(ki, sh, bh);
                for kj in 0..k {
                    let (x_lo, x_hi, x0) = self.valid(kj, sw, bw);
                    if y_lo >= y_hi || x_lo >= x_hi {
                        continue;
                    }
                    let tap = ((c * k + ki) * k + kj) * plane;
                    let iy = y0 + (y_lo * self.stride) as isize;
                    let ix = x0 + (x_lo * self.stride) as isize;
                    let window = Window2d {
                        rows: y_hi - y_lo,
                        len: x_hi - x_lo,
                        step: self.stride,
                        pitch: self.stride * bw,
                        width: sw,
                    };
                    f(
                        tap + y_lo * sw + x_lo,
                        (channel + iy * bw as isize + ix) as usize,
                        window,
                    );
                }
            }
        }
    }

    /// One sample's patches: `cols[(c, ki, kj), (oy, ox)]`. Positions whose
    /// tap falls outside the map are not written: `cols` must hold zeros
    /// there, as a buffer does that was zero when allocated and is only ever
    /// gathered into with this geometry (the padding is the same for every
    /// sample, so rewriting its zeros each time is wasted work).
    fn gather(&self, big: &[f32], cols: &mut [f32]) {
        let level = simd::level();
        self.for_each_tap(|col, at, window| {
            strided::copy_window(level, &big[at..], window, &mut cols[col..]);
        });
    }

    /// Adds one sample's patches back onto its big maps.
    fn scatter_add(&self, cols: &[f32], big: &mut [f32]) {
        let level = simd::level();
        self.for_each_tap(|col, at, window| {
            strided::add_window(level, &cols[col..], window, &mut big[at..]);
        });
    }

    /// Big maps `[n, C_b, H_b, W_b]` → small maps `[n, C_s, H_s, W_s]`.
    pub fn lower(&self, big: &[f32], weight: &[f32], n: usize) -> Vec<f32> {
        let mut small = vec![0f32; n * self.small_len()];
        if n == 0 || self.small_len() == 0 {
            return small;
        }
        let w = MatRef::new(weight, self.small_channels, self.patch_len());
        tally::record(
            self.product(self.small_channels, self.patch_len(), false, false),
            n,
        );
        small
            .par_chunks_mut(self.small_len())
            .zip(big.par_chunks(self.big_len()))
            .for_each_init(
                || vec![0f32; self.patch_len() * self.small_plane()],
                |cols, (out, x)| {
                    self.gather(x, cols);
                    let patches = MatRef::new(cols, self.patch_len(), self.small_plane());
                    let mut dst = MatMut::new(out, self.small_channels, self.small_plane());
                    gemm(&mut dst, w, patches, false);
                },
            );
        small
    }

    /// Small maps `[n, C_s, H_s, W_s]` → big maps `[n, C_b, H_b, W_b]`: the
    /// transpose of [`Lowering::lower`].
    pub fn raise(&self, small: &[f32], weight: &[f32], n: usize) -> Vec<f32> {
        let mut big = vec![0f32; n * self.big_len()];
        if n == 0 || self.big_len() == 0 {
            return big;
        }
        let w_t = MatRef::new(weight, self.small_channels, self.patch_len()).t();
        tally::record(
            self.product(self.patch_len(), self.small_channels, true, false),
            n,
        );
        big.par_chunks_mut(self.big_len())
            .zip(small.par_chunks(self.small_len()))
            .for_each_init(
                || vec![0f32; self.patch_len() * self.small_plane()],
                |cols, (out, y)| {
                    let maps = MatRef::new(y, self.small_channels, self.small_plane());
                    let mut dst = MatMut::new(cols, self.patch_len(), self.small_plane());
                    gemm(&mut dst, w_t, maps, false);
                    self.scatter_add(cols, out);
                },
            );
        big
    }

    /// `Σ_samples small_n · patches(big_n)ᵀ`: the weight gradient `[C_s, C_b, k, k]`
    /// when `small` is the small side's gradient (convolution) or input
    /// (transposed convolution) and `big` the other side.
    pub fn weight_grad(&self, small: &[f32], big: &[f32], n: usize) -> Vec<f32> {
        let shape = ProductShape {
            m: self.small_channels,
            k: self.small_plane(),
            n: self.patch_len(),
            a_t: false,
            b_t: true,
        };
        tally::record(shape, n);
        let blocks: Vec<Vec<f32>> = (0..n.div_ceil(WEIGHT_GRAD_BLOCK))
            .into_par_iter()
            .map(|b| {
                let mut sum = vec![0f32; self.weight_len()];
                let mut cols = vec![0f32; self.patch_len() * self.small_plane()];
                let end = ((b + 1) * WEIGHT_GRAD_BLOCK).min(n);
                for s in b * WEIGHT_GRAD_BLOCK..end {
                    self.gather(
                        &big[s * self.big_len()..(s + 1) * self.big_len()],
                        &mut cols,
                    );
                    let y = &small[s * self.small_len()..(s + 1) * self.small_len()];
                    let maps = MatRef::new(y, self.small_channels, self.small_plane());
                    let patches_t = MatRef::new(&cols, self.patch_len(), self.small_plane()).t();
                    let mut dst = MatMut::new(&mut sum, self.small_channels, self.patch_len());
                    gemm(&mut dst, maps, patches_t, true);
                }
                sum
            })
            .collect();
        let mut total = vec![0f32; self.weight_len()];
        for block in blocks {
            for (t, v) in total.iter_mut().zip(block) {
                *t += v;
            }
        }
        total
    }
}

/// A contiguous f32 slice of a custom op's operand.
fn contiguous<'a>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    super::storage::operand(storage, layout, "convolution")
}

fn dims4(layout: &Layout, what: &str) -> candle_core::Result<(usize, usize, usize, usize)> {
    match layout.dims() {
        &[a, b, c, d] => Ok((a, b, c, d)),
        other => candle_core::bail!("{what} must be 4-d, got shape {other:?}"),
    }
}

/// Kernel, stride and padding of a square convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

/// A convolution of `x [N, C_in, H, W]`, differentiable in `x` and the
/// weight: `conv2d` with weight `[C_out, C_in, k, k]`, or (`transposed`)
/// `conv_transpose2d` with weight `[C_in, C_out, k, k]`.
struct Convolution {
    window: Window,
    transposed: bool,
}

/// One direction of a fixed geometry, `(maps, w) → maps` (its own gradient
/// is refused, see [`super::second_order_error`]):
/// the input gradients, whose output must have the input's shape even where
/// the stride skips the input's last rows.
struct Fixed {
    geometry: Lowering,
    raise: bool,
}

/// The weight gradient `(small, big) → [C_s, C_b, k, k]` of either direction.
struct WeightGrad(Lowering);

impl Convolution {
    /// The geometry for input dims `[_, C_in, H, W]` and weight dims `w`.
    fn geometry(&self, x: &[usize], w: &[usize]) -> candle_core::Result<Lowering> {
        let what = self.name();
        if w.len() != 4 || x.len() != 4 {
            candle_core::bail!("{what} needs 4-d input and weight, got {x:?} and {w:?}");
        }
        let (c_in, c_out) = if self.transposed {
            (w[0], w[1])
        } else {
            (w[1], w[0])
        };
        if c_in != x[1] || w[2] != w[3] || w[2] != self.window.kernel {
            candle_core::bail!("{what} weight {w:?} does not fit input {x:?}");
        }
        let Window {
            kernel,
            stride,
            padding,
        } = self.window;
        let maps = (x[1], x[2], x[3]);
        let g = if self.transposed {
            Lowering::of_deconv(maps, c_out, kernel, stride, padding)
        } else {
            Lowering::of_conv(maps, c_out, kernel, stride, padding)
        };
        g.ok_or_else(|| {
            candle_core::Error::Msg(format!("{what}: the kernel does not fit the input {x:?}"))
        })
    }
}

impl Fixed {
    /// Lowers or raises `maps [n, …]` with `weight`, checking both against the geometry.
    fn run(
        &self,
        maps: (&CpuStorage, &Layout),
        weight: (&CpuStorage, &Layout),
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.geometry;
        let (n, ..) = dims4(maps.1, "convolution maps")?;
        let small = [n, g.small_channels, g.small_height, g.small_width];
        let big = [n, g.big_channels, g.big_height, g.big_width];
        let (from, to) = if self.raise {
            (small, big)
        } else {
            (big, small)
        };
        if maps.1.dims() != from || weight.1.shape().elem_count() != g.weight_len() {
            candle_core::bail!(
                "convolution: maps {:?} and weight {:?} do not fit {g:?}",
                maps.1.dims(),
                weight.1.dims()
            );
        }
        let (x, w) = (contiguous(maps.0, maps.1)?, contiguous(weight.0, weight.1)?);
        let y = if self.raise {
            g.raise(x, w, n)
        } else {
            g.lower(x, w, n)
        };
        Ok((CpuStorage::F32(y), Shape::from(to.to_vec())))
    }
}

impl CustomOp2 for Convolution {
    fn name(&self) -> &'static str {
        if self.transposed {
            "kusari-conv-transpose2d"
        } else {
            "kusari-conv2d"
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        dims4(l1, "a convolution's input")?;
        let geometry = self.geometry(l1.dims(), l2.dims())?;
        let raise = self.transposed;
        Fixed { geometry, raise }.run((s1, l1), (s2, l2))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let geometry = self.geometry(x.dims(), w.dims())?;
        let grad = grad.contiguous()?;
        let back = Fixed {
            geometry,
            raise: !self.transposed,
        };
        // Real images into D's first layer need no gradient, nor do weights
        // inside `input_gradients_only`.
        let grad_x = if x.track_op() {
            Some(super::gradient_op2(&grad, w, back)?)
        } else {
            None
        };
        let grad_w = match weight_gradient(w) {
            WeightGradient::Skip => None,
            WeightGradient::Zeros => Some(w.zeros_like()?),
            WeightGradient::Compute if self.transposed => {
                Some(super::gradient_op2(x, &grad, WeightGrad(geometry))?)
            }
            WeightGradient::Compute => Some(super::gradient_op2(&grad, x, WeightGrad(geometry))?),
        };
        Ok((grad_x, grad_w))
    }
}

impl CustomOp2 for Fixed {
    fn name(&self) -> &'static str {
        "kusari-conv-input-grad"
    }

    refuse_second_order!(2);

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run((s1, l1), (s2, l2))
    }
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "kusari-conv-weight-grad"
    }

    refuse_second_order!(2);

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (n, ..) = dims4(l1, "the small maps")?;
        let expect_small = [n, g.small_channels, g.small_height, g.small_width];
        let expect_big = [n, g.big_channels, g.big_height, g.big_width];
        if l1.dims() != expect_small || l2.dims() != expect_big {
            candle_core::bail!(
                "conv weight gradient: maps {:?} and {:?} do not fit {g:?}",
                l1.dims(),
                l2.dims()
            );
        }
        let dw = g.weight_grad(contiguous(s1, l1)?, contiguous(s2, l2)?, n);
        let shape = Shape::from((g.small_channels, g.big_channels, g.kernel, g.kernel));
        Ok((CpuStorage::F32(dw), shape))
    }
}

/// `y [N, C, …] + b [C]` per channel, differentiable in both.
struct AddChannelBias;
/// `[N, C, …]` → `[C]`: the sum over everything but the channel (its own
/// gradient is refused).
struct ChannelSum;

fn channel_blocks(layout: &Layout) -> candle_core::Result<(usize, usize, usize)> {
    let dims = layout.dims();
    if dims.len() < 2 {
        candle_core::bail!("per-channel values need [N, C, …], got {dims:?}");
    }
    let (n, c) = (dims[0], dims[1]);
    Ok((n, c, dims[2..].iter().product()))
}

impl CustomOp2 for AddChannelBias {
    fn name(&self) -> &'static str {
        "kusari-add-channel-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, c, plane) = channel_blocks(l1)?;
        let (y, b) = (contiguous(s1, l1)?, contiguous(s2, l2)?);
        if b.len() != c {
            candle_core::bail!("a bias of {} values for {c} channels", b.len());
        }
        let mut out = y.to_vec();
        if plane > 0 {
            out.par_chunks_mut(c * plane).for_each(|sample| {
                for (maps, &bias) in sample.chunks_mut(plane).zip(b) {
                    maps.iter_mut().for_each(|v| *v += bias);
                }
            });
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _y: &Tensor,
        b: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_b = match weight_gradient(b) {
            WeightGradient::Skip => None,
            WeightGradient::Zeros => Some(b.zeros_like()?),
            WeightGradient::Compute => Some(super::gradient_op1(grad, ChannelSum)?),
        };
        Ok((Some(grad.clone()), grad_b))
    }
}

impl candle_core::CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "kusari-channel-sum"
    }

    refuse_second_order!(1);

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, c, plane) = channel_blocks(l)?;
        let x = contiguous(s, l)?;
        let mut sums = vec![0f32; c];
        if plane > 0 {
            for sample in x.chunks(c * plane) {
                for (sum, maps) in sums.iter_mut().zip(sample.chunks(plane)) {
                    *sum += maps.iter().sum::<f32>();
                }
            }
        }
        Ok((CpuStorage::F32(sums), Shape::from(c)))
    }
}

/// `y + b` with `b [C]` broadcast over `y [N, C, …]`, for f32 CPU tensors, differentiable.
pub fn add_channel_bias(y: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    y.contiguous()?.apply_op2(&b.contiguous()?, AddChannelBias)
}

/// `x.conv2d(w, padding, stride, 1, 1)` for f32 CPU tensors, differentiable.
pub fn conv2d(x: &Tensor, w: &Tensor, window: Window) -> candle_core::Result<Tensor> {
    let op = Convolution {
        window,
        transposed: false,
    };
    x.contiguous()?.apply_op2(&w.contiguous()?, op)
}

/// `x.conv_transpose2d(w, padding, 0, stride, 1)` for f32 CPU tensors, differentiable.
pub fn deconv2d(x: &Tensor, w: &Tensor, window: Window) -> candle_core::Result<Tensor> {
    let op = Convolution {
        window,
        transposed: true,
    };
    x.contiguous()?.apply_op2(&w.contiguous()?, op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use kusari_trainer::Rng;

    type Candle = fn(&Tensor, &Tensor, Window) -> candle_core::Result<Tensor>;

    fn candle_conv(x: &Tensor, w: &Tensor, g: Window) -> candle_core::Result<Tensor> {
        x.conv2d(w, g.padding, g.stride, 1, 1)
    }

    fn candle_deconv(x: &Tensor, w: &Tensor, g: Window) -> candle_core::Result<Tensor> {
        x.conv_transpose2d(w, g.padding, 0, g.stride, 1)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b)
            .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
            .expect("difference")
    }

    /// Forward and both gradients of `ours` against `theirs` on random operands.
    fn agrees(ours: Candle, theirs: Candle, x_shape: &[usize], w_shape: &[usize], g: Window) {
        let dev = Device::Cpu;
        let mut rng = Rng::new(17);
        let x = Var::from_tensor(&rng.normal_tensor(x_shape, 0.0, 1.0, &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&rng.normal_tensor(w_shape, 0.0, 0.3, &dev).unwrap()).unwrap();
        let want = theirs(x.as_tensor(), w.as_tensor(), g).unwrap();
        let got = ours(x.as_tensor(), w.as_tensor(), g).unwrap();
        assert!(max_diff(&got, &want) < 1e-4, "forward differs");
        let r = rng.normal_tensor(want.shape(), 0.0, 1.0, &dev).unwrap();
        let grads = |y: Tensor| (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let (gw, gg) = (grads(want), grads(got));
        for (what, v) in [("input", &x), ("weight", &w)] {
            let (a, b) = (
                gg.get(v).expect("our gradient"),
                gw.get(v).expect("candle's"),
            );
            let scale = b
                .abs()
                .unwrap()
                .max_keepdim(0)
                .unwrap()
                .flatten_all()
                .unwrap();
            let scale = scale.max(0).unwrap().to_scalar::<f32>().unwrap().max(1.0);
            assert!(
                max_diff(a, b) < 1e-5 * scale * 10.0,
                "{what} gradient differs by {}",
                max_diff(a, b)
            );
        }
    }

    const HALVE: Window = Window {
        kernel: 4,
        stride: 2,
        padding: 1,
    };
    const SAME: Window = Window {
        kernel: 3,
        stride: 1,
        padding: 1,
    };

    #[test]
    fn convolution_matches_candle_with_gradients() {
        // 9 samples: two weight-gradient blocks, the second partial.
        agrees(conv2d, candle_conv, &[9, 3, 14, 14], &[5, 3, 4, 4], HALVE);
        agrees(conv2d, candle_conv, &[2, 2, 7, 5], &[3, 2, 3, 3], SAME);
        let wide_steps = Window {
            kernel: 2,
            stride: 3,
            padding: 0,
        };
        agrees(
            conv2d,
            candle_conv,
            &[2, 2, 8, 11],
            &[3, 2, 2, 2],
            wide_steps,
        );
    }

    #[test]
    fn input_gradient_has_the_input_shape_when_the_stride_skips_rows() {
        // 9 → 3 positions at stride 3 with kernel 2: the last row and column feed nothing.
        let window = Window {
            kernel: 2,
            stride: 3,
            padding: 0,
        };
        let dev = Device::Cpu;
        let x =
            Var::from_tensor(&Tensor::ones((1, 1, 9, 9), candle_core::DType::F32, &dev).unwrap())
                .unwrap();
        let w = Tensor::ones((1, 1, 2, 2), candle_core::DType::F32, &dev).unwrap();
        let grads = conv2d(x.as_tensor(), &w, window)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g: Vec<Vec<f32>> = grads
            .get(&x)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2()
            .unwrap();
        for (i, row) in g.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let fed = i % 3 < 2 && j % 3 < 2;
                assert_eq!(v, if fed { 1.0 } else { 0.0 }, "at ({i}, {j})");
            }
        }
    }

    #[test]
    fn transposed_convolution_matches_candle_with_gradients() {
        agrees(deconv2d, candle_deconv, &[9, 5, 7, 7], &[5, 3, 4, 4], HALVE);
        agrees(deconv2d, candle_deconv, &[2, 3, 5, 6], &[3, 2, 3, 3], SAME);
    }

    #[test]
    fn channel_bias_matches_a_broadcast_add_with_gradients() {
        let dev = Device::Cpu;
        let mut rng = Rng::new(4);
        let y =
            Var::from_tensor(&rng.normal_tensor((3, 4, 5, 2), 0.0, 1.0, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&rng.normal_tensor(4, 0.0, 1.0, &dev).unwrap()).unwrap();
        let r = rng.normal_tensor((3, 4, 5, 2), 0.0, 1.0, &dev).unwrap();
        let theirs = y.broadcast_add(&b.reshape((1, 4, 1, 1)).unwrap()).unwrap();
        let ours = add_channel_bias(&y, &b).unwrap();
        assert!(max_diff(&ours, &theirs) < 1e-6);
        let grads = |t: Tensor| (t * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let (gt, go) = (grads(theirs), grads(ours));
        for v in [&y, &b] {
            assert!(max_diff(go.get(v).unwrap(), gt.get(v).unwrap()) < 1e-5);
        }
    }

    fn uniform(rng: &mut Rng, len: usize) -> Vec<f32> {
        let mut v = vec![0f32; len];
        rng.fill_uniform(&mut v, -1.0, 1.0);
        v
    }

    #[test]
    fn raise_is_the_transpose_of_lower() {
        // <lower(b), s> = <b, raise(s)> for any b, s.
        let g = Lowering::of_conv((2, 6, 5), 3, 3, 2, 1).expect("fits");
        let mut rng = Rng::new(3);
        let n = 2;
        let mut draw = |len: usize| uniform(&mut rng, len);
        let (big, small, w) = (
            draw(n * g.big_len()),
            draw(n * g.small_len()),
            draw(g.weight_len()),
        );
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let left = dot(&g.lower(&big, &w, n), &small);
        let right = dot(&big, &g.raise(&small, &w, n));
        assert!(
            (left - right).abs() < 1e-4 * left.abs().max(1.0),
            "{left} vs {right}"
        );
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let g = Lowering::of_conv((3, 14, 14), 4, 4, 2, 1).expect("fits");
        let mut rng = Rng::new(9);
        let n = 19;
        let mut draw = |len: usize| uniform(&mut rng, len);
        let (big, small) = (draw(n * g.big_len()), draw(n * g.small_len()));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            pool.install(|| g.weight_grad(&small, &big, n))
        };
        assert_eq!(run(1), run(3));
    }

    /// Gathering one sample's patches and adding them back, for the `fast`
    /// preset's convolutions
    /// (best of batches, hot caches):
    /// `cargo test --release -p kusari-models patch_gather_timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn patch_gather_timing() {
        use std::time::Instant;
        let fast = [
            (
                "D conv 1→8, 28→14",
                Lowering::of_conv((1, 28, 28), 8, 4, 2, 1),
            ),
            (
                "D conv 8→16, 14→7",
                Lowering::of_conv((8, 14, 14), 16, 4, 2, 1),
            ),
            (
                "G deconv 64→32, 7→14",
                Lowering::of_deconv((64, 7, 7), 32, 4, 2, 1),
            ),
            (
                "G deconv 32→1, 14→28",
                Lowering::of_deconv((32, 14, 14), 1, 4, 2, 1),
            ),
            (
                "3×3 stride 1, 16 ch, 14×14",
                Lowering::of_conv((16, 14, 14), 16, 3, 1, 1),
            ),
        ];
        let mut rng = Rng::new(5);
        for (name, g) in fast {
            let g = g.expect("fits");
            let big = uniform(&mut rng, g.big_len());
            let mut cols = vec![0f32; g.patch_len() * g.small_plane()];
            let reps = 200;
            let best_of = |run: &mut dyn FnMut()| {
                (0..50)
                    .map(|_| {
                        let t = Instant::now();
                        for _ in 0..reps {
                            run();
                        }
                        t.elapsed().as_secs_f64() / reps as f64
                    })
                    .fold(f64::MAX, f64::min)
            };
            let gather = best_of(&mut || g.gather(std::hint::black_box(&big), &mut cols));
            let mut sums = big.clone();
            let add = best_of(&mut || g.scatter_add(std::hint::black_box(&cols), &mut sums));
            println!(
                "{name:28} gather {:6.2} µs, add back {:6.2} µs",
                gather * 1e6,
                add * 1e6
            );
        }
    }

    #[test]
    fn shapes_that_do_not_fit_are_refused() {
        assert!(Lowering::of_conv((1, 2, 2), 1, 5, 1, 0).is_none());
        assert!(Lowering::of_deconv((1, 1, 1), 1, 2, 1, 1).is_none());
        let x = Tensor::zeros((1, 2, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((3, 5, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = conv2d(&x, &w, HALVE).unwrap_err().to_string();
        assert!(err.contains("does not fit"), "{err}");
    }
}
