//! Training the judge with kusari's own machinery: a shuffling
//! [`SerialIterator`], a [`StandardUpdater`] around a small [`UpdateCore`],
//! [`Adam`], and a [`Trainer`] with a per-epoch test-accuracy extension.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, ensure, Context as _, Result};
use candle_core::{Device, Tensor};
pub use kusari_trainer::datasets::mnist::Split;
use kusari_trainer::datasets::{mnist, PixelRange};
use kusari_trainer::prelude::*;
use kusari_trainer::{ArrayDataset, Ending, RngState, State};

use super::judge::{Judge, JudgeInfo};
use super::lenet::{LeNet, CLASSES, IMAGE_SIDE};

/// How the judge is trained. The defaults reach ≥ 99.0% MNIST test accuracy.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeTraining {
    /// Passes over the training images.
    pub epochs: usize,
    /// Seed of initialization, shuffling and dropout.
    pub seed: u64,
    /// Images per update.
    pub batch_size: usize,
    /// Adam's step size in the first epoch.
    pub lr: f64,
    /// The step size is multiplied by this after every epoch.
    pub lr_decay: f64,
    /// Print the test accuracy after every epoch (to stderr).
    pub verbose: bool,
    /// Train on only the first this many training images (quick tests).
    pub train_limit: Option<usize>,
    /// Measure accuracy on only the first this many test images (quick tests).
    pub test_limit: Option<usize>,
}

/// Epochs the cached judge is trained for.
pub const DEFAULT_EPOCHS: usize = 5;
/// Seed of the cached judge.
pub const DEFAULT_SEED: u64 = 0;

impl Default for JudgeTraining {
    fn default() -> Self {
        Self {
            epochs: DEFAULT_EPOCHS,
            seed: DEFAULT_SEED,
            batch_size: 50,
            lr: 1e-3,
            lr_decay: 0.7,
            verbose: true,
            train_limit: None,
            test_limit: None,
        }
    }
}

/// Trains the judge on the MNIST training set in `mnist_dir` (the four
/// standard `.gz` IDX files) and returns it with its test-set accuracy.
pub fn train_judge(mnist_dir: &Path, epochs: usize, seed: u64) -> Result<(Judge, f64)> {
    let training = JudgeTraining {
        epochs,
        seed,
        ..Default::default()
    };
    train_judge_with(mnist_dir, &training)
}

/// [`train_judge`] with every setting of the recipe.
pub fn train_judge_with(mnist_dir: &Path, training: &JudgeTraining) -> Result<(Judge, f64)> {
    let mut train = load_split(mnist_dir, Split::Train)?;
    let mut test = load_split(mnist_dir, Split::Test)?;
    if let Some(n) = training.train_limit {
        train = train.take(n);
    }
    if let Some(n) = training.test_limit {
        test = test.take(n);
    }
    train_judge_on(&train, &test, training)
}

/// One MNIST split as examples `[1, 28, 28]` in `[-1, 1]` with labels.
pub fn load_split(mnist_dir: &Path, split: Split) -> Result<ArrayDataset> {
    mnist::load(mnist_dir, split)
        .with_context(|| format!("loading MNIST for the judge from {}", mnist_dir.display()))?
        .to_dataset(PixelRange::MinusOneOne)
}

/// Shared between the update rule and the progress extension.
#[derive(Debug, Default)]
struct Running {
    loss_sum: f64,
    correct: usize,
    seen: usize,
}

/// One update: cross-entropy on a batch, with dropout drawn from a seeded [`Rng`].
struct JudgeUpdate {
    net: LeNet,
    dropout: Rng,
    lr: f64,
    lr_decay: f64,
    iterations_per_epoch: u64,
    running: Arc<Mutex<Running>>,
}

