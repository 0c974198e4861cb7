//! The dispatcher: routes every item of an inbound frame to its pending task by
//! `taskUUID`, on the reader's task, without ever waiting on a consumer.
//!
//! - A result with a new `imageUUID` goes to the task's mailbox; a repeated one is
//!   dropped and counted. After `expected` distinct results the task completes.
//! - An error (an `errors` entry, or a `data` item with `status: error`) fails its
//!   own task only. `conflictTaskUUID` never fails a task: the server already has
//!   it, so its results are awaited (resumed session) or polled (`getResponse`).
//! - Items for unknown or finished tasks, and stray errors, are counted and logged.

use super::error::ClientError;
use super::mailbox::Event;
use super::metrics::Counters;
use super::shared::Shared;
use crate::protocol::{ApiError, ErrorKind, Frame, ResultItem, SharedStr, TaskStatus};
use std::time::Duration;
use uuid::Uuid;

impl Shared {
    /// Routes a decoded frame. Returns a connection-level authentication error, if
    /// the frame carried one.
    pub(crate) fn dispatch(&self, frame: Frame) -> Option<ApiError> {
        let mut auth_error = None;
        for item in frame.items {
            self.route_item(item);
        }
        for err in frame.errors {
            if let Some(e) = self.route_error(err) {
                auth_error = Some(e);
            }
        }
        if !frame.malformed.is_empty() {
            Counters::add(&self.counters.malformed, frame.malformed.len() as u64);
            for m in &frame.malformed {
                tracing::warn!(task_uuid = ?m.task_uuid, reason = %m.reason, "malformed entry in a server frame");
            }
        }
        auth_error
    }

    fn route_item(&self, item: ResultItem) {
        let Some(uuid) = item.task_uuid else {
            // Pongs and authentication replies carry no taskUUID.
            let kind = item.task_type.as_deref().unwrap_or_default();
            if kind != "ping" && kind != "authentication" {
                Counters::add(&self.counters.unknown_items, 1);
                tracing::debug!(task_type = kind, "item without taskUUID");
            }
            return;
        };
        if item.is_error() {
            let err = item.error.clone().unwrap_or_else(|| {
                ApiError::new("taskFailed", "the server reported status error without details")
                    .for_task(item.task_type.as_deref().unwrap_or_default(), uuid.to_string())
            });
            self.route_task_error(uuid, err);
            return;
        }
        let processing = matches!(item.status, Some(TaskStatus::Processing));
        let key = match item.result_key() {
            Some(k) => item.share_key(k),
            // A result of a task type without result UUIDs: keyed by its content.
            None if !processing && item.has_payload() => {
                serde_json::to_string(&item).map(SharedStr::from).unwrap_or_default()
            }
            None => {
                // An acknowledgement (async delivery) or a processing status.
                self.note_ack(uuid, &item);
                return;
            }
        };
        let complete = {
            let Some(mut task) = self.pending.get_mut(&uuid) else {
                Counters::add(&self.counters.unknown_items, 1);
                tracing::debug!(task_uuid = %uuid, "result for a task that is not pending");
                return;
            };
            if task.seen.contains(&key) {
                Counters::add(&self.counters.duplicates_dropped, 1);
                return;
            }
            task.seen.push(key);
            task.mailbox.push(Event::Result(Box::new(item)));
            task.seen.len() as u32 >= task.expected
        };
        if complete {
            self.complete(&uuid);
        }
    }

    fn note_ack(&self, uuid: Uuid, item: &ResultItem) {
        let poll_after = match self.pending.get(&uuid) {
            Some(task) => task.is_async && !task.polling,
            None => {
                if item.status.is_none() {
                    Counters::add(&self.counters.unknown_items, 1);
                }
                return;
            }
        };
        if poll_after && !matches!(item.status, Some(TaskStatus::Processing)) {
            self.schedule_poll(uuid, self.config.poll.initial);
        }
    }

    /// Routes one `errors` entry; returns it when it is a connection-level auth error.
    fn route_error(&self, err: ApiError) -> Option<ApiError> {
        match err.task_uuid() {
            Some(uuid) => {
                self.route_task_error(uuid, err);
                None
            }
            None => {
                let auth = err.kind() == ErrorKind::Auth || err.task_type.as_deref() == Some("authentication");
                if auth {
                    return Some(err);
                }
                Counters::add(&self.counters.unknown_items, 1);
                tracing::warn!(error = %err, "server error for no task");
                None
            }
        }
    }

    fn route_task_error(&self, uuid: Uuid, err: ApiError) {
        if err.is_conflict() {
            Counters::add(&self.counters.conflicts, 1);
            let grace = match self.pending.get(&uuid) {
                Some(task) => {
                    task.span.in_scope(|| tracing::debug!("server already has the task (conflictTaskUUID)"));
                    if task.resent_on_resumed { self.config.poll.resume_grace } else { Duration::ZERO }
                }
                None => {
                    Counters::add(&self.counters.unknown_items, 1);
                    return;
                }
            };
            self.schedule_poll(uuid, grace);
            return;
        }
        if !self.fail(&uuid, ClientError::Api(Box::new(err))) {
            Counters::add(&self.counters.unknown_items, 1);
            tracing::debug!(task_uuid = %uuid, "error for a task that is not pending");
        }
    }
}
