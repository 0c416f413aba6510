//! Trainer extensions for adversarial runs: the per-epoch image grids
//! ([`GeneratedImages`], [`ReconstructedImages`]) and [`StandardExtensions`],
//! everything `kusari train` gives a run in one call.

mod images;
mod standard;

pub use images::{GeneratedImages, ReconstructedImages, FIXED_NOISE_STREAM};
pub use standard::StandardExtensions;
