//! One way to submit: [`Client::submit`](super::Client::submit) takes anything that
//! is a [`Task`] and returns a [`Submit`], which is awaited for the task's
//! [`TaskStream`] (an owned handle: a stream of results, or awaited for all of them).
//!
//! The task is validated (when it needs to be) and serialized once, when `submit`
//! is called. Awaiting the `Submit` takes an in-flight slot (waiting for one, or
//! failing with [`ClientError::Busy`] after [`Submit::no_wait`]), registers the task
//! in the pending table and queues its frame. When a slot is free that happens on
//! the first poll, with no allocation; only a wait for a slot is boxed.

use super::error::ClientError;
use super::shared::Shared;
use super::{Client, TaskStream, deadlines};
use crate::protocol::{
    DeliveryMethod, ImageInference, ImageUpload, KontextTask, MediaStorage, RawTask, ValidationError, kontext,
};
use serde_json::Value;
use std::borrow::Cow;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use uuid::Uuid;

/// Anything the client can run; made with `From` (or `TryFrom<Value>` for raw JSON).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Task {
    /// A Kontext \[pro\] edit, validated when it was built: sent as is.
    Kontext(KontextTask),
    /// An `imageInference` of any model; a `bfl:3@1` one is checked against every
    /// Kontext rule when submitted.
    Inference(Box<ImageInference>),
    /// Any task as JSON; it completes after [`RawTask::expected_results`] distinct
    /// results, and an async one is polled.
    Raw(RawTask),
    /// `imageUpload`: one result with `imageUUID` and `imageURL`.
    Upload(ImageUpload),
    /// `mediaStorage`: one result with `mediaUUID` and `mediaURL`.
    Media(MediaStorage),
}

impl From<KontextTask> for Task {
    fn from(t: KontextTask) -> Task {
        Task::Kontext(t)
    }
}

impl From<ImageInference> for Task {
    fn from(t: ImageInference) -> Task {
        Task::Inference(Box::new(t))
    }
}

impl From<RawTask> for Task {
    fn from(t: RawTask) -> Task {
        Task::Raw(t)
    }
}

impl From<ImageUpload> for Task {
    fn from(t: ImageUpload) -> Task {
        Task::Upload(t)
    }
}

impl From<MediaStorage> for Task {
    fn from(t: MediaStorage) -> Task {
        Task::Media(t)
    }
}

impl TryFrom<Value> for Task {
    type Error = ValidationError;

    /// A raw task (it needs `taskType`; a `taskUUID` is added when missing).
    fn try_from(value: Value) -> Result<Task, ValidationError> {
        RawTask::with_generated_uuid(value).map(Task::Raw)
    }
}

/// What to submit, serialized once.
pub(crate) struct Prepared {
    pub uuid: Uuid,
    pub frame: String,
    pub expected: u32,
    pub is_async: bool,
    pub task_type: Cow<'static, str>,
}

impl Prepared {
    /// Serializes `task` once (with `serde_json`), into a buffer sized from
    /// `size_hint` (the task's large strings) so that it is neither regrown nor
    /// left with much slack.
    fn new(
        task: &impl serde::Serialize,
        uuid: Uuid,
        expected: u32,
        is_async: bool,
        task_type: impl Into<Cow<'static, str>>,
        size_hint: usize,
    ) -> Result<Self, ClientError> {
        let frame = Prepared::write(size_hint, |buf| serde_json::to_writer(buf, task))?;
        Ok(Prepared { uuid, frame, expected: expected.max(1), is_async, task_type: task_type.into() })
    }

    /// The frame `write` produces; `write` must write UTF-8 (`serde_json` and
    /// [`ImageInference::write_json`] do).
    fn write(
        size_hint: usize,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), serde_json::Error>,
    ) -> Result<String, ClientError> {
        let mut buf = Vec::with_capacity(size_hint + 256);
        write(&mut buf).map_err(|e| ClientError::Protocol(format!("cannot serialize task: {e}")))?;
        debug_assert!(std::str::from_utf8(&buf).is_ok());
        // SAFETY: both writers emit only UTF-8 (serde_json never emits invalid
        // UTF-8; `write_json` appends ASCII, whole `&str` values and serde_json's
        // output), checked again in debug builds.
        Ok(unsafe { String::from_utf8_unchecked(buf) })
    }

    /// An already validated inference task, written by its hand-written writer.
    fn inference(task: &ImageInference) -> Result<Self, ClientError> {
        let hint =
            task.positive_prompt.len() + task.reference_images().iter().map(|r| r.as_wire().len() + 3).sum::<usize>();
        Ok(Prepared {
            uuid: task.task_uuid,
            frame: Prepared::write(hint, |buf| task.write_json(buf))?,
            expected: task.expected_results().max(1),
            is_async: task.delivery_method() == DeliveryMethod::Async,
            task_type: Cow::Borrowed("imageInference"),
        })
    }
}

impl Task {
    /// The task's UUID.
    pub fn task_uuid(&self) -> Uuid {
        match self {
            Task::Kontext(t) => t.task_uuid(),
            Task::Inference(t) => t.task_uuid,
            Task::Raw(t) => t.task_uuid(),
            Task::Upload(t) => t.task_uuid,
            Task::Media(t) => t.task_uuid,
        }
    }

