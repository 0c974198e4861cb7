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
use super::metrics::Counters;
use super::pending::PendingTask;
use super::shared::Shared;
use crate::protocol::{ApiError, ErrorKind, Frame, ResultItem, TaskStatus};
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
            if item.pong == Some(true) {
                self.link.pongs.send_modify(|n| *n += 1);
            } else if kind != "ping" && kind != "authentication" {
                Counters::add(&self.counters.unknown_items, 1);
                tracing::debug!(task_type = kind, "item without taskUUID");
            }
            return;
        };
        if item.is_error() {
            let err = item.error.as_deref().cloned().unwrap_or_else(|| {
                ApiError::new("taskFailed", "the server reported status error without details")
                    .for_task(item.task_type.as_deref().unwrap_or_default(), uuid.to_string())
            });
            self.route_task_error(uuid, err);
            return;
        }
        let processing = matches!(item.status, Some(TaskStatus::Processing));
        let content_key;
        let key: &str = match item.result_key() {
            Some(k) => k,
            // A result of a task type without result UUIDs: keyed by its content.
            None if !processing && item.has_payload() => {
                content_key = serde_json::to_string(&item).unwrap_or_default();
                &content_key
            }
            None => {
                // An acknowledgement (async delivery) or a processing status.
                self.note_ack(uuid, &item);
                return;
            }
        };
        // The common case, the last result of a task: take the task out of the
        // table and hand over result and completion together. (Only the reader
        // adds results, so a task not taken here is not complete after this one.)
        let seen = |task: &PendingTask| task.seen.iter().any(|s| s.as_str() == key);
        let last = |task: &PendingTask| !seen(task) && task.seen.len() as u32 + 1 >= task.expected;
        if let Some((_, task)) = self.tasks.pending.remove_if(&uuid, |_, task| last(task)) {
            self.completed(task, Some(item));
            return;
        }
        let Some(mut task) = self.tasks.pending.get_mut(&uuid) else {
            Counters::add(&self.counters.unknown_items, 1);
            tracing::debug!(task_uuid = %uuid, "result for a task that is not pending");
            return;
        };
        if seen(&task) {
            Counters::add(&self.counters.duplicates_dropped, 1);
            super::telemetry::count(super::telemetry::Event::DuplicateDropped, 1);
            return;
        }
        task.seen.push(item.share_key(key));
        task.mailbox.push_result(item);
    }

    fn note_ack(&self, uuid: Uuid, item: &ResultItem) {
        let poll_after = match self.tasks.pending.get_mut(&uuid) {
            Some(mut task) => {
                task.acknowledged = true;
                task.is_async && !task.polling
            }
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
            super::telemetry::count(super::telemetry::Event::Conflict, 1);
            let grace = match self.tasks.pending.get(&uuid) {
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

#[cfg(test)]
mod tests {
    use super::super::config::ClientConfig;
    use super::super::mailbox::{Event, Mailbox};
    use super::super::pending::PendingTask;
    use super::*;
    use crate::protocol::{ApiKey, decode_frame};
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::task::{Context, Poll};
    use tokio::sync::mpsc;

    fn shared() -> Shared {
        let (t, _) = mpsc::channel(8);
        let (p, _) = mpsc::channel(8);
        Shared::new(ClientConfig::new(ApiKey::new("k")), t, p)
    }

    fn add(s: &Shared, uuid: Uuid, expected: u32, is_async: bool) -> Arc<Mailbox> {
        let mailbox = Arc::new(Mailbox::default());
        s.tasks.pending.insert(uuid, PendingTask::sent(s.next_seq(), expected, mailbox.clone(), is_async));
        mailbox
    }

    fn drain(m: &Mailbox) -> Vec<Event> {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        while let Poll::Ready(e) = m.poll_pop(&mut cx) {
            out.push(e);
        }
        out
    }

    fn frame(json: serde_json::Value) -> Frame {
        decode_frame(&crate::protocol::SharedStr::from(json.to_string())).unwrap()
    }

    fn item(task: Uuid, image: &str) -> serde_json::Value {
        serde_json::json!({"taskType":"imageInference","taskUUID":task.to_string(),"imageUUID":image,"imageURL":"http://x/y.jpg"})
    }

    #[test]
    fn results_complete_after_distinct_images_and_duplicates_are_dropped() {
        let s = shared();
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let ma = add(&s, a, 2, false);
        let mb = add(&s, b, 1, false);
        s.dispatch(frame(serde_json::json!({"data":[item(a,"i1"), item(a,"i1"), item(b,"j1")]})));
        assert_eq!(s.counters.duplicates_dropped.load(Ordering::Relaxed), 1);
        assert!(s.tasks.pending.contains_key(&a), "a needs two distinct images");
        assert!(!s.tasks.pending.contains_key(&b));
        assert!(matches!(drain(&mb).as_slice(), [Event::Result(_), Event::Done]));
        s.dispatch(frame(serde_json::json!({"data":[item(a,"i2"), item(a,"i2")]})));
        assert!(!s.tasks.pending.contains_key(&a));
        assert!(matches!(drain(&ma).as_slice(), [Event::Result(_), Event::Result(_), Event::Done]));
        // Items for a finished task (the repeat of i2 above, and a late i3) are counted, not fatal.
        s.dispatch(frame(serde_json::json!({"data":[item(a,"i3")]})));
        assert_eq!(s.counters.unknown_items.load(Ordering::Relaxed), 2);
        assert!(drain(&ma).is_empty());
    }

    #[test]
    fn an_error_fails_exactly_its_own_task() {
        let s = shared();
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let ma = add(&s, a, 1, false);
        let mb = add(&s, b, 1, false);
        let auth = s.dispatch(frame(serde_json::json!({"errors":[
            {"code":"invalidPositivePrompt","message":"bad","parameter":"positivePrompt","taskUUID":a.to_string()},
            {"code":"internalServerError","message":"stray, no task"},
            {"code":"providerError","taskUUID":Uuid::new_v4().to_string()}
        ]})));
        assert!(auth.is_none(), "stray errors are not connection errors");
        match drain(&ma).as_slice() {
            [Event::Failed(ClientError::Api(e))] => assert_eq!(e.code, "invalidPositivePrompt"),
            other => panic!("{other:?}"),
        }
        assert!(drain(&mb).is_empty());
        assert!(s.tasks.pending.contains_key(&b));
        assert_eq!(s.counters.unknown_items.load(Ordering::Relaxed), 2);
        // A status:error item inside data fails its task too.
        s.dispatch(frame(serde_json::json!({"data":[{"taskUUID":b.to_string(),"status":"error","error":{"code":"taskFailed","message":"x"}}]})));
        assert!(matches!(drain(&mb).as_slice(), [Event::Failed(ClientError::Api(_))]));
    }

    #[test]
    fn an_auth_error_without_task_is_reported_to_the_connection() {
        let s = shared();
        let err = s.dispatch(frame(
            serde_json::json!({"errors":[{"code":"invalidApiKey","message":"no","taskType":"authentication"}]}),
        ));
        assert_eq!(err.map(|e| e.kind()), Some(ErrorKind::Auth));
    }

    #[test]
    fn conflict_keeps_the_task_and_polls_it() {
        let s = shared();
        let a = Uuid::new_v4();
        let ma = add(&s, a, 1, false);
        s.dispatch(frame(
            serde_json::json!({"errors":[{"code":"conflictTaskUUID","message":"exists","taskUUID":a.to_string()}]}),
        ));
        assert!(drain(&ma).is_empty());
        assert!(s.tasks.pending.get(&a).is_some_and(|t| t.polling));
        assert!(s.polls.set.lock().unwrap().contains(&a));
        assert_eq!(s.counters.conflicts.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn async_ack_schedules_polling_and_cumulative_replies_deliver_once() {
        let s = shared();
        let a = Uuid::new_v4();
        let ma = add(&s, a, 2, true);
        s.dispatch(frame(serde_json::json!({"data":[{"taskType":"imageInference","taskUUID":a.to_string()}]})));
        assert!(s.tasks.pending.get(&a).is_some_and(|t| t.polling));
        let processing =
            serde_json::json!({"taskType":"imageInference","taskUUID":a.to_string(),"status":"processing"});
        let mut first = item(a, "i1");
        first["status"] = "success".into();
        let mut second = item(a, "i2");
        second["status"] = "success".into();
        s.dispatch(frame(serde_json::json!({"data":[first.clone(), processing]})));
        s.dispatch(frame(serde_json::json!({"data":[first, second]})));
        assert!(matches!(drain(&ma).as_slice(), [Event::Result(_), Event::Result(_), Event::Done]));
        assert_eq!(s.counters.duplicates_dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn raw_results_without_uuids_are_keyed_by_content() {
        let s = shared();
        let a = Uuid::new_v4();
        let ma = add(&s, a, 1, false);
        s.dispatch(frame(
            serde_json::json!({"data":[{"taskType":"promptEnhance","taskUUID":a.to_string(),"text":"better"}]}),
        ));
        assert!(matches!(drain(&ma).as_slice(), [Event::Result(_), Event::Done]));
    }
}
