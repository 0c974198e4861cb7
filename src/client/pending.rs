//! The pending table: every task that has not ended, keyed by `taskUUID`, with
//! its serialized frame (for resends) and its delivery state.
//!
//! Guards of the table are never held across `.await`, and never while taking
//! another lock.

use super::mailbox::Mailbox;
use crate::protocol::SharedStr;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

/// One pending task.
#[derive(Debug)]
pub(crate) struct PendingTask {
    /// Submission order (resends go out in this order).
    pub(crate) seq: u64,
    /// The serialized task object, sent as is on every (re)send. `None` for a
    /// task that is only being recovered with `getResponse`.
    pub(crate) frame: Option<SharedStr>,
    /// Distinct results that complete the task.
    pub(crate) expected: u32,
    /// Result keys (imageUUIDs) delivered so far.
    pub(crate) seen: Vec<SharedStr>,
    /// Where events go.
    pub(crate) mailbox: Arc<Mailbox>,
    /// Connection generation the frame was last written on (0: never).
    pub(crate) sent_gen: u64,
    /// True once the task was resent on a connection that resumed the session.
    pub(crate) resent_on_resumed: bool,
    /// `deliveryMethod: async`: results are fetched with `getResponse`.
    pub(crate) is_async: bool,
    /// In the poll set.
    pub(crate) polling: bool,
    /// Polls sent so far.
    pub(crate) polls: u32,
    /// When the next poll is due.
    pub(crate) next_poll: Instant,
    /// The in-flight slot, released when the entry is removed.
    pub(crate) _permit: Option<OwnedSemaphorePermit>,
    /// The task's span (taskUUID as a field).
    pub(crate) span: tracing::Span,
}
