//! [`Evaluator`]: the trainer extension that judges a generator's samples
//! during training and reports `eval/is`, `eval/fid` and
//! `eval/min_class_share`.

use std::sync::Arc;

use anyhow::{ensure, Context as _, Result};
use candle_core::Tensor;
use kusari_trainer::{report, Context, Extension, IntervalTrigger, Priority, Trigger};

use super::evaluate::{evaluate, EvalReport};
use super::judge::Judge;
use super::metrics::FeatureStats;

/// Produces `n` samples `[n, 1, 28, 28]` in `[-1, 1]`: typically the
/// generator in evaluation mode, drawing its noise from a fixed seed so that
/// every evaluation sees the same latent points.
pub type SampleSource = Box<dyn FnMut(usize) -> Result<Tensor> + Send>;

/// Samples judged per evaluation unless told otherwise (`--eval-samples`).
pub const DEFAULT_EVAL_SAMPLES: usize = 10_000;

/// Judges samples when its trigger fires (by default every epoch) and
/// reports the scores for the log.
///
/// It runs with [`Priority::WRITER`], so readers such as the log see the
/// values in the same iteration.
pub struct Evaluator {
    sample: SampleSource,
    judge: Judge,
    reference: Arc<FeatureStats>,
    samples: usize,
    trigger: Option<Box<dyn Trigger>>,
    last: Option<EvalReport>,
}

impl Evaluator {
    /// An evaluator of the samples `sample` produces, judged by `judge`
    /// against `reference` (usually [`Judge::test_stats`]).
    pub fn new(sample: SampleSource, judge: Judge, reference: Arc<FeatureStats>) -> Self {
        Self {
            sample,
            judge,
            reference,
            samples: DEFAULT_EVAL_SAMPLES,
            trigger: None,
            last: None,
        }
    }

    /// Judges `n` samples per evaluation (`--eval-samples`; at least 2).
    pub fn with_samples(mut self, n: usize) -> Result<Self> {
        ensure!(n >= 2, "--eval-samples must be at least 2, got {n}");
        self.samples = n;
        Ok(self)
    }

    /// Evaluates every `epochs` epochs (`--eval-every`).
    pub fn every_epochs(mut self, epochs: f64) -> Result<Self> {
        let trigger = IntervalTrigger::checked(epochs, kusari_trainer::Unit::Epoch)
            .context("--eval-every")?;
        self.trigger = Some(Box::new(trigger));
        Ok(self)
    }

    /// The most recent evaluation, if any has run.
    pub fn last_report(&self) -> Option<&EvalReport> {
        self.last.as_ref()
    }

    /// Draws the samples and judges them, without reporting.
    pub fn run_once(&mut self) -> Result<EvalReport> {
        let images = (self.sample)(self.samples).context("drawing samples to evaluate")?;
        ensure!(
            images.dim(0)? == self.samples,
            "the sample source was asked for {} samples but returned {:?}",
            self.samples,
            images.dims()
        );
        let result = evaluate(&self.judge, &images, &self.reference)?;
        self.last = Some(result.clone());
        Ok(result)
    }
}

impl Extension for Evaluator {
    /// Judging the model is not training it: time limits and curves over
    /// training time leave it out.
    fn counts_as_training_time(&self) -> bool {
        false
    }

    fn name(&self) -> String {
        "evaluator".to_string()
    }

    fn default_trigger(&mut self) -> Box<dyn Trigger> {
        self.trigger
            .take()
            .unwrap_or_else(|| Box::new(IntervalTrigger::epochs(1.0)))
    }

    fn priority(&self) -> Priority {
        Priority::WRITER
    }

