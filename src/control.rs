//! The control plane, off the packet path: it runs on its own thread and
//! reaches the dataplane only through [`DataplaneHandle`] (a channel plus a
//! mio waker), so nothing it does can stall forwarding.
//!
//! Today it serves signals: SIGINT/SIGTERM stop the switch cleanly, SIGUSR1
//! prints a JSON snapshot (per-port counters and the MAC table) on stdout.

use std::io::Write;
use std::thread::JoinHandle;

use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::{Handle, Signals};
use thiserror::Error;
use tracing::{info, warn};

use crate::dataplane::DataplaneHandle;

#[derive(Debug, Error)]
pub enum ControlError {
    #[error("installing signal handlers failed: {0}")]
    Signals(#[source] std::io::Error),
    #[error("starting the control thread failed: {0}")]
    Thread(#[source] std::io::Error),
}

/// The running signal thread; [`SignalThread::stop`] ends it.
pub struct SignalThread {
    signals: Handle,
    thread: JoinHandle<()>,
}

impl SignalThread {
    /// Starts serving signals for `dataplane`. Install before creating ports,
    /// so a SIGTERM during setup is not fatal with TAPs left half-configured.
    pub fn spawn(dataplane: DataplaneHandle) -> Result<Self, ControlError> {
        let mut signals =
            Signals::new([SIGINT, SIGTERM, SIGUSR1]).map_err(ControlError::Signals)?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("tapswitch-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    match signal {
                        SIGUSR1 => match dataplane.snapshot() {
                            Ok(snapshot) => {
                                let line = serde_json::to_string(&snapshot)
                                    .expect("snapshots serialise to JSON");
                                let mut stdout = std::io::stdout().lock();
                                // stdout closed: the reader went away; nothing to report to.
                                let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
                            }
                            Err(e) => warn!(error = %e, "snapshot failed"),
                        },
                        _ => {
                            info!(signal, "stopping");
                            // Already stopped is fine: we are stopping anyway.
                            let _ = dataplane.shutdown();
                        }
                    }
                }
            })
            .map_err(ControlError::Thread)?;
        Ok(Self {
            signals: handle,
            thread,
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(self) {
        self.signals.close();
        // A panic in the signal thread has already been reported by the panic hook.
        let _ = self.thread.join();
    }
}
