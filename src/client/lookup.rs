//! [`Client::lookup`]: what the server knows about a taskUUID, asked with
//! `getResponse`, without submitting anything.

use super::Client;
use super::error::ClientError;
use crate::protocol::{ApiError, ErrorKind, ResultItem};
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// How long a lookup of unknown result count waits for more results after the
/// last one: `getResponse` answers are cumulative, so a later poll repeats
/// anything a first reply was still missing.
const SETTLE: Duration = Duration::from_millis(500);

/// What the server knows about a taskUUID ([`Client::lookup`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Lookup {
    /// Nothing: the server never received it, or no longer remembers it (Runware
    /// keeps a task's results for at least an hour).
    Unknown,
    /// The server has it.
    Known {
        /// Its results so far (each once).
        items: Vec<ResultItem>,
        /// True when it has ended: every expected result arrived, or it failed.
        finished: bool,
        /// Why it failed, when it did.
        error: Option<Box<ApiError>>,
    },
}

impl Lookup {
    /// True when the server knows the task.
    pub fn is_known(&self) -> bool {
        matches!(self, Lookup::Known { .. })
    }
}

impl Client {
    /// Asks the server what it knows about `task_uuid` (with `getResponse`),
    /// waiting at most `wait`.
    ///
    /// With `expected` results the lookup ends as soon as they are in; without,
    /// it returns every result the server has once no new one arrived for 500 ms
    /// after the last. A task the server has not answered anything for within
    /// `wait` is [`Lookup::Unknown`], as is one it answers `taskNotFound` for.
    /// Nothing is submitted: an unknown task stays unknown.
    ///
    /// Fails with [`ClientError::DuplicateTask`] while `task_uuid` is pending on
    /// this client.
    pub async fn lookup(&self, task_uuid: Uuid, expected: Option<u32>, wait: Duration) -> Result<Lookup, ClientError> {
        let mut stream = self.attach(task_uuid, expected.unwrap_or(u32::MAX), Some(wait)).await?;
        let mut items = Vec::new();
        let deadline = Instant::now() + wait;
        let ended = loop {
            // Without a count: settle after the last result (the first still waits
            // up to `wait`).
            let until = match (expected, items.is_empty()) {
                (None, false) => deadline.min(Instant::now() + SETTLE),
                _ => deadline,
            };
            match tokio::time::timeout_at(until, stream.next_result()).await {
                Ok(Some(Ok(item))) => items.push(item),
                Ok(None) => break Ok(true),
                Ok(Some(Err(e))) => break Err(e),
                Err(_) => break Ok(false),
            }
        };
        let acknowledged = self.inner.shared.tasks.pending.get(&task_uuid).is_some_and(|t| t.acknowledged);
        drop(stream);
        match ended {
            Ok(finished) if items.is_empty() && !finished && !acknowledged => Ok(Lookup::Unknown),
            Ok(finished) => Ok(Lookup::Known { items, finished, error: None }),
            Err(ClientError::Api(e)) if e.kind() == ErrorKind::NotFound && items.is_empty() => Ok(Lookup::Unknown),
            Err(ClientError::Api(e)) => Ok(Lookup::Known { items, finished: true, error: Some(e) }),
            // Our own `wait` passed (the attach deadline races the timeout above).
            Err(ClientError::Timeout { .. }) if items.is_empty() && !acknowledged => Ok(Lookup::Unknown),
            Err(ClientError::Timeout { .. }) => Ok(Lookup::Known { items, finished: false, error: None }),
            Err(e) => Err(e),
        }
    }
}