    /// Validates (a `bfl:3@1` inference not built by the Kontext builder) and
    /// serializes the task.
    pub(crate) fn prepare(self) -> Result<Prepared, ClientError> {
        match self {
            Task::Kontext(t) => Prepared::inference(t.as_inference()),
            Task::Inference(t) => {
                if t.model == kontext::MODEL {
                    kontext::validate(&t)?;
                }
                Prepared::inference(&t)
            }
            Task::Raw(r) => {
                Prepared::new(&r, r.task_uuid(), r.expected_results(), r.is_async(), r.task_type().to_string(), 256)
            }
            Task::Upload(u) => Prepared::new(&u, u.task_uuid, 1, false, "imageUpload", u.image.len()),
            Task::Media(m) => Prepared::new(&m, m.task_uuid, 1, false, "mediaStorage", 256),
        }
    }
}

/// A task on its way in: `.await` it for the task's [`TaskStream`].
///
/// Options, before awaiting: [`Submit::timeout`] (the deadline for this task, the
/// wait for a slot included; default [`ClientConfig::task_timeout`](super::ClientConfig))
/// and [`Submit::no_wait`] (fail with [`ClientError::Busy`] rather than wait for a
/// free in-flight slot). Owns a handle to the client: it borrows nothing.
#[must_use = "a task is submitted when its Submit is awaited"]
pub struct Submit {
    client: Client,
    prepared: Result<Prepared, ClientError>,
    timeout: Option<Duration>,
    no_wait: bool,
}

impl std::fmt::Debug for Submit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submit")
            .field("task_uuid", &self.task_uuid())
            .field("timeout", &self.timeout)
            .field("no_wait", &self.no_wait)
            .finish()
    }
}

impl Submit {
    pub(crate) fn new(client: Client, task: Task) -> Submit {
        Submit { client, prepared: task.prepare(), timeout: None, no_wait: false }
    }

    /// This task's deadline, from when the submission is awaited.
    pub fn timeout(mut self, timeout: Duration) -> Submit {
        self.timeout = Some(timeout);
        self
    }

    /// Fail with [`ClientError::Busy`] instead of waiting when every in-flight
    /// slot is taken.
    pub fn no_wait(mut self) -> Submit {
        self.no_wait = true;
        self
    }

    /// The task's UUID (`None` when the task was refused before sending).
    pub fn task_uuid(&self) -> Option<Uuid> {
        self.prepared.as_ref().ok().map(|p| p.uuid)
    }
}

impl IntoFuture for Submit {
    type Output = Result<TaskStream, ClientError>;
    type IntoFuture = Submitting;

    fn into_future(self) -> Submitting {
        let timeout = self.timeout.unwrap_or(self.client.inner.shared.config.task_timeout);
        // The deadline covers the wait for a slot too.
        let due = deadlines::due(&self.client.inner.shared, timeout);
        let (prepared, error) = match self.prepared {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e)),
        };
        Submitting { client: self.client, prepared, error, timeout, due, no_wait: self.no_wait, waiting: None }
    }
}

type SlotWait = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, ClientError>> + Send>>;

/// The future of an awaited [`Submit`].
#[must_use = "futures do nothing unless polled"]
pub struct Submitting {
    client: Client,
    prepared: Option<Prepared>,
    error: Option<ClientError>,
    timeout: Duration,
    due: deadlines::Due,
    no_wait: bool,
    waiting: Option<SlotWait>,
}

impl std::fmt::Debug for Submitting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submitting").field("waiting_for_a_slot", &self.waiting.is_some()).finish()
    }
}

impl Future for Submitting {
    type Output = Result<TaskStream, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(e) = this.error.take() {
            return Poll::Ready(Err(e));
        }
        let permit = loop {
            if let Some(wait) = this.waiting.as_mut() {
                let permit = ready!(wait.as_mut().poll(cx))?;
                // The task's duration starts when it has a slot (its deadline does not).
                this.due.submitted_us = this.client.inner.shared.now_us();
                break permit;
            }
            let shared = &this.client.inner.shared;
            shared.check_open()?;
            // A free slot is taken without arming a timer; only a wait is boxed, so
            // that a submission does not carry a timer's worth of state.
            match shared.tasks.permits.clone().try_acquire_owned() {
                Ok(p) => break p,
                Err(_) if this.no_wait => {
                    return Poll::Ready(Err(ClientError::Busy { limit: shared.config.max_in_flight }));
                }
                Err(_) => this.waiting = Some(Box::pin(wait_for_slot(shared.clone(), this.timeout))),
            }
        };
        let Some(prepared) = this.prepared.take() else {
            // Polled again after it completed.
            return Poll::Ready(Err(ClientError::Closed));
        };
        Poll::Ready(this.client.register(prepared, Some(permit), this.timeout, this.due, true))
    }
}

/// Waits up to `timeout` for an in-flight slot.
pub(crate) async fn wait_for_slot(shared: Arc<Shared>, timeout: Duration) -> Result<OwnedSemaphorePermit, ClientError> {
    let started = std::time::Instant::now();
    match tokio::time::timeout(timeout, shared.tasks.permits.clone().acquire_owned()).await {
        Ok(Ok(p)) => {
            super::telemetry::slot_waited(started.elapsed());
            Ok(p)
        }
        Ok(Err(_)) => Err(ClientError::Closed),
        Err(_) => Err(ClientError::Timeout { after: timeout, connection: shared.link.state.borrow().to_string() }),
    }
}