impl UpdateCore<Batch> for JudgeUpdate {
    fn update_core(&mut self, batch: Batch, ctx: &mut UpdateContext<'_>) -> Result<()> {
        let size = batch.len();
        let labels = batch
            .labels
            .context("the judge's training examples need labels")?;
        let epoch = (ctx.iteration - 1) / self.iterations_per_epoch;
        let features = self.net.features(&batch.values, true)?;
        let logits = self.net.logits(&features, Some(&mut self.dropout))?;
        let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
        let optimizer = ctx.optimizers.get_mut("main")?;
        optimizer.set_learning_rate(self.lr * self.lr_decay.powi(epoch as i32));
        optimizer.backward_step(&loss)?;

        let loss_value = f64::from(loss.to_scalar::<f32>()?);
        let predicted = logits.argmax(1)?;
        let correct = predicted
            .eq(&labels)?
            .to_dtype(candle_core::DType::F32)?
            .sum_all()?
            .to_scalar::<f32>()? as usize;
        report("main/loss", loss_value)?;
        report("main/accuracy", correct as f64 / size as f64)?;
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.loss_sum += loss_value * size as f64;
        running.correct += correct;
        running.seen += size;
        Ok(())
    }

    fn state(&self) -> Result<State> {
        let mut state = State::new();
        state.put("dropout", &self.dropout.state())?;
        Ok(state)
    }

    fn load_state(&mut self, state: &State) -> Result<()> {
        self.dropout = Rng::from_state(state.get::<RngState>("dropout")?);
        Ok(())
    }
}

/// The fraction of `dataset`'s examples the judge labels correctly.
pub fn accuracy(judge: &Judge, dataset: &ArrayDataset) -> Result<f64> {
    let labels = dataset
        .labels()
        .context("measuring accuracy needs a labelled dataset")?;
    let images = images_of(dataset, judge.device())?;
    let (_, probs) = judge.classify(&images)?;
    let predicted = probs.argmax(1)?.to_vec1::<u32>()?;
    let correct = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
    Ok(correct as f64 / labels.len() as f64)
}

/// Checks that a dataset holds the judge's 1×28×28 images.
fn check_image_shape(dataset: &ArrayDataset) -> Result<()> {
    ensure!(
        dataset.example_shape() == [1, IMAGE_SIDE, IMAGE_SIDE],
        "the judge takes 1×28×28 images, but the dataset's examples are {:?}",
        dataset.example_shape()
    );
    Ok(())
}

/// All of a dataset's examples as one `[N, 1, 28, 28]` tensor.
pub fn images_of(dataset: &ArrayDataset, device: &Device) -> Result<Tensor> {
    check_image_shape(dataset)?;
    let n = dataset.len();
    Ok(Tensor::from_slice(
        dataset.all_values(),
        (n, 1, IMAGE_SIDE, IMAGE_SIDE),
        device,
    )?)
}

