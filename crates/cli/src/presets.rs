//! The `fast` preset: the EBGAN configuration that reaches the best FID after
//! ten minutes of training on a 2-core CPU (see docs/results/presets.md for
//! how it was chosen and what it reaches).

use kusari_models::{Arch, Config};

/// Turns the seed configuration in `model` into the fast one.
pub fn apply_fast(model: &mut Config, arch: Arch) {
    match arch {
        Arch::Mlp => {
            model.model.gen.units = 1024;
            model.model.dis.units = 256;
        }
        Arch::Conv => {
            model.model.gen.units = 32;
            model.model.dis.units = 32;
        }
    }
}
