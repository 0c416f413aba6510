//! The `fast` preset: the EBGAN configuration with the best FID we measured
//! after ten minutes of training on a 2-core CPU. docs/results/presets.md
//! records what was measured, with the commands, and what is left to try.

use kusari_models::{Arch, Config, Objective};

/// Turns the seed configuration in `model` into the fast one.
///
/// MLP: two hidden layers in each net, G 2×1024 / D 2×256, z-dim 64, no
/// dropout in D and margin 1; the seed's recipe otherwise (identity output,
/// separate batch norm, PT weight 0.1, Adam 1e-3 / β1 0.5, batch 100),
/// stopped after ten minutes (the preset's time limit). Of the ten
/// configurations trained for ten minutes (docs/results/presets.md) it judged
/// best: FID 379 ± 31 and IS 6.5 over three seeds, every digit present,
/// where the seed's configuration judged FID 790, IS 4.6, three digits
/// missing.
/// Conv: narrow nets (32 base channels), not yet measured.
pub fn apply_fast(model: &mut Config, arch: Arch) {
    match arch {
        Arch::Mlp => {
            let nets = &mut model.model;
            nets.gen.layers = 2;
            nets.dis.layers = 2;
            nets.gen.units = 1024;
            nets.dis.units = 256;
            nets.z_dim = 64;
            nets.dis.dropout = 0.0;
            if let Objective::Ebgan(ebgan) = &mut model.objective {
                ebgan.margin = 1.0;
            }
        }
        Arch::Conv => {
            model.model.gen.units = 32;
            model.model.dis.units = 32;
        }
    }
}

#[cfg(test)]
mod tests {
    use kusari_models::{Arch, Objective};
    use kusari_trainer::datasets::PixelRange;

    use crate::args::{DatasetKind, ModelKind, Preset};
    use crate::config::{DataConfig, RunConfig};

    fn preset(preset: Preset) -> RunConfig {
        let data = DataConfig {
            dataset: DatasetKind::Mnist,
            data_dir: None,
            image_size: 64,
            pixel_range: PixelRange::MinusOneOne,
        };
        RunConfig::preset(ModelKind::Ebgan, preset, Arch::Mlp, &data)
    }

    #[test]
    fn fast_is_the_measured_configuration_with_a_ten_minute_limit() {
        let (fast, seed) = (preset(Preset::Fast), preset(Preset::Seed));
        let nets = &fast.model.model;
        assert_eq!((nets.gen.units, nets.dis.units), (1024, 256));
        assert_eq!((nets.gen.layers, nets.dis.layers), (2, 2));
        assert_eq!(nets.z_dim, 64);
        assert_eq!(nets.dis.dropout, 0.0);
        let Objective::Ebgan(ebgan) = fast.model.objective else {
            panic!("EBGAN expected")
        };
        assert_eq!(ebgan.margin, 1.0);
        assert_eq!(fast.length.time_limit_seconds, Some(600.0));
        assert_eq!(fast.length.epochs, None);
        // Everything else is the seed's recipe.
        assert_eq!(fast.model.batch_size, seed.model.batch_size);
        assert_eq!(fast.model.gen_adam, seed.model.gen_adam);
        assert_eq!(nets.gen.output, seed.model.model.gen.output);
        assert_eq!(nets.dis.batch_norm, seed.model.model.dis.batch_norm);
    }
}
