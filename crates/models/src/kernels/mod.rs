//! kusari's CPU kernels for f32: what makes a training step fast on a CPU.
//!
//! - Matrix products ([`matmul`]): small-matrix kernels for AVX-512 and for
//!   AVX2 that give the same bits (or the `gemm` crate without AVX2), on
//!   fixed blocks split over rayon's threads; [`simd`] picks the path.
//! - Fully connected blocks ([`dense`]): Linear, BatchNorm, dropout and an
//!   activation fused column by column, forward and the elementwise part of
//!   the backward pass, on preallocated buffers.
//! - The weight gradient of a Linear computed tile by tile and handed at once
//!   to an element-wise optimizer ([`weight_update`]), so the full gradient
//!   is never stored.
//! - candle custom ops with their gradients, which the candle-ops layers use
//!   on f32 CPU tensors: convolutions ([`conv`]: patch products, gathered
//!   a strided window at a time), fully connected layers ([`affine`]),
//!   training-mode BatchNorm ([`channel_norm`]) and activations
//!   ([`activation`]); and [`input_gradients_only`], a scope in which those
//!   ops skip their weights' gradients.
//! - [`in_own_pool`], the rayon pool a training step runs in; [`tally`], a
//!   count of the products the custom ops ran, for the benchmark.
//!
//! The kernels know tensors, slices and shapes only: no nets, no
//! configurations. Sums run over fixed blocks whose sizes depend only on
//! the shapes, so results repeat bit for bit whatever the thread count.

/// The `bwd` of a kernel's gradient op, a custom op of 1, 2 or 3 operands:
/// it refuses to be differentiated ([`second_order_error`]).
macro_rules! refuse_second_order {
    (1) => {
        fn bwd(
            &self,
            _: &candle_core::Tensor,
            _: &candle_core::Tensor,
            _: &candle_core::Tensor,
        ) -> candle_core::Result<Option<candle_core::Tensor>> {
            $crate::kernels::second_order_error()
        }
    };
    (2) => {
        fn bwd(
            &self,
            _: &candle_core::Tensor,
            _: &candle_core::Tensor,
            _: &candle_core::Tensor,
            _: &candle_core::Tensor,
        ) -> candle_core::Result<(Option<candle_core::Tensor>, Option<candle_core::Tensor>)> {
            $crate::kernels::second_order_error()
        }
    };
    (3) => {
        #[allow(clippy::type_complexity)]
        fn bwd(
            &self,
            _: &candle_core::Tensor,
            _: &candle_core::Tensor,
            _: &candle_core::Tensor,
            _: &candle_core::Tensor,
            _: &candle_core::Tensor,
        ) -> candle_core::Result<(
            Option<candle_core::Tensor>,
            Option<candle_core::Tensor>,
            Option<candle_core::Tensor>,
        )> {
            $crate::kernels::second_order_error()
        }
    };
}

pub(crate) mod activation;
pub(crate) mod affine;
pub(crate) mod batch_norm;
pub(crate) mod channel_norm;
pub(crate) mod columns;
pub(crate) mod conv;
pub(crate) mod dense;
mod grad_scope;
pub(crate) mod matmul;
mod pool;
pub(crate) mod simd;
mod small_gemm;
mod small_gemm512;
pub(crate) mod spectral;
pub(crate) mod storage;
mod strided;
pub mod tally;
#[cfg(test)]
pub(crate) mod testing;
pub(crate) mod weight_update;

pub use activation::Activation;
pub use grad_scope::input_gradients_only;
pub use pool::in_own_pool;

/// Whether the CPU kernels behind the candle-ops layers (convolutions,
/// BatchNorm, activations) can run on `x`: an f32 tensor on the CPU.
pub fn cpu_kernels_apply(x: &candle_core::Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32
}

/// The error of a kernel's gradient op asked for its own gradient: the
/// custom ops' backward passes build no graph, so a second derivative
/// through them would be silently wrong, and they refuse it instead.
pub(crate) fn second_order_error<T>() -> candle_core::Result<T> {
    Err(candle_core::Error::Msg(NO_SECOND_ORDER.to_string()).bt())
}

/// Whether candle keeps the graphs of the gradients it computes
/// (`CANDLE_GRAD_DO_NOT_DETACH` set to something other than `0`), read once
/// as candle reads it. Without it candle detaches every gradient, so no
/// second derivative can be asked of a kernel's gradient op.
fn gradients_keep_graphs() -> bool {
    static KEEP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *KEEP.get_or_init(|| {
        std::env::var("CANDLE_GRAD_DO_NOT_DETACH").is_ok_and(|s| !s.is_empty() && s != "0")
    })
}

/// Applies a kernel's gradient op to `(a, b, c)`: recorded in the graph (so
/// that differentiating through it fails loudly) when candle keeps
/// gradients' graphs, else without a graph, since candle would detach the
/// result anyway and the record would only keep its operands alive.
pub(crate) fn gradient_op3(
    a: &candle_core::Tensor,
    b: &candle_core::Tensor,
    c: &candle_core::Tensor,
    op: impl candle_core::CustomOp3 + Send + Sync + 'static,
) -> candle_core::Result<candle_core::Tensor> {
    if gradients_keep_graphs() {
        a.apply_op3(b, c, op)
    } else {
        a.apply_op3_no_bwd(b, c, &op)
    }
}

/// [`gradient_op3`] for two operands.
pub(crate) fn gradient_op2(
    a: &candle_core::Tensor,
    b: &candle_core::Tensor,
    op: impl candle_core::CustomOp2 + Send + Sync + 'static,
) -> candle_core::Result<candle_core::Tensor> {
    if gradients_keep_graphs() {
        a.apply_op2(b, op)
    } else {
        a.apply_op2_no_bwd(b, &op)
    }
}

/// [`gradient_op3`] for one operand.
pub(crate) fn gradient_op1(
    a: &candle_core::Tensor,
    op: impl candle_core::CustomOp1 + Send + Sync + 'static,
) -> candle_core::Result<candle_core::Tensor> {
    if gradients_keep_graphs() {
        a.apply_op1(op)
    } else {
        a.apply_op1_no_bwd(&op)
    }
}

/// The message of every error that asks for a gradient of a gradient.
pub const NO_SECOND_ORDER: &str = "gradients of gradients are not supported: kusari's CPU \
    kernels and its training step compute gradients without a graph of their own, so a loss \
    that differentiates through a gradient (a gradient penalty such as WGAN-GP's or R1) cannot \
    train; constrain D with spectral normalization instead (`--spectral-norm`, \
    `DisConfig::spectral_norm`), or weight clipping (`--clip-dis`)";
