//! What can stop a command, and the exit code each means.

use super::{EXIT_CONNECTION, EXIT_FAILED, EXIT_USAGE};
use runware_ws::client::ClientError;
use runware_ws::protocol::ValidationError;
use std::path::PathBuf;

/// Why a command failed. Messages never contain the API key.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line does not make sense.
    #[error("{0}")]
    Usage(String),
    /// The request broke a rule; nothing was sent.
    #[error("{}", describe_validation(.0))]
    Invalid(ValidationError),
    /// An input file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An output file or directory cannot be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No authenticated connection.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server refused the API key.
    #[error("authentication refused by {url}: {reason}")]
    Auth {
        /// Where.
        url: String,
        /// The server's error (without the key).
        reason: String,
    },
    /// A task failed.
    #[error("{0}")]
    Task(ClientError),
    /// An image could not be fetched.
    #[error("download of {url} failed: {reason}")]
    Download {
        /// The image URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Anything else (the emulator could not start, a result could not be decoded…).
    #[error("{0}")]
    Other(String),
}

impl From<runware_jobs::store::journal::JournalError> for CliError {
    fn from(e: runware_jobs::store::journal::JournalError) -> Self {
        use runware_jobs::store::journal::JournalError;
        match e {
            JournalError::Read { path, source } => CliError::Read { path, source },
            JournalError::Write { path, source } => CliError::Write { path, source },
            JournalError::Other(m) => CliError::Other(m),
        }
    }
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Invalid(_) | CliError::Read { .. } => EXIT_USAGE,
            CliError::Connect { .. } | CliError::Auth { .. } => EXIT_CONNECTION,
            CliError::Task(e) => client_exit_code(e),
            CliError::Write { .. } | CliError::Download { .. } | CliError::Other(_) => EXIT_FAILED,
        }
    }

    /// A task error, classified: auth and connection failures get their own variants.
    pub fn from_client(e: ClientError, url: &str) -> CliError {
        match e {
            ClientError::Auth(api) => CliError::Auth { url: url.to_string(), reason: api.to_string() },
            ClientError::Unreachable { .. } => CliError::Connect { url: url.to_string(), reason: e.to_string() },
            ClientError::Validation(v) => CliError::Invalid(v),
            ClientError::Config(reason) => CliError::Usage(reason.to_string()),
            other => CliError::Task(other),
        }
    }
}

/// The exit code a task's failure implies for the whole run.
pub fn client_exit_code(e: &ClientError) -> u8 {
    match e {
        ClientError::Auth(_) | ClientError::Unreachable { .. } => EXIT_CONNECTION,
        ClientError::Validation(_) | ClientError::Config(_) => EXIT_USAGE,
        _ => EXIT_FAILED,
    }
}

/// `invalid parameter width: … (got …)`, one violation per line after the first.
pub fn describe_validation(e: &ValidationError) -> String {
    let mut out = String::new();
    for (i, v) in e.violations.iter().enumerate() {
        if i > 0 {
            out.push_str("\n  ");
        }
        out.push_str(&format!("invalid parameter {v}"));
    }
    out
}
