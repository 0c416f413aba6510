//! [`AdversarialStep`]: the one training step every objective runs on. It
//! owns everything below the losses — noise, G's forward pass, D's forward
//! pass under the configured batch-norm strategy, the backward passes with
//! no work whose result goes unused, both optimizers' steps, K D steps per
//! G step, D's weight clip, threads, and its own random state in snapshots.
//!
//! Two engines compute the same step:
//!
//! - **fused** ([`FusedMlp`]): MLP nets with f32 parameters on the CPU, on
//!   kusari's hand-fused kernels, the optimizers' updates applied tile by
//!   tile as gradients appear (element-wise optimizers: Adam, RMSProp);
//! - **autograd**: everything else (conv nets, whose layers run on kusari's
//!   CPU kernels as candle custom ops; CUDA; other types; any optimizer), on
//!   candle's ops and autograd.
//!
//! Both draw the same noise and dropout masks, so their losses agree to
//! float rounding (tests check 1e-5 relative per step) and their snapshots
//! are interchangeable. `KUSARI_STEP=reference` in the environment (or
//! [`AdversarialStep::with_reference_step`]) keeps the autograd engine.

mod autograd;
mod fused;
mod top;

pub use fused::{FusedMlp, Profile, PHASES};

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use kusari_trainer::{report, Batch, Optimizers, Rng, State, UpdateContext, UpdateCore};

use crate::kernels::in_own_pool;
use crate::nets::{Discriminator, Generator};
use crate::objective::{Losses, Objective};

/// How one update is shaped beyond the objective.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOptions {
    /// D steps per G step, each on a new real batch (WGAN's critic takes 5).
    pub dis_steps: usize,
    /// After each D step every D parameter is clipped to `[−c, c]`.
    pub dis_weight_clip: Option<f64>,
}

impl Default for StepOptions {
    fn default() -> Self {
        Self {
            dis_steps: 1,
            dis_weight_clip: None,
        }
    }
}

/// The adversarial training step as an [`UpdateCore`]: per iteration K
/// steps of D's optimizer (`"dis"`), each on a new real batch, the last of
/// them together with one step of G's (`"gen"`) from the same forward pass.
///
/// Reports `dis/loss`, `gen/loss` and the objective's own values from the
/// last D step. Noise and dropout masks come from the step's own generator,
/// whose state goes into snapshots.
pub struct AdversarialStep {
    gen: Generator,
    dis: Discriminator,
    objective: Box<dyn Objective>,
    options: StepOptions,
    rng: Rng,
    fused: Option<Box<FusedMlp>>,
}

/// The environment variable that chooses the step's engine.
pub const STEP_ENV: &str = "KUSARI_STEP";

impl AdversarialStep {
    /// The step training `gen` and `dis` on `objective`, drawing noise and
    /// dropout masks from `rng` (e.g. `Rng::derived(seed, "update")`). Fails
    /// when D's head is not the one the objective reads, or `KUSARI_STEP`
    /// holds something other than `auto`, `fast` or `reference`.
    pub fn new(
        gen: Generator,
        dis: Discriminator,
        objective: Box<dyn Objective>,
        options: StepOptions,
        rng: Rng,
    ) -> Result<Self> {
        if objective.head() != dis.head() {
            bail!(
                "the objective `{}` reads a {:?} D, but D was built with a {:?} head; \
                 build the nets for this objective (`Nets::build_for`)",
                objective.name(),
                objective.head(),
                dis.head()
            );
        }
        if options.dis_steps == 0 {
            bail!("a step needs at least one D step (--dis-steps 1 or more)");
        }
        let reference = match std::env::var(STEP_ENV) {
            Err(std::env::VarError::NotPresent) => false,
            Ok(v) => match v.trim() {
                "" | "auto" | "fast" => false,
                "reference" => true,
                other => bail!("{STEP_ENV}={other} is not understood; use `auto` or `reference`"),
            },
            Err(e) => bail!("{STEP_ENV} is not readable: {e}"),
        };
        let fused = if reference {
            None
        } else {
            FusedMlp::new(&gen, &dis).map(Box::new)
        };
        Ok(Self {
            gen,
            dis,
            objective,
            options,
            rng,
            fused,
        })
    }

    /// The same step on the autograd engine, never the fused one.
    pub fn with_reference_step(mut self) -> Self {
        self.fused = None;
        self
    }

    /// Whether steps run on the fused CPU engine (when the optimizers allow:
    /// element-wise optimizers on the CPU).
    pub fn uses_fused_step(&self) -> bool {
        self.fused.is_some()
    }

    /// Time per phase of the fused engine's steps, if it is in use.
    pub fn fused_profile(&self) -> Option<&Profile> {
        self.fused.as_deref().map(FusedMlp::profile)
    }

    /// The fused engine, if in use (e.g. to reset its profile or count its work).
    pub fn fused_step_mut(&mut self) -> Option<&mut FusedMlp> {
        self.fused.as_deref_mut()
    }

    /// The objective trained.
    pub fn objective(&self) -> &dyn Objective {
        &*self.objective
    }

    /// D steps per G step and D's clip.
    pub fn options(&self) -> &StepOptions {
        &self.options
    }

    /// The G this step trains (sharing parameters with the `gen` model).
    pub fn generator(&self) -> &Generator {
        &self.gen
    }

    /// The D this step trains (sharing parameters with the `dis` model).
    pub fn discriminator(&self) -> &Discriminator {
        &self.dis
    }

    /// One D step on `real` and, with `train_gen`, one G step from the same
    /// forward pass; returns the objective's losses.
    pub fn step(
        &mut self,
        real: &Tensor,
        optimizers: &mut Optimizers,
        train_gen: bool,
    ) -> Result<Losses> {
        let clip = self.options.dis_weight_clip;
        if let Some(fused) = self.fused.as_mut().filter(|f| f.can_step(optimizers)) {
            return fused.step(
                real,
                &mut self.rng,
                optimizers,
                &*self.objective,
                train_gen,
                clip,
            );
        }
        let nets = autograd::Nets {
            gen: &self.gen,
            dis: &self.dis,
            objective: &*self.objective,
        };
        let rng = &mut self.rng;
        in_own_pool(|| autograd::step(&nets, real, rng, optimizers, train_gen, clip))
    }
}

impl UpdateCore<Batch> for AdversarialStep {
    fn update_core(&mut self, batch: Batch, ctx: &mut UpdateContext<'_>) -> Result<()> {
        let steps = self.options.dis_steps;
        let mut real = batch.values;
        for k in 0..steps {
            if k > 0 {
                real = ctx
                    .next_batch::<Batch>()
                    .with_context(|| format!("drawing the real batch of D step {}", k + 1))?
                    .values;
            }
            let last = k + 1 == steps;
            let losses = self.step(&real, ctx.optimizers, last)?;
            if last {
                report("dis/loss", &losses.dis)?;
                report("gen/loss", &losses.gen)?;
                for (key, value) in &losses.reports {
                    report(key, value)?;
                }
            }
        }
        Ok(())
    }

    fn batches_per_update(&self) -> usize {
        self.options.dis_steps
    }

    fn state(&self) -> Result<State> {
        let mut state = State::new();
        state.put("rng", &self.rng.state())?;
        Ok(state)
    }

    fn load_state(&mut self, state: &State) -> Result<()> {
        self.rng = Rng::from_state(state.get("rng")?);
        Ok(())
    }
}
