//! The `fast` preset: the EBGAN configuration with the best FID we measured
//! after ten minutes of training on a 2-core CPU. docs/results/presets.md
//! records what was measured, with the commands, and what is left to try.

use kusari_models::{Arch, Config};

use crate::args::Preset;

/// The nets a preset trains when `--arch` is not given: `fast` the conv
/// nets, which judged better after ten minutes than every MLP tried.
pub fn default_arch(preset: Preset) -> Arch {
    match preset {
        Preset::Seed => Arch::Mlp,
        Preset::Fast => Arch::Conv,
    }
}

/// Turns the seed configuration in `model` into the fast one.
///
/// Both architectures: no dropout in D and margin 1; the seed's recipe
/// otherwise (the family's output activation — identity for the MLP, tanh
/// for conv — separate batch norm, PT weight 0.1, Adam 1e-3 / β1 0.5,
/// batch 100 for the MLP), stopped after ten minutes (the preset's time limit).
///
/// - Conv (the default): z-dim 6, G 32 base channels, D 8 with a 64-value
///   code, batch 50, and a moving average of G's weights (decay 0.999, which
///   the samples and evaluations use). After ten minutes it judged best of
///   everything measured: FID 18.9 ± 1.7 and IS 9.12 ± 0.04 over four seeds
///   on the Intel Xeon development VM. A smaller z judged better down to 6
///   (z-dim 8, 16 and 64: FID 25.0, 30.0 and 61.7) and a worse FID below it;
///   a narrow D is cheap, so G trains more iterations
///   (docs/results/presets.md has every run).
/// - MLP (`--arch mlp`): z-dim 64, two hidden layers in each net, G 2×1024 /
///   D 2×256, the best MLP measured: FID 379 ± 31 and IS 6.5 over three
///   seeds, where the seed's configuration judged FID 790, IS 4.6.
///
/// The nets' part is `Config::make_fast`, which the benchmarks share.
pub fn apply_fast(model: &mut Config, arch: Arch) {
    model.make_fast(arch);
}

/// The moving average of G's weights `fast` keeps (`--gen-ema`): for the
/// conv nets, where it was measured, 0.999.
pub fn fast_gen_ema(arch: Arch) -> Option<f64> {
    match arch {
        Arch::Mlp => None,
        Arch::Conv => Some(0.999),
    }
}

#[cfg(test)]
mod tests {
    use super::default_arch;
    use kusari_models::{Arch, ObjectiveConfig};

    use crate::args::Preset;
    use crate::config::RunConfig;

    fn preset(preset: Preset, arch: Arch) -> RunConfig {
        RunConfig::mnist_preset(preset, arch)
    }

    /// Everything but the nets' shape, z and the batch is the seed's recipe, with
    /// no dropout and margin 1, for ten minutes.
    fn assert_fast_recipe(fast: &RunConfig, seed: &RunConfig) {
        let nets = &fast.model.model;
        assert_eq!(nets.dis.dropout, 0.0);
        let ObjectiveConfig::Ebgan(ebgan) = fast.model.objective else {
            panic!("EBGAN expected")
        };
        assert_eq!(ebgan.margin, 1.0);
        assert_eq!(fast.length.time_limit_seconds, Some(600.0));
        assert_eq!(fast.length.epochs, None);
        assert_eq!(fast.model.gen_optimizer, seed.model.gen_optimizer);
        assert_eq!(nets.gen.output, seed.model.model.gen.output);
        assert_eq!(nets.dis.batch_norm, seed.model.model.dis.batch_norm);
    }

    #[test]
    fn fast_is_the_measured_configuration_with_a_ten_minute_limit() {
        assert_eq!(default_arch(Preset::Fast), Arch::Conv);
        assert_eq!(default_arch(Preset::Seed), Arch::Mlp);
        let fast = preset(Preset::Fast, Arch::Conv);
        assert_fast_recipe(&fast, &preset(Preset::Seed, Arch::Conv));
        let nets = &fast.model.model;
        assert_eq!(nets.arch, Arch::Conv);
        assert_eq!(nets.z_dim, 6);
        assert_eq!((nets.gen.units, nets.dis.units), (32, 8));
        assert_eq!(nets.dis.code_dim, 64);
        assert_eq!(fast.model.batch_size, 50);
        assert_eq!(fast.gen_ema, Some(0.999));
    }

    #[test]
    fn fast_mlp_is_the_best_measured_mlp() {
        let fast = preset(Preset::Fast, Arch::Mlp);
        assert_fast_recipe(&fast, &preset(Preset::Seed, Arch::Mlp));
        let nets = &fast.model.model;
        assert_eq!(nets.z_dim, 64);
        assert_eq!((nets.gen.units, nets.dis.units), (1024, 256));
        assert_eq!((nets.gen.layers, nets.dis.layers), (2, 2));
        assert_eq!(fast.model.batch_size, 100);
        assert_eq!(fast.gen_ema, None);
    }
}
