//! EBGAN (Zhao, Mathieu & LeCun 2016): D is an auto-encoder whose
//! reconstruction error is the energy; D pushes real energies down and fake
//! energies up to a margin, G pulls its samples' energy down, and the
//! pull-away term keeps G's samples apart.

mod energy;
pub mod pull_away;
mod updater;

pub use energy::energy;
pub use pull_away::pull_away;
pub use updater::{EbganLosses, EbganUpdater};