/// Trains a judge on `train` and measures its accuracy on `test` (both
/// `[1, 28, 28]` examples in `[-1, 1]`, labelled 0..10).
pub fn train_judge_on(
    train: &ArrayDataset,
    test: &ArrayDataset,
    config: &JudgeTraining,
) -> Result<(Judge, f64)> {
    ensure!(
        config.epochs > 0,
        "the judge needs at least one epoch of training"
    );
    check_image_shape(train)?;
    check_image_shape(test)?;
    let labels = train
        .labels()
        .context("the judge's training set needs labels")?;
    if let Some(bad) = labels.iter().find(|&&l| l as usize >= CLASSES) {
        bail!("the judge classifies digits 0..{CLASSES}, but a training label is {bad}");
    }
    let device = Device::Cpu;
    let started = Instant::now();
    let params = ParamStore::new();
    let mut init = Rng::derived(config.seed, "judge/init");
    let net = LeNet::new(&params, &mut init, &device)?;
    let info = JudgeInfo::new(config.epochs, config.seed);
    let judge = Judge::from_parts(params.clone(), net.clone(), info);

    let iterator = SerialIterator::new(
        Arc::new(train.clone()),
        config.batch_size,
        true,
        config.seed,
    )?;
    let iterations_per_epoch = iterator.batches_per_epoch().ceil() as u64;
    let running = Arc::new(Mutex::new(Running::default()));
    let core = JudgeUpdate {
        net,
        dropout: Rng::derived(config.seed, "judge/dropout"),
        lr: config.lr,
        lr_decay: config.lr_decay,
        iterations_per_epoch,
        running: running.clone(),
    };
    let optimizer = Adam::new(
        params.parameters(),
        AdamConfig {
            lr: config.lr,
            ..Default::default()
        },
    )?;
    let updater = StandardUpdater::new(iterator, ConcatExamples, device.clone(), core)
        .with_model("judge", params)
        .with_optimizer("main", optimizer);

    let out = std::env::temp_dir().join(format!("kusari-judge-training-{}", std::process::id()));
    let mut trainer = Trainer::new(updater, IntervalTrigger::epochs(config.epochs as f64), &out);
    let (progress_judge, progress_test, verbose, epochs) =
        (judge.clone(), test.clone(), config.verbose, config.epochs);
    trainer.extend(make_extension(
        "judge_progress",
        IntervalTrigger::epochs(1.0),
        Priority::READER,
        move |ctx| {
            let mut r = running.lock().unwrap_or_else(|e| e.into_inner());
            let seen = r.seen.max(1) as f64;
            let (loss, train_acc) = (r.loss_sum / seen, r.correct as f64 / seen);
            *r = Running::default();
            drop(r);
            if verbose {
                let test_acc = accuracy(&progress_judge, &progress_test)?;
                eprintln!(
                    "judge: epoch {}/{epochs}: train loss {loss:.4}, train accuracy {train_acc:.4}, \
                     test accuracy {test_acc:.4} ({:.0} s)",
                    ctx.epoch(),
                    ctx.elapsed().as_secs_f64()
                );
            }
            Ok(())
        },
    ));
    let ending = trainer.run();
    let _ = std::fs::remove_dir_all(&out);
    match ending.context("training the MNIST judge")? {
        Ending::Completed => {}
        other => bail!("training the MNIST judge stopped early ({other:?}); nothing was saved"),
    }

    let test_accuracy = accuracy(&judge, test)?;
    let mut judge = judge;
    judge.info.test_accuracy = test_accuracy;
    judge.info.train_seconds = started.elapsed().as_secs_f64();
    Ok((judge, test_accuracy))
}

impl Judge {
    /// The cached judge; when there is none yet, trains one on the MNIST
    /// in `mnist_dir` (saying so on stderr, since it takes minutes) and
    /// caches it for every later run.
    pub fn load_or_train(mnist_dir: &Path) -> Result<Self> {
        Self::load_or_train_at(&Self::cache_path()?, mnist_dir, &JudgeTraining::default())
    }

