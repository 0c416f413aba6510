//! The `fast` preset: the EBGAN configuration with the best FID we measured
//! after ten minutes of training on a 2-core CPU. docs/results/presets.md
//! records what was measured, with the commands, and what is left to try.

use kusari_models::{Arch, Config};

/// Turns the seed configuration in `model` into the fast one.
///
/// MLP: the seed's nets and recipe, stopped after ten minutes (the preset's
/// time limit). Of the MLP configurations measured, the seed's G 4×3200 /
/// D 4×1024 judged best after ten minutes (FID 790, about 2,400 iterations
/// with the fast CPU step); G 4×1600 / D 4×512 and G 4×512 / D 4×256 trained
/// three and twelve times as many iterations and judged worse (FID 1274 and
/// 994), and wider z, tanh output, no
/// dropout, margin 1 or a smaller step judged no better at 512/256.
/// Conv: narrow nets (32 base channels), not yet measured.
pub fn apply_fast(model: &mut Config, arch: Arch) {
    if let Arch::Conv = arch {
        model.model.gen.units = 32;
        model.model.dis.units = 32;
    }
}
