//! The fused step's view of the nets: the MLP stacks as dense blocks, and
//! the batch-norm strategies as row groups of the stacked `[real; fake]`.

use crate::config::BnStrategy;
use crate::kernels::batch_norm::BnGroup;
use crate::kernels::dense::{BnVars, DenseBlock, SpectralVars};
use crate::kernels::Activation;
use crate::layers::Layer;
use crate::nets::stack::Stack;

/// The blocks of an MLP stack, or `None` when it holds anything else
/// (convolutions, or stages in another order).
pub fn blocks_of(stack: &Stack) -> Option<Vec<DenseBlock>> {
    let mut blocks: Vec<DenseBlock> = Vec::new();
    // 0: right after a Linear, 1: after BatchNorm, 2: after dropout, 3: after the activation.
    let mut stage = 3;
    for layer in stack.layers() {
        match layer {
            Layer::Linear(l) => {
                let dims = l.weight().dims();
                if dims.len() != 2 {
                    return None;
                }
                blocks.push(DenseBlock {
                    weight: l.weight().clone(),
                    bias: l.bias().clone(),
                    inputs: dims[0],
                    outputs: dims[1],
                    bn: None,
                    dropout: 0.0,
                    act: Activation::Identity,
                    spectral: l.spectral_norm().map(|sn| {
                        let (u, v) = sn.vectors();
                        SpectralVars {
                            u: u.clone(),
                            v: v.clone(),
                        }
                    }),
                });
                stage = 0;
            }
            Layer::BatchNorm(b) if stage == 0 => {
                let [gamma, beta, avg_mean, avg_var] = b.vars();
                blocks.last_mut()?.bn = Some(BnVars {
                    gamma: gamma.clone(),
                    beta: beta.clone(),
                    avg_mean: avg_mean.clone(),
                    avg_var: avg_var.clone(),
                    eps: b.eps() as f32,
                    decay: b.decay(),
                });
                stage = 1;
            }
            Layer::Dropout(ratio) if stage <= 1 => {
                blocks.last_mut()?.dropout = *ratio;
                stage = 2;
            }
            Layer::Activation(a) if stage <= 2 => {
                blocks.last_mut()?.act = *a;
                stage = 3;
            }
            // The MLP nets flatten and unflatten images; rows stay rows.
            Layer::Reshape(_) => {}
            _ => return None,
        }
    }
    let chained = blocks.windows(2).all(|w| w[0].outputs == w[1].inputs);
    (chained && !blocks.is_empty()).then_some(blocks)
}

/// The groups for D's `[real; fake]` stack of two batches of `n` rows, in
/// the order their running statistics are updated.
pub fn pair_groups(strategy: BnStrategy, n: usize) -> Vec<BnGroup> {
    match strategy {
        BnStrategy::Separate => vec![
            BnGroup {
                stats: 0..n,
                applied: 0..n,
            },
            BnGroup {
                stats: n..2 * n,
                applied: n..2 * n,
            },
        ],
        BnStrategy::Joint => vec![BnGroup {
            stats: 0..2 * n,
            applied: 0..2 * n,
        }],
        BnStrategy::RealStats => vec![BnGroup {
            stats: 0..n,
            applied: 0..2 * n,
        }],
    }
}
