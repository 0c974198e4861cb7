//! Counters a user can read: [`crate::Client::metrics`].

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $(pub(crate) $name: AtomicU64,)*
        }

        /// A snapshot of the client's counters.
        #[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
        #[non_exhaustive]
        pub struct Metrics {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> Metrics {
                Metrics { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Tasks accepted for sending.
    tasks_submitted,
    /// Tasks that ended with all their results.
    tasks_completed,
    /// Tasks that ended with an error (server, timeout, connection, auth).
    tasks_failed,
    /// Tasks whose caller went away before they ended.
    tasks_cancelled,
    /// Successful connections (the first one included).
    connections,
    /// Connections after the first.
    reconnects,
    /// Tasks sent again on a new connection, under their own taskUUID.
    resends,
    /// `conflictTaskUUID` answers (the server already had the task).
    conflicts,
    /// Result items dropped because their imageUUID had already been delivered.
    duplicates_dropped,
    /// Items or errors for taskUUIDs that are not pending (late, unknown or stray).
    unknown_items,
    /// Entries that could not be decoded, and whole frames that were not envelopes.
    malformed,
    /// `getResponse` polls sent.
    polls,
    /// Application pings sent.
    pings,
    /// Sockets declared dead by the keepalive (no answer to a ping in time).
    dead_sockets,
    /// The longest inbound silence (ms) before a socket was declared dead.
    max_dead_silence_ms,
    /// Sessions resumed after a reconnect.
    sessions_resumed,
    /// Frames received.
    frames_in,
    /// Frames sent.
    frames_out,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn max(counter: &AtomicU64, n: u64) {
        counter.fetch_max(n, Ordering::Relaxed);
    }
}
