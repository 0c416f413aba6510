use std::any::{Any, TypeId};

use anyhow::{bail, Context, Result};
use candle_core::Device;

use super::{Models, Updater};
use crate::converter::Converter;
use crate::dataset::Dataset;
use crate::iterator::{IteratorState, SerialIterator};
use crate::optim::Optimizers;
use crate::state::State;

/// Where an [`UpdateContext`] takes further batches from: the updater's
/// iterator and converter, type-erased.
pub type BatchSource<'a> = dyn FnMut() -> Result<Box<dyn Any>> + 'a;

/// What an [`UpdateCore`] sees besides its batch.
pub struct UpdateContext<'a> {
    /// The iteration being computed (1 for the first update).
    pub iteration: u64,
    pub device: &'a Device,
    pub models: &'a Models,
    pub optimizers: &'a mut Optimizers,
    batches: Option<(&'a mut BatchSource<'a>, TypeId, &'static str)>,
}

impl<'a> UpdateContext<'a> {
    /// A context without further batches (as a test that calls an
    /// [`UpdateCore`] directly builds it).
    pub fn new(
        iteration: u64,
        device: &'a Device,
        models: &'a Models,
        optimizers: &'a mut Optimizers,
    ) -> Self {
        Self {
            iteration,
            device,
            models,
            optimizers,
            batches: None,
        }
    }

    /// The same context, drawing [`UpdateContext::next_batch`] from
    /// `source`, whose boxes hold batches of type `B`.
    pub fn with_batches<B: 'static>(mut self, source: &'a mut BatchSource<'a>) -> Self {
        self.batches = Some((source, TypeId::of::<B>(), std::any::type_name::<B>()));
        self
    }

    /// One more batch from the updater's iterator, for a rule that uses
    /// several per iteration (K discriminator steps, each on a new real
    /// batch, as WGAN's critic takes them). Epochs count every batch drawn.
    /// `B` is the batch type of the updater's converter.
    pub fn next_batch<B: 'static>(&mut self) -> Result<B> {
        let (source, batch_type, batch_name) = self
            .batches
            .as_mut()
            .context("this update context has no iterator to draw further batches from")?;
        if TypeId::of::<B>() != *batch_type {
            bail!(
                "a batch of type {} was asked for, but the updater's converter makes {batch_name}",
                std::any::type_name::<B>()
            );
        }
        let batch = source()?;
        batch
            .downcast::<B>()
            .map(|b| *b)
            .map_err(|_| anyhow::anyhow!("the batch source gave another type than {batch_name}"))
    }
}

