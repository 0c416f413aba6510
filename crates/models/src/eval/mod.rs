//! The sample-quality judge: an MNIST classifier and the numbers computed
//! from its outputs.
//!
//! - [`Judge`]: a LeNet-style classifier trained once to ≥ 99% MNIST test
//!   accuracy and cached (see [`Judge::cache_path`]); [`Judge::load_or_train`]
//!   trains it on first use.
//! - [`evaluate()`]: Inception Score, FID against the MNIST test set's
//!   features ([`Judge::test_stats`]) and the per-class share of samples.
//! - [`Evaluator`]: the trainer extension reporting `eval/is`, `eval/fid`
//!   and `eval/min_class_share`.
//! - [`read_npy_images`]: samples saved as `uint8` `.npy` files.
//!
//! See `docs/evaluation.md` for what the numbers mean and the real-data baseline.

pub mod eigen;
pub mod evaluate;
pub mod extension;
pub mod judge;
pub mod lenet;
pub mod metrics;
pub mod npy;
pub mod train;

pub use eigen::{symmetric_eigen, SymmetricEigen};
pub use evaluate::{evaluate, real_baseline, EvalReport};
pub use extension::{Evaluator, SampleSource, DEFAULT_EVAL_SAMPLES};
pub use judge::{cache_dir, Judge, JudgeInfo, JUDGE_FILE};
pub use lenet::{CLASSES, FEATURES, IMAGE_SIDE};
pub use metrics::{class_shares, fid, inception_score, FeatureStats};
pub use npy::read_npy_images;
pub use train::{accuracy, train_judge, train_judge_with, JudgeTraining};
