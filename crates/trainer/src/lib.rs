//! # kusari-trainer
//!
//! A Chainer-style training loop for [Candle](https://github.com/huggingface/candle):
//! a [`Trainer`] runs an [`Updater`] once per iteration, the [`reporter`]
//! collects named values from anywhere inside it, and [`Extension`]s fire on
//! [`Trigger`]s to log, plot, evaluate and snapshot. Several optimizers per
//! update are first-class, and every piece of state — parameters, optimizer
//! moments, iterator position and RNG, trigger and extension state — goes
//! into a snapshot, so a resumed run continues exactly.
//!
//! This crate knows nothing of GANs; `kusari-models` builds GAN and EBGAN on it.
//!
//! ```
//! use std::sync::Arc;
//! use anyhow::Result;
//! use candle_core::{Device, Tensor};
//! use kusari_trainer::prelude::*;
//!
//! # fn main() -> Result<()> {
//! // 64 examples of y = 3x; fit w in y = w x.
//! let xs: Vec<f32> = (0..64).map(|i| i as f32 / 64.0).collect();
//! let dataset = ArrayDataset::new(xs, &[1], None)?;
//! let iterator = SerialIterator::new(Arc::new(dataset), 16, true, 0)?;
//!
//! let params = ParamStore::new();
//! let w = params.parameter("w", Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu)?)?;
//! let optimizer = Adam::new(params.parameters(), AdamConfig { lr: 0.1, ..Default::default() })?;
//!
//! let core = move |batch: Batch, ctx: &mut UpdateContext<'_>| -> Result<()> {
//!     let x = batch.values.flatten_all()?;
//!     let loss = (x.broadcast_mul(&w)? - (&x * 3.0)?)?.sqr()?.mean_all()?;
//!     report("main/loss", &loss)?;
//!     ctx.optimizers.get_mut("main")?.backward_step(&loss)
//! };
//! let updater = StandardUpdater::new(iterator, ConcatExamples, Device::Cpu, core)
//!     .with_model("main", params.clone())
//!     .with_optimizer("main", optimizer);
//!
//! let out = std::env::temp_dir().join("kusari-doc-example");
//! let mut trainer = Trainer::new(updater, IntervalTrigger::epochs(20.0), &out);
//! trainer.handle_signals(false);
//! trainer.extend(make_extension("print", IntervalTrigger::epochs(10.0), Priority::READER, |ctx| {
//!     let loss = ctx.observation().scalar("main/loss")?.unwrap_or(f64::NAN);
//!     println!("epoch {} loss {loss:.5}", ctx.epoch());
//!     Ok(())
//! }));
//! trainer.run()?;
//! assert_eq!(trainer.updater().iteration(), 80);
//! # Ok(())
//! # }
//! ```

pub mod converter;
pub mod dataset;
pub mod datasets;
pub mod device;
pub mod extension;
pub mod extensions;
pub mod fsutil;
pub mod interrupt;
pub mod iterator;
pub mod optim;
pub mod params;
pub mod reporter;
pub mod rng;
pub mod run_lock;
pub mod state;
pub mod trainer;
pub mod trigger;
pub mod updater;

pub use converter::{Batch, ConcatExamples, Converter};
pub use dataset::{ArrayDataset, Dataset, Example};
pub use device::{parse_device, DeviceSpec};
pub use extension::{make_extension, Context, Ending, Extension, FnExtension, Priority};
pub use iterator::{IteratorState, LastBatch, SerialIterator};
pub use optim::{
    Adam, AdamConfig, AdamStep, ElementState, ElementStep, HostOptimizer, Optimizer, Optimizers,
    RmsProp, RmsPropConfig, RmsPropStep, Sgd,
};
pub use params::{ParamKind, ParamStore};
pub use reporter::{report, Observation};
pub use rng::{Rng, RngState};
pub use run_lock::RunLock;
pub use state::State;
pub use trainer::Trainer;
pub use trigger::{
    AllOf, AnyOf, BestValueTrigger, EarlyStoppingTrigger, IntervalTrigger, ManualScheduleTrigger,
    Mode, OnceTrigger, RunLength, Status, TimeTrigger, Trigger, Unit,
};
pub use updater::{Models, StandardUpdater, UpdateContext, UpdateCore, Updater};

/// Everything a training script usually needs.
pub mod prelude {
    pub use crate::converter::{Batch, ConcatExamples, Converter};
    pub use crate::dataset::{ArrayDataset, Dataset, Example};
    pub use crate::extension::{make_extension, Context, Ending, Extension, Priority};
    pub use crate::iterator::{LastBatch, SerialIterator};
    pub use crate::optim::{Adam, AdamConfig, Optimizer, Optimizers, RmsProp, RmsPropConfig, Sgd};
    pub use crate::params::ParamStore;
    pub use crate::reporter::{report, with_prefix};
    pub use crate::rng::Rng;
    pub use crate::trainer::Trainer;
    pub use crate::trigger::{IntervalTrigger, Trigger, Unit};
    pub use crate::updater::{StandardUpdater, UpdateContext, UpdateCore, Updater};
}
