//! Graceful stops: Ctrl-C (and SIGTERM) ask the running trainer to stop after
//! the current iteration, so extensions can finish (a snapshot can be
//! written). A second Ctrl-C exits at once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Once};

static SIGNALS: AtomicUsize = AtomicUsize::new(0);
static INSTALL: Once = Once::new();

/// Installs the process-wide Ctrl-C / SIGTERM handler (once; later calls do nothing).
pub fn install_signal_handler() {
    INSTALL.call_once(|| {
        let result = ctrlc::set_handler(|| {
            let previous = SIGNALS.fetch_add(1, Ordering::SeqCst);
            if previous == 0 {
                eprintln!("\nstopping after this iteration (press Ctrl-C again to quit at once)");
            } else {
                eprintln!("\nquitting without cleanup");
                std::process::exit(130);
            }
        });
        if let Err(e) = result {
            tracing::warn!("cannot install the Ctrl-C handler: {e}");
        }
    });
}

/// Whether a signal asked the process to stop.
pub fn signal_received() -> bool {
    SIGNALS.load(Ordering::SeqCst) > 0
}

/// Asks one trainer to stop after its current iteration; cheap to clone and
/// safe to use from another thread.
#[derive(Debug, Clone, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    pub fn request_stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
