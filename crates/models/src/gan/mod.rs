//! GAN (Goodfellow et al. 2014) with the seed's labels: D calls real
//! images 0 and fakes 1; G wants its fakes called 0.

mod loss;
mod updater;

pub use loss::sigmoid_cross_entropy;
pub use updater::{GanLosses, GanUpdater};
