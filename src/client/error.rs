//! [`ClientError`]: why a task or the client failed, and whether a retry can help.

use crate::protocol::{ApiError, ErrorKind, ValidationError};
use std::time::Duration;
use uuid::Uuid;

/// Everything that can go wrong for a caller. Never contains the API key.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ClientError {
    /// The request broke a rule; it was never sent.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// The server failed this task.
    #[error("task failed: {0}")]
    Api(Box<ApiError>),
    /// The API key was refused. Final: the client does not retry.
    #[error("authentication refused: {0}")]
    Auth(Box<ApiError>),
    /// The task's deadline passed (it covers queueing, sending, outages and retries).
    #[error("task timed out after {after:?} (connection: {connection})")]
    Timeout {
        /// The deadline that passed.
        after: Duration,
        /// The connection state at that moment.
        connection: String,
    },
    /// The server could not be reached within the reconnect budget.
    #[error("cannot reach the server after {attempts} attempts: {last_error}")]
    Unreachable {
        /// Attempts made in this outage.
        attempts: u32,
        /// The last connection error.
        last_error: String,
    },
    /// `try_` submission found every in-flight slot taken.
    #[error("all {limit} in-flight slots are taken")]
    Busy {
        /// The in-flight limit.
        limit: usize,
    },
    /// A task with this UUID is already pending on this client.
    #[error("task {0} is already pending on this client")]
    DuplicateTask(Uuid),
    /// The client was closed before the task ended.
    #[error("the client is closed")]
    Closed,
    /// The server sent something this client cannot use for the task.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The configuration is not usable (bad URL, bad certificate).
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// The server error's kind, when the server gave one.
    pub fn api_kind(&self) -> Option<ErrorKind> {
        match self {
            ClientError::Api(e) | ClientError::Auth(e) => Some(e.kind()),
            _ => None,
        }
    }

    /// True when submitting the same task again (with a new task UUID) can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Api(e) => e.kind().is_retryable(),
            ClientError::Timeout { .. } | ClientError::Unreachable { .. } | ClientError::Busy { .. } => true,
            _ => false,
        }
    }
}
