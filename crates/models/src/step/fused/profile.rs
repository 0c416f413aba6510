//! Wall-clock time per phase of the fused step, for `cargo xtask bench`.

use std::time::{Duration, Instant};

/// The phases of one fused step, in order.
pub const PHASES: [&str; 6] = [
    "G forward",
    "D forward (real+fake)",
    "objective (losses, their gradients)",
    "D backward + update",
    "G backward + update",
    "other (copies, noise)",
];

/// Accumulated time per phase over the steps taken.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// Total time per entry of [`PHASES`].
    pub totals: [Duration; 6],
    /// Steps measured.
    pub steps: u64,
}

impl Profile {
    /// Seconds per step for each phase, with its name.
    pub fn per_step(&self) -> Vec<(&'static str, f64)> {
        let steps = self.steps.max(1) as f64;
        PHASES
            .iter()
            .zip(&self.totals)
            .map(|(name, t)| (*name, t.as_secs_f64() / steps))
            .collect()
    }
}

/// Times consecutive phases: each call to `lap` charges the time since the
/// previous one to a phase.
pub(crate) struct Laps<'a> {
    profile: &'a mut Profile,
    last: Instant,
}

impl<'a> Laps<'a> {
    pub(crate) fn start(profile: &'a mut Profile) -> Self {
        Self {
            profile,
            last: Instant::now(),
        }
    }

    pub(crate) fn lap(&mut self, phase: usize) {
        let now = Instant::now();
        self.profile.totals[phase] += now - self.last;
        self.last = now;
    }

    pub(crate) fn finish(self) {
        self.profile.steps += 1;
    }
}