    fn call(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        let result = self.run_once()?;
        report("eval/is", result.inception_score)?;
        report("eval/fid", result.fid)?;
        report("eval/min_class_share", result.min_class_share)?;
        tracing::info!(
            epoch = ctx.epoch(),
            is = result.inception_score,
            fid = result.fid,
            min_class_share = result.min_class_share,
            "evaluated {} samples",
            result.samples
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use kusari_trainer::prelude::*;
    use kusari_trainer::Unit;

    use super::*;
    use crate::eval::lenet::IMAGE_SIDE;

    /// `n` smooth random 28×28 "images" in [-1, 1].
    fn fake_images(n: usize, seed: u64) -> Result<Tensor> {
        let mut rng = Rng::new(seed);
        let noise = rng.uniform_tensor(
            (n, 1, IMAGE_SIDE, IMAGE_SIDE),
            -1.0,
            1.0,
            &candle_core::Device::Cpu,
        )?;
        Ok(noise)
    }

    #[test]
    fn reports_scores_that_readers_see_in_the_same_iteration() -> Result<()> {
        let judge = Judge::untrained(3)?;
        let reference_images = fake_images(64, 1)?;
        let (features, _) = judge.classify(&reference_images)?;
        let reference = Arc::new(FeatureStats::from_tensor(&features)?);

        // The "generator" returns the reference images themselves, so FID ≈ 0.
        let calls = Arc::new(Mutex::new(0usize));
        let counter = calls.clone();
        let source: SampleSource = Box::new(move |n| {
            *counter.lock().unwrap() += 1;
            Ok(reference_images.narrow(0, 0, n)?)
        });
        let evaluator = Evaluator::new(source, judge, reference)
            .with_samples(64)?
            .every_epochs(2.0)?;

        let data = ArrayDataset::new(vec![0.0; 8], &[1], None)?;
        let iterator = SerialIterator::new(Arc::new(data), 4, false, 0)?;
        let noop = |_: Batch, _: &mut UpdateContext<'_>| -> Result<()> { Ok(()) };
        let updater =
            StandardUpdater::new(iterator, ConcatExamples, candle_core::Device::Cpu, noop);
        let out = tempfile::tempdir()?;
        let mut trainer = Trainer::new(updater, IntervalTrigger::epochs(4.0), out.path());
        trainer.handle_signals(false);
        trainer.extend(evaluator);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        trainer.extend(make_extension(
            "reader",
            IntervalTrigger::new(1.0, Unit::Iteration),
            Priority::READER,
            move |ctx| {
                let o = ctx.observation();
                if let Some(fid) = o.scalar("eval/fid")? {
                    let is = o.scalar("eval/is")?.unwrap_or(f64::NAN);
                    let share = o.scalar("eval/min_class_share")?.unwrap_or(f64::NAN);
                    log.lock().unwrap().push((ctx.iteration(), is, fid, share));
                }
                Ok(())
            },
        ));
        trainer.run()?;

        let seen = seen.lock().unwrap().clone();
        // Two iterations per epoch; every 2 epochs is iterations 4 and 8.
        assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), vec![4, 8]);
        assert_eq!(*calls.lock().unwrap(), 2);
        for (_, is, fid, share) in seen {
            assert!((1.0..=10.0).contains(&is), "IS {is}");
            assert!(fid.abs() < 1e-3, "FID of the reference itself: {fid}");
            assert!((0.0..=1.0).contains(&share), "share {share}");
        }
        Ok(())
    }

    #[test]
    fn bad_settings_and_bad_samples_are_errors() -> Result<()> {
        let judge = Judge::untrained(3)?;
        let reference = Arc::new(FeatureStats::from_features(&[0.0, 1.0, 1.0, 0.0], 2)?);
        let make = |f: SampleSource| Evaluator::new(f, judge.clone(), reference.clone());
        assert!(make(Box::new(|n| fake_images(n, 0)))
            .with_samples(1)
            .is_err());
        assert!(make(Box::new(|n| fake_images(n, 0)))
            .every_epochs(0.0)
            .is_err());

        let mut short = make(Box::new(|_| fake_images(3, 0))).with_samples(4)?;
        let err = short.run_once().unwrap_err().to_string();
        assert!(err.contains("asked for 4 samples"), "{err}");

        let mut nan = make(Box::new(|n| Ok((fake_images(n, 0)? * f64::NAN)?))).with_samples(4)?;
        let err = format!("{:#}", nan.run_once().unwrap_err());
        assert!(err.contains("NaN"), "{err}");

        let mut wrong = make(Box::new(|n| {
            Ok(Tensor::zeros(
                (n, 1, 32, 32),
                candle_core::DType::F32,
                &candle_core::Device::Cpu,
            )?)
        }))
        .with_samples(4)?;
        let err = format!("{:#}", wrong.run_once().unwrap_err());
        assert!(err.contains("[N, 1, 28, 28]"), "{err}");

        // The reference here has dimension 2, the judge's features 128.
        let mut mismatched = make(Box::new(|n| fake_images(n, 0))).with_samples(4)?;
        assert!(mismatched.run_once().is_err());
        Ok(())
    }
}
