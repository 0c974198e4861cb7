//! The signals that stop a long-running command: Ctrl-C (SIGINT) and SIGTERM
//! (what `docker stop`, systemd and Kubernetes send). `batch`, `worker` and
//! `serve` treat both alike — stop taking work, let what is in flight finish
//! within the grace period — and a second signal stops at once.

use super::{EXIT_INTERRUPTED, EXIT_TERMINATED};

/// Which signal arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Ctrl-C (SIGINT).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Signal {
    /// The exit code of a run it stopped: 130 for Ctrl-C, 143 for SIGTERM (128 +
    /// the signal's number, as a shell reports a process the signal killed).
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => EXIT_INTERRUPTED,
            Signal::Terminate => EXIT_TERMINATED,
        }
    }

    /// How the summary says it: `Interrupted` / `Terminated`.
    pub fn past_tense(self) -> &'static str {
        match self {
            Signal::Interrupt => "Interrupted",
            Signal::Terminate => "Terminated",
        }
    }
}

/// Listens for SIGINT and SIGTERM from the moment it is made: from then on,
/// neither kills the process; the holder decides.
pub struct Signals {
    #[cfg(unix)]
    listeners: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    /// Starts listening (call inside the runtime).
    pub fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listeners = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
                (Ok(int), Ok(term)) => Some((int, term)),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "cannot listen for SIGINT/SIGTERM; they stop the process at once");
                    None
                }
            };
            Signals { listeners }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    /// Resolves at the next SIGINT or SIGTERM (never, when they cannot be listened for).
    pub async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            match &mut self.listeners {
                Some((int, term)) => tokio::select! {
                    _ = int.recv() => Signal::Interrupt,
                    _ = term.recv() => Signal::Terminate,
                },
                None => std::future::pending().await,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Interrupt
        }
    }
}
