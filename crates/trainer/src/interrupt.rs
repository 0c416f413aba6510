//! Graceful stops: SIGINT (Ctrl-C), SIGTERM, SIGHUP and SIGUSR1 ask the
//! running trainer to stop after the current iteration, so extensions can
//! finish (a snapshot can be written). A second Ctrl-C exits at once; a
//! repeated SIGTERM, SIGHUP or SIGUSR1 changes nothing, since schedulers
//! often deliver one signal to several processes of a job, or twice.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};

static SIGNALS: AtomicUsize = AtomicUsize::new(0);
static INSTALL: Once = Once::new();

/// The exit status of a second Ctrl-C: 128 + SIGINT, as a shell reports it.
pub const EXIT_QUIT: i32 = 130;

/// Installs the process-wide handler of the stop signals (once; later calls do nothing).
pub fn install_signal_handler() {
    INSTALL.call_once(|| {
        let mut signals =
            match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1]) {
                Ok(signals) => signals,
                Err(e) => {
                    tracing::warn!("cannot install the Ctrl-C handler: {e}");
                    return;
                }
            };
        // The handler only records the signal; this thread does the rest,
        // outside signal context.
        let spawned = std::thread::Builder::new()
            .name("kusari-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    let previous = SIGNALS.fetch_add(1, Ordering::SeqCst);
                    if previous == 0 {
                        let hint = if signal == SIGINT {
                            " (press Ctrl-C again to quit at once)"
                        } else {
                            ""
                        };
                        eprintln!("\nstopping after this iteration{hint}");
                    } else if signal == SIGINT {
                        eprintln!("\nquitting without cleanup");
                        std::process::exit(EXIT_QUIT);
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the signal thread: {e}");
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