    /// [`Judge::load_or_train`] with an explicit weights file and training recipe.
    pub fn load_or_train_at(
        path: &Path,
        mnist_dir: &Path,
        training: &JudgeTraining,
    ) -> Result<Self> {
        if path.exists() {
            return Self::load(path);
        }
        eprintln!(
            "kusari: no MNIST judge at {}; training one now on {} ({} epochs of 2–3 minutes \
             each on a 2-core CPU; only this once)",
            path.display(),
            mnist_dir.display(),
            training.epochs
        );
        tracing::info!(path = %path.display(), "training the MNIST judge on first use");
        let (mut judge, accuracy) = train_judge_with(mnist_dir, training)?;
        if accuracy < 0.99 {
            eprintln!(
                "kusari: warning: the judge reached only {:.2}% test accuracy (expected ≥ 99.0%)",
                accuracy * 100.0
            );
        }
        judge.save(path)?;
        eprintln!(
            "kusari: judge trained in {:.0} s, test accuracy {:.2}%, saved to {}",
            judge.info().train_seconds,
            accuracy * 100.0,
            path.display()
        );
        Ok(judge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two synthetic "digits": a bright left half (label 0) or right half
    /// (label 7), with noise.
    fn halves(n: usize, seed: u64) -> Result<ArrayDataset> {
        let mut rng = Rng::new(seed);
        let mut values = Vec::with_capacity(n * 784);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let left = i % 2 == 0;
            labels.push(if left { 0 } else { 7 });
            for _ in 0..28 {
                for x in 0..28 {
                    let on = (x < 14) == left;
                    let base = if on { 0.6 } else { -0.8 };
                    values.push(base + 0.4 * (rng.next_f32() - 0.5));
                }
            }
        }
        ArrayDataset::new(values, &[1, 28, 28], Some(labels))
    }

    fn quick() -> JudgeTraining {
        JudgeTraining {
            epochs: 2,
            batch_size: 50,
            verbose: false,
            ..Default::default()
        }
    }

    #[test]
    fn learns_a_separable_toy_task() -> Result<()> {
        let (judge, acc) = train_judge_on(&halves(200, 1)?, &halves(100, 2)?, &quick())?;
        assert!(acc > 0.95, "accuracy {acc}");
        assert_eq!(judge.info().test_accuracy, acc);
        assert_eq!(judge.info().epochs, 2);
        // Same seed, same judge.
        let (again, _) = train_judge_on(&halves(200, 1)?, &halves(100, 2)?, &quick())?;
        assert_eq!(again.fingerprint()?, judge.fingerprint()?);
        Ok(())
    }

    #[test]
    fn rejects_bad_training_data() -> Result<()> {
        let unlabelled = ArrayDataset::new(vec![0.0; 784 * 100], &[1, 28, 28], None)?;
        let err = train_judge_on(&unlabelled, &halves(10, 2)?, &quick())
            .unwrap_err()
            .to_string();
        assert!(err.contains("labels"), "{err}");
        let big_label = ArrayDataset::new(vec![0.0; 784 * 100], &[1, 28, 28], Some(vec![10; 100]))?;
        let err = train_judge_on(&big_label, &halves(10, 2)?, &quick())
            .unwrap_err()
            .to_string();
        assert!(err.contains("digits 0..10"), "{err}");
        let wrong_shape = ArrayDataset::new(vec![0.0; 100 * 16], &[1, 4, 4], Some(vec![0; 100]))?;
        let err = train_judge_on(&halves(100, 1)?, &wrong_shape, &quick())
            .unwrap_err()
            .to_string();
        assert!(err.contains("1×28×28"), "{err}");
        Ok(())
    }

    /// Quick check on real MNIST: one short epoch on a subset already
    /// classifies digits well; the result is saved, reloaded and used.
    #[test]
    fn learns_real_mnist_quickly() -> Result<()> {
        let Some(dir) = std::env::var_os("MNIST_DIR") else {
            eprintln!("skipped: MNIST_DIR is not set");
            return Ok(());
        };
        let dir = std::path::PathBuf::from(dir);
        let cache = tempfile::tempdir()?;
        let path = cache.path().join(super::super::judge::JUDGE_FILE);
        let training = JudgeTraining {
            epochs: 1,
            train_limit: Some(6_000),
            test_limit: Some(1_000),
            verbose: false,
            ..Default::default()
        };
        let started = Instant::now();
        let judge = Judge::load_or_train_at(&path, &dir, &training)?;
        let acc = judge.info().test_accuracy;
        eprintln!(
            "quick judge: {acc:.4} test accuracy in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        assert!(acc > 0.90, "accuracy {acc} after one short epoch");
        assert!(path.exists() && path.with_extension("json").exists());

        let reloaded = Judge::load_or_train_at(&path, &dir, &training)?;
        assert_eq!(reloaded.fingerprint()?, judge.fingerprint()?);
        let test = load_split(&dir, Split::Test)?.take(300);
        let (features, probs) = reloaded.classify(&images_of(&test, reloaded.device())?)?;
        assert_eq!(features.dims(), &[300, super::super::lenet::FEATURES]);
        assert_eq!(probs.dims(), &[300, CLASSES]);
        assert!(accuracy(&reloaded, &test)? > 0.85);

        let stats = reloaded.test_stats(&dir)?;
        assert_eq!(
            (stats.count, stats.dim),
            (10_000, super::super::lenet::FEATURES)
        );
        assert!(path.with_extension("test-stats.json").exists());
        Ok(())
    }
}
