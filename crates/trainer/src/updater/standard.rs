use anyhow::{bail, Context, Result};
use candle_core::Device;

use super::{Models, Updater};
use crate::converter::Converter;
use crate::dataset::Dataset;
use crate::iterator::{IteratorState, SerialIterator};
use crate::optim::Optimizers;
use crate::state::State;

/// What an [`UpdateCore`] sees besides its batch.
pub struct UpdateContext<'a> {
    /// The iteration being computed (1 for the first update).
    pub iteration: u64,
    pub device: &'a Device,
    pub models: &'a Models,
    pub optimizers: &'a mut Optimizers,
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
/// the core steps; each optimizer counts its own steps.
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
    K: UpdateCore<C::Batch>,
{
    fn update(&mut self) -> Result<()> {
        let Some(examples) = self.iterator.next_batch()? else {
            bail!("the training iterator is exhausted; training iterators must repeat");
        };
        let batch = self.converter.convert(&examples, &self.device)?;
        let mut ctx = UpdateContext {
            iteration: self.iteration + 1,
            device: &self.device,
            models: &self.models,
            optimizers: &mut self.optimizers,
        };
        self.core
            .update_core(batch, &mut ctx)
            .with_context(|| format!("update at iteration {}", self.iteration + 1))?;
        self.iteration += 1;
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
        self.iterator.previous_epoch_detail()
    }

    fn is_new_epoch(&self) -> bool {
        self.iterator.is_new_epoch()
    }

    fn iterations_per_epoch(&self) -> Option<f64> {
        Some(self.iterator.batches_per_epoch())
    }

    fn optimizers_mut(&mut self) -> Option<&mut Optimizers> {
        Some(&mut self.optimizers)
    }

    fn state(&self) -> Result<State> {
        let mut state = State::new();
        state.put("iteration", &self.iteration)?;
        state.put("iterator", &self.iterator.state())?;
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
        Ok(())
    }
}
