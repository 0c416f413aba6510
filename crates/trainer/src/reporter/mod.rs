//! The reporter: `report("dis/loss", &loss)` from anywhere inside an update
//! or an extension, with no handle to pass around.
//!
//! The trainer opens a [`scope`] around every iteration with a fresh
//! [`Observation`]; [`report`] writes into the innermost open scope, under
//! the names pushed by [`with_prefix`] (Chainer's observer names). The
//! scope is per thread, as in Chainer.
//!
//! Calling [`report`] when no scope is open is an error (not a panic), so a
//! value silently going nowhere is caught; code that runs both inside and
//! outside training can use [`is_active`].
//!
//! Tensors are stored as detached 0-d tensors and only read from the device
//! when a summary is computed, so reporting costs no device-to-host sync.

mod observation;
mod summary;

pub use observation::{Observation, Value};
pub use summary::{DictSummary, Statistics, Summary, SummaryState};

use std::cell::RefCell;

use anyhow::{bail, Result};

enum Frame {
    Scope(Observation),
    Prefix(String),
}

thread_local! {
    static STACK: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
}

/// Pops the frame pushed by `push` even when the closure panics or returns early.
struct PopOnDrop;

impl Drop for PopOnDrop {
    fn drop(&mut self) {
        STACK.with(|s| {
            s.borrow_mut().pop();
        });
    }
}

fn push(frame: Frame) -> PopOnDrop {
    STACK.with(|s| s.borrow_mut().push(frame));
    PopOnDrop
}

/// Runs `f` with `observation` as the current target of [`report`].
pub fn scope<R>(observation: &Observation, f: impl FnOnce() -> R) -> R {
    let _guard = push(Frame::Scope(observation.clone()));
    f()
}

/// Runs `f` with `prefix/` added in front of every key it reports.
pub fn with_prefix<R>(prefix: &str, f: impl FnOnce() -> R) -> R {
    let _guard = push(Frame::Prefix(prefix.to_string()));
    f()
}

/// Whether a [`scope`] is open on this thread.
pub fn is_active() -> bool {
    STACK.with(|s| s.borrow().iter().any(|f| matches!(f, Frame::Scope(_))))
}

/// Records `value` under `key` (prefixed by the enclosing [`with_prefix`]
/// names) in the innermost scope's observation.
pub fn report(key: &str, value: impl Into<Value>) -> Result<()> {
    let value = value.into().detached();
    STACK.with(|s| {
        let stack = s.borrow();
        let Some(pos) = stack.iter().rposition(|f| matches!(f, Frame::Scope(_))) else {
            bail!(
                "report(\"{key}\") was called outside any reporter scope; \
                 values can be reported only inside Trainer::run or reporter::scope"
            );
        };
        let Frame::Scope(observation) = &stack[pos] else {
            unreachable!("rposition found a scope");
        };
        let mut full = String::new();
        for frame in &stack[pos + 1..] {
            if let Frame::Prefix(p) = frame {
                full.push_str(p);
                full.push('/');
            }
        }
        full.push_str(key);
        observation.insert(full, value);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn prefixes_build_keys_and_scopes_nest() -> Result<()> {
        let obs = Observation::new();
        scope(&obs, || -> Result<()> {
            with_prefix("dis", || report("loss", 1.5))?;
            with_prefix("gen", || with_prefix("sub", || report("x", 2.0)))?;
            report("plain", Tensor::new(3f32, &Device::Cpu)?)?;
            let inner = Observation::new();
            scope(&inner, || report("only_inner", 0.0))?;
            assert!(inner.contains("only_inner"));
            Ok(())
        })?;
        assert_eq!(obs.keys(), vec!["dis/loss", "gen/sub/x", "plain"]);
        assert_eq!(obs.scalar("dis/loss")?, Some(1.5));
        assert_eq!(obs.scalar("plain")?, Some(3.0));
        Ok(())
    }

    #[test]
    fn reporting_outside_a_scope_is_an_error() {
        assert!(!is_active());
        let err = report("loss", 1.0).unwrap_err().to_string();
        assert!(err.contains("outside any reporter scope"), "{err}");
        // A prefix alone is not a scope.
        assert!(with_prefix("dis", || report("loss", 1.0)).is_err());
    }

    #[test]
    fn scope_is_closed_after_a_panic() {
        let obs = Observation::new();
        let result = std::panic::catch_unwind(|| scope(&obs, || panic!("boom")));
        assert!(result.is_err());
        assert!(!is_active());
    }
}
