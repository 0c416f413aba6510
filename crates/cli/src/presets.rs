//! The `fast` preset: the EBGAN configuration with the best FID we measured
//! after ten minutes of training on a 2-core CPU. docs/results/presets.md
//! records what it and the seed reach in that time, with the commands, and
//! what was tried.

use kusari_models::{Arch, Config};

/// Turns the seed configuration in `model` into the fast one.
///
/// MLP: the seed's recipe (z-dim 3, identity output, D's dropout 0.5,
/// margin 10, PT 0.1, Adam 1e-3/β1 0.5, batch 100) at G 4×512 and D 4×256,
/// where the fast CPU step trains ≈ 25 epochs in ten minutes instead of the
/// seed's ≈ 3. Of what was tried (docs/results/presets.md), wider z, tanh
/// output, no dropout, margin 1 and a smaller step all judged worse.
/// Conv: narrow nets (32 base channels), not yet measured.
pub fn apply_fast(model: &mut Config, arch: Arch) {
    match arch {
        Arch::Mlp => {
            model.model.gen.units = 512;
            model.model.dis.units = 256;
        }
        Arch::Conv => {
            model.model.gen.units = 32;
            model.model.dis.units = 32;
        }
    }
}
