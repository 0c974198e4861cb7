//! [`ClientError`]: why a task or the client failed, and whether a retry can help.

use crate::protocol::{ApiError, ErrorKind, RetryAdvice, ValidationError};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// The underlying error of a [`ClientError`], shared by every caller that gets the
/// same error (one outage fails many tasks). Reach it with
/// [`std::error::Error::source`]; downcast it for the library's own type (e.g.
/// `tungstenite::Error`, `url::ParseError`, `rustls::Error`).
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Why the configuration cannot work: a message, and the error behind it if any.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    message: String,
    #[source]
    cause: Option<Cause>,
}

impl ConfigError {
    /// The error behind it, for downcasting (e.g. to `url::ParseError`).
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.cause.as_deref()
    }

    pub(crate) fn new(message: impl Into<String>) -> ConfigError {
        ConfigError { message: message.into(), cause: None }
    }

    pub(crate) fn caused_by(
        message: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> ConfigError {
        ConfigError { message: message.into(), cause: Some(Arc::new(cause)) }
    }

    /// What is wrong, in words.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Everything that can go wrong for a caller. Never contains the API key.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
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
        /// The last connection error, in words.
        last_error: String,
        /// The last connection error itself, when there was one.
        #[source]
        cause: Option<Cause>,
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
    Config(#[source] ConfigError),
}

impl ClientError {
    /// The underlying error, for downcasting: the last connection error of an
    /// [`Unreachable`](ClientError::Unreachable) (a `tungstenite::Error`), or what
    /// made a [`Config`](ClientError::Config) unusable. The same error is also in
    /// the [`source`](std::error::Error::source) chain (behind the shared `Arc`).
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            ClientError::Unreachable { cause, .. } => cause.as_deref(),
            ClientError::Config(c) => c.cause(),
            _ => None,
        }
    }

    /// The server error's kind, when the server gave one.
    pub fn api_kind(&self) -> Option<ErrorKind> {
        match self {
            ClientError::Api(e) | ClientError::Auth(e) => Some(e.kind()),
            _ => None,
        }
    }

    /// What a retry would do, and how to retry without running the task twice.
    ///
    /// | error | advice |
    /// |---|---|
    /// | `Api` with a provider, timeout, server or rate-limit code | [`RetryAdvice::NewTaskUuid`] |
    /// | `Api` `conflictTaskUUID`, `Timeout`, `Unreachable`, `Closed`, `Protocol` | [`RetryAdvice::SameTaskUuid`] |
    /// | `Busy` | [`RetryAdvice::Resubmit`] |
    /// | `Auth`, `Api` with an auth or credits/quota code | [`RetryAdvice::FixAccount`] |
    /// | `Validation`, `DuplicateTask`, `Config`, other `Api` codes | [`RetryAdvice::Never`] |
    ///
    /// A [`ClientError::Timeout`] is the caller's deadline, not the server's: the
    /// task may still be running, so it is an unknown outcome.
    pub fn retry_advice(&self) -> RetryAdvice {
        match self {
            ClientError::Api(e) => e.kind().retry_advice(),
            ClientError::Auth(_) => RetryAdvice::FixAccount,
            ClientError::Timeout { .. }
            | ClientError::Unreachable { .. }
            | ClientError::Closed
            | ClientError::Protocol(_) => RetryAdvice::SameTaskUuid,
            ClientError::Busy { .. } => RetryAdvice::Resubmit,
            ClientError::Validation(_) | ClientError::DuplicateTask(_) | ClientError::Config(_) => RetryAdvice::Never,
        }
    }

    /// A short, stable label of the error's kind, for metrics (`validation`, `api`, `auth`,
    /// `timeout`, `unreachable`, `busy`, `duplicate_task`, `closed`, `protocol`, `config`).
    pub fn kind_label(&self) -> &'static str {
        match self {
            ClientError::Validation(_) => "validation",
            ClientError::Api(_) => "api",
            ClientError::Auth(_) => "auth",
            ClientError::Timeout { .. } => "timeout",
            ClientError::Unreachable { .. } => "unreachable",
            ClientError::Busy { .. } => "busy",
            ClientError::DuplicateTask(_) => "duplicate_task",
            ClientError::Closed => "closed",
            ClientError::Protocol(_) => "protocol",
            ClientError::Config(_) => "config",
        }
    }

    /// True when the server reported the task failed and a new attempt under a
    /// **new** taskUUID is safe (and may succeed after a backoff).
    pub fn is_retryable_with_new_uuid(&self) -> bool {
        self.retry_advice() == RetryAdvice::NewTaskUuid
    }

    /// True when the task may or may not have run: recover it under the **same**
    /// taskUUID (submit it again with that UUID, or [`Client::lookup`](crate::Client::lookup)),
    /// never under a new one.
    pub fn is_outcome_unknown(&self) -> bool {
        self.retry_advice() == RetryAdvice::SameTaskUuid
    }

    /// True when no task can succeed until the account is fixed (key, credits, quota).
    pub fn is_account_failure(&self) -> bool {
        self.retry_advice() == RetryAdvice::FixAccount
    }
}

/// A task that failed after some of its results arrived: the results (paid for)
/// and the error, as `collect_all`, [`Client::kontext`](crate::Client::kontext)
/// and [`Client::raw`](crate::Client::raw) return them. `?` turns it into its
/// [`ClientError`] when the results are not wanted.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{error} (after {} result(s))", received.len())]
pub struct PartialFailure<T> {
    /// The results received before the failure, each once, in arrival order.
    pub received: Vec<T>,
    /// Why the task ended.
    #[source]
    pub error: ClientError,
}

impl<T> PartialFailure<T> {
    /// A failure before any result.
    pub fn new(error: ClientError) -> Self {
        PartialFailure { received: Vec::new(), error }
    }

    /// The results and the error.
    pub fn into_parts(self) -> (Vec<T>, ClientError) {
        (self.received, self.error)
    }
}

impl<T> From<PartialFailure<T>> for ClientError {
    fn from(p: PartialFailure<T>) -> ClientError {
        p.error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_reported_failure_may_take_a_new_task_uuid() {
        let api = |code: &str| ClientError::Api(Box::new(ApiError::new(code, "x")));
        assert!(api("timeoutProvider").is_retryable_with_new_uuid());
        assert!(api("serviceUnavailable").is_retryable_with_new_uuid());
        let deadline = ClientError::Timeout { after: Duration::from_secs(1), connection: "connected".into() };
        assert!(!deadline.is_retryable_with_new_uuid() && deadline.is_outcome_unknown());
        let lost = ClientError::Unreachable { attempts: 3, last_error: "refused".into(), cause: None };
        assert!(!lost.is_retryable_with_new_uuid() && lost.is_outcome_unknown());
        assert!(ClientError::Closed.is_outcome_unknown());
        assert!(api("conflictTaskUUID").is_outcome_unknown());
        assert_eq!(ClientError::Busy { limit: 1 }.retry_advice(), RetryAdvice::Resubmit);
        assert!(api("insufficientCredits").is_account_failure());
        assert!(ClientError::Auth(Box::new(ApiError::new("invalidApiKey", "x"))).is_account_failure());
        assert_eq!(api("contentPolicyViolation").retry_advice(), RetryAdvice::Never);
    }
}
