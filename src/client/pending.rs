//! The pending table: every task that has not ended, keyed by `taskUUID`, with
//! its serialized frame (for resends) and its delivery state.
//!
//! Guards of the table are never held across `.await`, and never while taking
//! another lock.

use super::mailbox::Mailbox;
use crate::protocol::SharedStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

/// One pending task.
#[derive(Debug)]
pub(crate) struct PendingTask {
    /// Submission order (resends go out in this order).
    pub(crate) seq: u64,
    /// The serialized task object, sent as is on every (re)send. `None` for a
    /// task that is only being recovered with `getResponse`.
    pub(crate) frame: Option<String>,
    /// When the task times out (ms since the client's epoch; see `deadlines`).
    pub(crate) deadline_ms: u64,
    /// The timeout the deadline came from (for the error).
    pub(crate) timeout: Duration,
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

/// What a new pending task is made of; the rest of its state starts empty.
pub(crate) struct NewTask {
    pub(crate) seq: u64,
    pub(crate) frame: Option<String>,
    pub(crate) expected: u32,
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) is_async: bool,
    pub(crate) deadline_ms: u64,
    pub(crate) timeout: Duration,
    pub(crate) permit: Option<OwnedSemaphorePermit>,
    pub(crate) span: tracing::Span,
}

impl PendingTask {
    /// A task not yet sent on any connection.
    pub(crate) fn new(t: NewTask) -> PendingTask {
        PendingTask {
            seq: t.seq,
            frame: t.frame,
            deadline_ms: t.deadline_ms,
            timeout: t.timeout,
            expected: t.expected,
            seen: Vec::new(),
            mailbox: t.mailbox,
            sent_gen: 0,
            resent_on_resumed: false,
            is_async: t.is_async,
            polling: false,
            polls: 0,
            next_poll: Instant::now(),
            _permit: t.permit,
            span: t.span,
        }
    }

    /// A task already sent on connection 1, with no deadline, slot or span (for
    /// the dispatcher's tests and benches).
    #[cfg(any(test, feature = "bench-internals"))]
    pub(crate) fn sent(seq: u64, expected: u32, mailbox: Arc<Mailbox>, is_async: bool) -> PendingTask {
        let mut task = PendingTask::new(NewTask {
            seq,
            frame: Some("{}".to_string()),
            expected,
            mailbox,
            is_async,
            deadline_ms: u64::MAX,
            timeout: Duration::MAX,
            permit: None,
            span: tracing::Span::none(),
        });
        task.sent_gen = 1;
        task
    }
}
