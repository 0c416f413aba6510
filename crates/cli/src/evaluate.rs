//! Sample quality: `kusari eval`, `kusari train-classifier`, and the
//! Evaluator that `kusari train --eval-every N` adds to a run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::Tensor;
use kusari_models::eval::{
    evaluate, read_npy_images, train_judge_with, Evaluator, Judge, JudgeTraining,
};
use kusari_models::{Generator, Phase};
use kusari_trainer::datasets::{mnist, PixelRange, Split};
use kusari_trainer::{Rng, Trainer, Updater};

use crate::args::{EvalArgs, TrainClassifierArgs};
use crate::config::RunConfig;

/// G's output as the judge must see it: the 8-bit images `kusari sample`
/// would save, in `[−1, 1]`. An identity-output G strays outside the pixel
/// range; judging the raw values would score pixels nobody sees (and disagree
/// with `kusari sample` followed by `kusari eval`).
fn as_saved_images(images: &Tensor, range: PixelRange) -> Result<Tensor> {
    let judged = PixelRange::MinusOneOne;
    let values: Vec<f32> = images
        .flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(|v| judged.to_f32(range.to_u8(v)))
        .collect();
    Ok(Tensor::from_vec(values, images.shape(), images.device())?)
}

/// The noise of the Evaluator's samples comes from this stream of the run's seed.
const EVAL_STREAM: &str = "eval/z";

/// The MNIST folder (`--data-dir`, `$MNIST_DIR`, or `data/mnist`, downloaded
/// there if absent), checked to hold both splits.
fn mnist_folder(explicit: Option<&Path>) -> Result<PathBuf> {
    mnist::load_or_download(explicit, Split::Test)?;
    Ok(mnist::resolve_dir(explicit).path().to_path_buf())
}

/// `kusari eval --samples FILE.npy`: Inception Score, FID and class shares.
pub fn run_eval(args: &EvalArgs) -> Result<()> {
    let samples = read_npy_images(&args.samples)?;
    let dir = mnist_folder(args.data_dir.as_deref())?;
    let judge = Judge::load_or_train(&dir)?;
    let reference = judge.test_stats(&dir)?;
    let report = evaluate(&judge, &samples, &reference)?;
    println!("{report}");
    println!(
        "{}",
        serde_json::json!({
            "samples": report.samples,
            "eval/is": report.inception_score,
            "eval/fid": report.fid,
            "eval/min_class_share": report.min_class_share,
            "class_shares": report.class_shares,
        })
    );
    Ok(())
}

/// `kusari train-classifier`: trains the judge and caches it.
pub fn run_train_classifier(args: &TrainClassifierArgs) -> Result<()> {
    let dir = mnist_folder(args.data_dir.as_deref())?;
    let path = Judge::cache_path()?;
    let training = JudgeTraining {
        epochs: args.epochs,
        seed: args.seed,
        ..JudgeTraining::default()
    };
    let (mut judge, accuracy) = train_judge_with(&dir, &training)?;
    judge.save(&path)?;
    println!(
        "test accuracy {:.2}% after {} epochs; saved to {}",
        accuracy * 100.0,
        args.epochs,
        path.display()
    );
    if accuracy < 0.99 {
        eprintln!("warning: below the 99.0% the metrics assume; train longer with --epochs");
    }
    Ok(())
}

/// Adds the Evaluator: every `--eval-every` epochs, `--eval-samples` images
/// from `gen` (G, or the average of its weights; evaluation mode, fixed
/// noise) are judged and `eval/is`, `eval/fid`, `eval/min_class_share` go
/// into the log.
pub fn add_evaluator<U: Updater + 'static>(
    trainer: &mut Trainer<U>,
    config: &RunConfig,
    gen: &Generator,
) -> Result<()> {
    let dir = mnist_folder(config.data.data_dir.as_deref())?;
    let judge = Judge::load_or_train(&dir).context("preparing the judge for --eval-every")?;
    let reference = Arc::new(judge.test_stats(&dir)?);
    let gen = gen.clone();
    let seed = config.seed;
    let range = config.data.pixel_range;
    let sample = Box::new(move |n: usize| -> Result<Tensor> {
        let mut rng = Rng::derived(seed, EVAL_STREAM);
        let mut parts = Vec::new();
        let mut done = 0;
        while done < n {
            let m = (n - done).min(1000);
            let z = gen.sample_z(m, &mut rng)?;
            parts.push(gen.forward(&z, &mut Phase::Eval)?);
            done += m;
        }
        let images = Tensor::cat(&parts, 0)?;
        as_saved_images(&images, range)
    });
    let evaluator = Evaluator::new(sample, judge, reference)
        .with_samples(config.eval_samples)?
        .every_epochs(config.eval_every_epochs)?;
    trainer.extend(evaluator);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_judge_sees_the_saved_8_bit_images() -> Result<()> {
        let raw = Tensor::new(&[[-3.0f32, -1.0, 0.0, 0.5, 1.0, 7.0]], &Device::Cpu)?;
        let judged = as_saved_images(&raw, PixelRange::MinusOneOne)?.to_vec2::<f32>()?;
        let expected = [
            -1.0,
            -1.0,
            128.0 / 255.0 * 2.0 - 1.0,
            191.0 / 255.0 * 2.0 - 1.0,
            1.0,
            1.0,
        ];
        for (got, want) in judged[0].iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        // A sigmoid G's [0, 1] images are judged in [−1, 1].
        let unit = Tensor::new(&[[0.0f32, 1.0, 2.0]], &Device::Cpu)?;
        let judged = as_saved_images(&unit, PixelRange::ZeroOne)?.to_vec2::<f32>()?;
        assert_eq!(judged[0], vec![-1.0, 1.0, 1.0]);
        Ok(())
    }
}
