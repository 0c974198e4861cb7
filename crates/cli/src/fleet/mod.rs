//! The fleet: batches shared by many worker processes through PostgreSQL.
//!
//! - `runware batch submit FILE --queue URL` validates the file, uploads its local
//!   references once, and inserts one row per line (idempotently).
//! - `runware worker --queue URL` claims small groups of queued tasks with
//!   `FOR UPDATE SKIP LOCKED`, runs them over one `Client`, and ends each lease in
//!   the statement that records its outcome.
//! - `runware batch status|results|retry|cancel|resume|list` read and steer.
//!
//! The local batch's rules hold across the fleet: a task's taskUUID is derived
//! from (batch, line, attempt); a redelivered task is resent under the same
//! taskUUID and recovered by the server's `conflictTaskUUID` → `getResponse`; only
//! a failure the server reported advances the attempt (compare-and-set on the
//! attempt number); the first completion wins.
//!
//! Every statement is in [`queue`], named and documented with the state change it
//! makes; the states are the enums of [`states`].

pub mod admin;
pub mod db;
pub mod queue;
pub mod references;
pub mod schema;
pub mod states;
pub mod submit;
pub mod tls;
pub mod worker;

use crate::error::CliError;

/// What the fleet's database work can fail with.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The queue URL does not parse.
    #[error("--queue: not a PostgreSQL connection string ({0})")]
    BadUrl(#[source] tokio_postgres::Error),
    /// The database cannot be reached (or went away).
    #[error("cannot reach the queue database: {}", reason(.0))]
    Connect(#[source] tokio_postgres::Error),
    /// A statement failed.
    #[error("queue database: {what}: {}", reason(source))]
    Statement {
        /// What the statement was for.
        what: &'static str,
        /// Why.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The schema is newer than this build knows.
    #[error("the queue database has fleet schema version {found}; this build knows up to {known}: upgrade runware")]
    SchemaTooNew {
        /// In the database.
        found: i32,
        /// In this build.
        known: i32,
    },
    /// No such batch.
    #[error("no batch {0} in the queue")]
    NoBatch(String),
    /// A reference the server forgot could not be uploaded again.
    #[error("cannot upload a reference image again: {0}")]
    Reupload(String),
    /// The connection string's TLS settings cannot be used.
    #[error("--queue: {0}")]
    Tls(String),
}

/// What the database said: tokio-postgres shows a server error only as "db error",
/// the server's own words (message, detail, hint) are in its source.
fn reason(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {}", db.severity(), db.message());
        if let Some(d) = db.detail() {
            s.push_str(&format!(" ({d})"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!("; hint: {h}"));
        }
        return s;
    }
    match std::error::Error::source(e) {
        Some(inner) => format!("{e}: {inner}"),
        None => e.to_string(),
    }
}

impl FleetError {
    /// True when the database connection is gone (retry after reconnecting).
    pub fn is_connection(&self) -> bool {
        match self {
            FleetError::Connect(_) => true,
            FleetError::Statement { source, .. } => source.is_closed() || source.code().is_none(),
            _ => false,
        }
    }
}

impl From<FleetError> for CliError {
    fn from(e: FleetError) -> CliError {
        match e {
            FleetError::BadUrl(_) | FleetError::NoBatch(_) | FleetError::Tls(_) => CliError::Usage(e.to_string()),
            FleetError::Connect(source) => {
                CliError::Connect { url: "the queue database".into(), reason: reason(&source) }
            }
            other => CliError::Other(other.to_string()),
        }
    }
}
