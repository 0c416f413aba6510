//! The sample-quality judge: an MNIST classifier and the numbers computed
//! from its outputs — Inception Score, FID and per-class shares.

pub mod eigen;
pub mod metrics;

pub use eigen::{symmetric_eigen, SymmetricEigen};
pub use metrics::{class_shares, fid, inception_score, FeatureStats};
