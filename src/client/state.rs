//! The connection state a user can watch: [`crate::Client::state`].

use std::fmt;
use std::time::Duration;

/// Where the client's single connection stands.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// First connection attempt in progress.
    Connecting,
    /// Connected and authenticated.
    Connected {
        /// The server's `connectionSessionUUID`.
        session: String,
    },
    /// The connection dropped; trying again.
    Reconnecting {
        /// Attempt number in this outage (1-based).
        attempt: u32,
        /// Why the last connection or attempt ended.
        last_error: String,
        /// The backoff before this attempt connects (zero right after the drop,
        /// before the first attempt's delay is drawn).
        retry_in: Duration,
    },
    /// Gave up for now after the reconnect budget; the next task tries again.
    Disconnected {
        /// The last error.
        last_error: String,
    },
    /// Closed for good (by `close()`, or after an authentication refusal).
    Closed,
}

impl ConnectionState {
    /// True when connected.
    pub fn is_connected(&self) -> bool {
        matches!(self, ConnectionState::Connected { .. })
    }
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionState::Connecting => f.write_str("connecting"),
            ConnectionState::Connected { .. } => f.write_str("connected"),
            ConnectionState::Reconnecting { attempt, last_error, retry_in } => {
                write!(f, "reconnecting (attempt {attempt} in {retry_in:.1?}, last error: {last_error})")
            }
            ConnectionState::Disconnected { last_error } => write!(f, "disconnected ({last_error})"),
            ConnectionState::Closed => f.write_str("closed"),
        }
    }
}