/// The part of an updater a researcher writes: what one batch does.
///
/// This is Chainer's `update_core`. Report values with
/// [`crate::reporter::report`]; step optimizers through `ctx.optimizers`.
pub trait UpdateCore<B>: Send {
    fn update_core(&mut self, batch: B, ctx: &mut UpdateContext<'_>) -> Result<()>;

    /// State of the update rule itself (a noise RNG, say) for snapshots.
    fn state(&self) -> Result<State> {
        Ok(State::new())
    }

    fn load_state(&mut self, _state: &State) -> Result<()> {
        Ok(())
    }

    /// Batches one update draws (with [`UpdateContext::next_batch`]), for
    /// the updater's estimate of iterations per epoch.
    fn batches_per_update(&self) -> usize {
        1
    }
}

impl<B, F> UpdateCore<B> for F
where
    F: FnMut(B, &mut UpdateContext<'_>) -> Result<()> + Send,
{
    fn update_core(&mut self, batch: B, ctx: &mut UpdateContext<'_>) -> Result<()> {
        self(batch, ctx)
    }
}

/// The updater most training uses: takes the next batch from its iterator,
/// converts it onto the device and hands it to the [`UpdateCore`].
///
/// The trainer's iteration advances once per update however many optimizers
/// the core steps (and however many batches it draws with
/// [`UpdateContext::next_batch`]); each optimizer counts its own steps.
pub struct StandardUpdater<D, C, K>
where
    D: Dataset,
    C: Converter<D::Example>,
    K: UpdateCore<C::Batch>,
{
    iterator: SerialIterator<D>,
    converter: C,
    device: Device,
    models: Models,
    optimizers: Optimizers,
    core: K,
    iteration: u64,
    /// `epoch_detail` before the last update and whether it completed an
    /// epoch: the iterator knows only its last batch, and an update may draw several.
    last_update: Option<UpdateSpan>,
}

/// Where the last update started and whether it crossed an epoch's end.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
struct UpdateSpan {
    epoch_detail_before: f64,
    new_epoch: bool,
}

impl<D, C, K> StandardUpdater<D, C, K>
where
    D: Dataset,
    C: Converter<D::Example>,
    K: UpdateCore<C::Batch>,
{
    pub fn new(iterator: SerialIterator<D>, converter: C, device: Device, core: K) -> Self {
        Self {
            iterator,
            converter,
            device,
            models: Models::new(),
            optimizers: Optimizers::new(),
            core,
            iteration: 0,
            last_update: None,
        }
    }

    /// Registers a model whose parameters and buffers snapshots keep.
    pub fn with_model(mut self, name: &str, params: crate::params::ParamStore) -> Self {
        self.models.insert(name, params);
        self
    }

    /// Registers an optimizer the core can step by name.
    pub fn with_optimizer(
        mut self,
        name: &str,
        optimizer: impl crate::optim::Optimizer + 'static,
    ) -> Self {
        self.optimizers.insert(name, optimizer);
        self
    }

    pub fn iterator(&self) -> &SerialIterator<D> {
        &self.iterator
    }

    pub fn models(&self) -> &Models {
        &self.models
    }

    pub fn optimizers(&self) -> &Optimizers {
        &self.optimizers
    }

    pub fn optimizers_mut(&mut self) -> &mut Optimizers {
        &mut self.optimizers
    }

    pub fn core(&self) -> &K {
        &self.core
    }

    pub fn core_mut(&mut self) -> &mut K {
        &mut self.core
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
}

impl<D, C, K> Updater for StandardUpdater<D, C, K>
where
    D: Dataset,
    D::Example: Send,
    C: Converter<D::Example>,
    C::Batch: 'static,
    K: UpdateCore<C::Batch>,
{
    fn update(&mut self) -> Result<()> {
        let Some(examples) = self.iterator.next_batch()? else {
            bail!("the training iterator is exhausted; training iterators must repeat");
        };
        let before = self
            .iterator
            .previous_epoch_detail()
            .unwrap_or_else(|| self.iterator.epoch_detail());
        let epoch_before = self.iterator.epoch() - u64::from(self.iterator.is_new_epoch());
        let batch = self.converter.convert(&examples, &self.device)?;
        let (iterator, converter, device) = (&mut self.iterator, &self.converter, &self.device);
        let mut more = || -> Result<Box<dyn Any>> {
            let examples = iterator
                .next_batch()?
                .context("the training iterator is exhausted; training iterators must repeat")?;
            Ok(Box::new(converter.convert(&examples, device)?))
        };
        let mut ctx = UpdateContext::new(
            self.iteration + 1,
            &self.device,
            &self.models,
            &mut self.optimizers,
        )
        .with_batches::<C::Batch>(&mut more);
        self.core
            .update_core(batch, &mut ctx)
            .with_context(|| format!("update at iteration {}", self.iteration + 1))?;
        self.iteration += 1;
        self.last_update = Some(UpdateSpan {
            epoch_detail_before: before,
            new_epoch: self.iterator.epoch() > epoch_before,
        });
        Ok(())
    }

    fn iteration(&self) -> u64 {
        self.iteration
    }

    fn epoch(&self) -> u64 {
        self.iterator.epoch()
    }

    fn epoch_detail(&self) -> f64 {
        self.iterator.epoch_detail()
    }

    fn previous_epoch_detail(&self) -> Option<f64> {
        match self.last_update {
            Some(span) => Some(span.epoch_detail_before),
            None => self.iterator.previous_epoch_detail(),
        }
    }

    fn is_new_epoch(&self) -> bool {
        match self.last_update {
            Some(span) => span.new_epoch,
            None => self.iterator.is_new_epoch(),
        }
    }

    fn iterations_per_epoch(&self) -> Option<f64> {
        let batches = self.core.batches_per_update().max(1) as f64;
        Some(self.iterator.batches_per_epoch() / batches)
    }

    fn optimizers_mut(&mut self) -> Option<&mut Optimizers> {
        Some(&mut self.optimizers)
    }

    fn state(&self) -> Result<State> {
        let mut state = State::new();
        state.put("iteration", &self.iteration)?;
        state.put("iterator", &self.iterator.state())?;
        state.put("last_update", &self.last_update)?;
        state.nest("models", self.models.state());
        state.nest("optimizers", self.optimizers.state()?);
        state.nest("core", self.core.state()?);
        Ok(state)
    }

    fn load_state(&mut self, state: &State) -> Result<()> {
        let iterator: IteratorState = state.get("iterator")?;
        self.models.load_state(&state.child("models"))?;
        self.optimizers.load_state(&state.child("optimizers"))?;
        self.core.load_state(&state.child("core"))?;
        self.iterator.load_state(&iterator)?;
        self.iteration = state.get("iteration")?;
        // Snapshots from before updates could draw several batches have none:
        // the iterator's own record is then the update's.
        self.last_update = state.get("last_update").ok().flatten();
        Ok(())
    }
}
