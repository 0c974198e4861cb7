//! The connection engine: one multiplexed WebSocket shared by every task.
//!
//! ```text
//!  callers ──submit──► pending table (DashMap<taskUUID, task>) ──► outbound queue ─► writer ─┐
//!     ▲                     ▲            ▲                                                  │ socket
//!     │ TaskStream           │ dispatch   │ getResponse polls ◄── poller                     ▼
//!     └──── mailbox ◄────────┴──── reader (decode_frame) ◄──────────────────────────────── server
//!                      supervisor: connect · authenticate · keepalive · reconnect · resend
//! ```
//!
//! - **Submit** validates, serializes once, takes an in-flight slot, registers the
//!   task in the pending table *before* its frame is queued.
//! - The **writer** drains the queue, batching tasks into array frames (feed many,
//!   flush once); it also sends keepalive pings and `getResponse` polls.
//! - The **reader** decodes each frame and routes every item by `taskUUID` into the
//!   task's mailbox; it never waits on a caller.
//! - The **deadline keeper** fails overdue tasks from one scan of the table (no
//!   timer per task).
//! - The **supervisor** reconnects after any drop, resumes the session, and resends
//!   every pending task under its own `taskUUID`; a `conflictTaskUUID` answer is
//!   followed by session delivery or `getResponse` polling (see protocol.md §7).

#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod bench_support;
mod config;
mod connection;
mod deadlines;
mod dispatch;
mod driver;
mod error;
mod lookup;
mod mailbox;
mod metrics;
mod pending;
mod poller;
mod shared;
mod state;
mod supervisor;
mod task;

pub use config::{ClientConfig, DEFAULT_URL, Keepalive, PollPolicy, ReconnectPolicy};
pub use error::{ClientError, PartialFailure};
pub use lookup::Lookup;
pub use metrics::Metrics;
pub use state::ConnectionState;
pub use task::{ImageOutput, ImageResult, KontextStream, TaskStream};

use crate::protocol::{
    ApiKey, ClientTask, DeliveryMethod, ImageInference, ImageUpload, MediaStorage, RawTask, kontext,
};
use mailbox::Mailbox;
use metrics::Counters;
use pending::{NewTask, PendingTask};
use serde_json::Value;
use shared::Shared;
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio::time::Instant;
use uuid::Uuid;

/// A cheap-to-clone handle to one multiplexed Runware connection.
///
/// ```no_run
/// # async fn demo() -> Result<(), runware_ws::ClientError> {
/// use runware_ws::{Client, Kontext, KontextSize};
///
/// let client = Client::builder().api_key("my-key").connect().await?;
/// let task = Kontext::builder()
///     .prompt("Make it a rainy night in the same city")
///     .size(KontextSize::R16x9)
///     .reference_image("https://example.com/street.jpg")
///     .build()?;
/// for image in client.kontext(task).await? {
///     println!("{} {:?}", image.image_uuid, image.output);
/// }
/// client.close(std::time::Duration::from_secs(5)).await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.request_shutdown();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.shared.config.url)
            .field("state", &*self.inner.shared.state.borrow())
            .field("pending", &self.inner.shared.pending.len())
            .finish()
    }
}

/// Builds a [`Client`]. Defaults are those of [`ClientConfig::new`].
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    config: ClientConfig,
}

impl ClientBuilder {
    /// The WebSocket URL (`ws://` or `wss://`). Default [`DEFAULT_URL`].
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.config.url = url.into();
        self
    }
    /// The API key. Required.
    pub fn api_key(mut self, key: impl Into<ApiKey>) -> Self {
        self.config.api_key = key.into();
        self
    }
    /// Most tasks outstanding at once. Default 1024.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.config.max_in_flight = n.max(1);
        self
    }
    /// Default per-task deadline. Default 5 min.
    pub fn task_timeout(mut self, d: Duration) -> Self {
        self.config.task_timeout = d;
        self
    }
    /// Connect (TCP + TLS + WebSocket) timeout. Default 10 s.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.config.connect_timeout = d;
        self
    }
    /// Authentication reply timeout. Default 10 s.
    pub fn auth_timeout(mut self, d: Duration) -> Self {
        self.config.auth_timeout = d;
        self
    }
    /// Reconnect policy.
    pub fn reconnect(mut self, p: ReconnectPolicy) -> Self {
        self.config.reconnect = p;
        self
    }
    /// Keepalive policy.
    pub fn keepalive(mut self, k: Keepalive) -> Self {
        self.config.keepalive = k;
        self
    }
    /// getResponse polling policy.
    pub fn poll(mut self, p: PollPolicy) -> Self {
        self.config.poll = p;
        self
    }
    /// Largest inbound message in bytes. Default 64 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.max_message_size = bytes;
        self
    }
    /// Most tasks batched into one frame. Default 32.
    pub fn max_tasks_per_frame(mut self, n: usize) -> Self {
        self.config.max_tasks_per_frame = n.max(1);
        self
    }
    /// Trusts an extra CA certificate (DER), on top of the webpki roots.
    pub fn add_root_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.config.extra_roots.push(der.into());
        self
    }
    /// Trusts only the certificates added with `add_root_certificate`.
    pub fn only_custom_roots(mut self, yes: bool) -> Self {
        self.config.only_extra_roots = yes;
        self
    }
    /// The configuration as it stands.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Starts the client; it connects in the background. Must be called within a
    /// Tokio runtime.
    pub fn build(self) -> Result<Client, ClientError> {
        if self.config.api_key.is_blank() {
            return Err(ClientError::Config("an API key is required".into()));
        }
        let scheme_ok = self.config.url.starts_with("ws://") || self.config.url.starts_with("wss://");
        if !scheme_ok || url::Url::parse(&self.config.url).is_err() {
            return Err(ClientError::Config(format!("the URL must be ws:// or wss://, got {:?}", self.config.url)));
        }
        let cap = self.config.max_in_flight.max(1);
        let (task_tx, task_rx) = mpsc::channel(cap);
        let (poll_tx, poll_rx) = mpsc::channel(cap);
        let shared = Arc::new(Shared::new(self.config, task_tx, poll_tx));
        tokio::spawn(supervisor::run(shared.clone(), driver::Queues { tasks: task_rx, polls: poll_rx }));
        tokio::spawn(poller::run(shared.clone()));
        tokio::spawn(deadlines::run(shared.clone()));
        Ok(Client { inner: Arc::new(Inner { shared }) })
    }

    /// Starts the client and waits for the first connection to authenticate.
    /// Fails with [`ClientError::Auth`] on a refused key and
    /// [`ClientError::Unreachable`] when the reconnect budget runs out.
    pub async fn connect(self) -> Result<Client, ClientError> {
        let client = self.build()?;
        client.wait_connected().await?;
        Ok(client)
    }
}

/// Depths of the client's queues: see [`Client::queue_depths`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueDepths {
    /// Tasks in the pending table.
    pub pending: usize,
    /// Task UUIDs waiting for the writer (cancelled ones included until drained).
    pub outbound: usize,
    /// `getResponse` polls waiting for the writer.
    pub polls_queued: usize,
    /// Tasks being polled (pruned lazily after they end).
    pub poll_set: usize,
}

/// What to submit, serialized once.
struct Prepared {
    uuid: Uuid,
    frame: String,
    expected: u32,
    is_async: bool,
    task_type: Cow<'static, str>,
}

impl Prepared {
    /// Serializes `task` once, into a buffer sized from `size_hint` (the task's
    /// large strings) so that it is neither regrown nor left with much slack.
    fn new(
        task: &impl serde::Serialize,
        uuid: Uuid,
        expected: u32,
        is_async: bool,
        task_type: impl Into<Cow<'static, str>>,
        size_hint: usize,
    ) -> Result<Self, ClientError> {
        let mut buf = Vec::with_capacity(size_hint + 256);
        serde_json::to_writer(&mut buf, task)
            .map_err(|e| ClientError::Protocol(format!("cannot serialize task: {e}")))?;
        let frame = String::from_utf8(buf).map_err(|e| ClientError::Protocol(format!("task is not UTF-8: {e}")))?;
        Ok(Prepared { uuid, frame, expected: expected.max(1), is_async, task_type: task_type.into() })
    }
}

/// The bytes of an inference task's large strings, to size its serialization buffer.
fn inference_size_hint(task: &ImageInference) -> usize {
    task.positive_prompt.len() + task.reference_images().iter().map(|r| r.as_wire().len() + 3).sum::<usize>()
}

impl Client {
    /// A builder with the documented defaults.
    pub fn builder() -> ClientBuilder {
        ClientBuilder { config: ClientConfig::new(ApiKey::new("")) }
    }

    /// Runs a Kontext \[pro\] task and waits for all its images; a failure keeps
    /// the images received before it ([`PartialFailure`]).
    ///
    /// The task is validated and serialized when this is called; the returned
    /// future holds only the serialized task, not the (larger) typed one.
    pub fn kontext(
        &self,
        task: ImageInference,
    ) -> impl Future<Output = Result<Vec<ImageResult>, PartialFailure<ImageResult>>> + Send + '_ {
        let prepared = prepare_kontext(&task);
        async move {
            let prepared = prepared.map_err(PartialFailure::new)?;
            self.submit_kontext(prepared).await.map_err(PartialFailure::new)?.collect_all().await
        }
    }

    /// Submits a Kontext \[pro\] task (waiting for an in-flight slot) and streams its images.
    ///
    /// The task is validated and serialized when this is called.
    pub fn kontext_stream(
        &self,
        task: ImageInference,
    ) -> impl Future<Output = Result<KontextStream, ClientError>> + Send + '_ {
        let prepared = prepare_kontext(&task);
        async move { self.submit_kontext(prepared?).await }
    }

    async fn submit_kontext(&self, prepared: Prepared) -> Result<KontextStream, ClientError> {
        Ok(KontextStream { inner: self.submit_prepared(prepared, None, true).await? })
    }

    /// Like [`Client::kontext_stream`], but fails with [`ClientError::Busy`] instead of waiting for a slot.
    pub fn try_kontext_stream(&self, task: ImageInference) -> Result<KontextStream, ClientError> {
        let prepared = prepare_kontext(&task)?;
        let permit = self
            .inner
            .shared
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| ClientError::Busy { limit: self.inner.shared.config.max_in_flight })?;
        Ok(KontextStream { inner: self.register_with(prepared, Some(permit), None, true)? })
    }

    /// Submits any task as raw JSON (it needs `taskType`; a `taskUUID` is added when
    /// missing) and streams its result items. It completes after
    /// [`RawTask::expected_results`] distinct results (`numberResults`, or
    /// `promptVersions` for `promptEnhance`); an async one is polled.
    pub async fn raw_stream(&self, task: Value) -> Result<TaskStream, ClientError> {
        let raw = RawTask::with_generated_uuid(task)?;
        let task_type = raw.task_type().to_string();
        let prepared = Prepared::new(&raw, raw.task_uuid(), raw.expected_results(), raw.is_async(), task_type, 256)?;
        self.submit_prepared(prepared, None, true).await
    }

    /// Runs a raw task and waits for all its result items; a failure keeps the
    /// items received before it.
    pub async fn raw(
        &self,
        task: Value,
    ) -> Result<Vec<crate::protocol::ResultItem>, PartialFailure<crate::protocol::ResultItem>> {
        self.raw_stream(task).await.map_err(PartialFailure::new)?.collect_all().await
    }

    /// Submits a typed task of any kind (an `imageInference` is sent as is, without
    /// the Kontext rules; use [`Client::kontext_stream`] for those).
    pub async fn submit(&self, task: ClientTask, timeout: Option<Duration>) -> Result<TaskStream, ClientError> {
        let prepared = match &task {
            ClientTask::ImageInference(t) => Prepared::new(
                t.as_ref(),
                t.task_uuid,
                t.expected_results(),
                t.delivery_method() == DeliveryMethod::Async,
                "imageInference",
                inference_size_hint(t),
            )?,
            ClientTask::Raw(r) => {
                Prepared::new(r, r.task_uuid(), r.expected_results(), r.is_async(), r.task_type().to_string(), 256)?
            }
            other => {
                let uuid = other.task_uuid().ok_or_else(|| {
                    ClientError::Protocol(format!("{} is not a task with results", other.task_type()))
                })?;
                Prepared::new(other, uuid, 1, false, other.task_type().to_string(), 256)?
            }
        };
        self.submit_prepared(prepared, timeout, true).await
    }

    /// Uploads an image (data URI, base64 or URL) with `imageUpload`; the result
    /// carries `imageUUID` and `imageURL`.
    pub async fn upload_image(&self, image: impl Into<String>) -> Result<crate::protocol::ResultItem, ClientError> {
        let task = ClientTask::ImageUpload(ImageUpload::new(image));
        first(self.submit(task, None).await?.collect_all().await?)
    }

    /// Stores media with `mediaStorage`; the result carries `mediaUUID` and `mediaURL`.
    pub async fn store_media(&self, media: impl Into<String>) -> Result<crate::protocol::ResultItem, ClientError> {
        let task = ClientTask::MediaStorage(MediaStorage::upload(media));
        first(self.submit(task, None).await?.collect_all().await?)
    }

    /// Re-attaches to a task this client did not submit (or submitted in an earlier
    /// run) and collects `expected` distinct results with `getResponse`.
    pub async fn attach(
        &self,
        task_uuid: Uuid,
        expected: u32,
        timeout: Option<Duration>,
    ) -> Result<TaskStream, ClientError> {
        let permit = self.acquire(timeout.unwrap_or(self.inner.shared.config.task_timeout)).await?;
        let prepared = Prepared {
            uuid: task_uuid,
            frame: String::new(),
            expected: expected.max(1),
            is_async: true,
            task_type: Cow::Borrowed("getResponse"),
        };
        let stream = self.register_with(prepared, Some(permit), timeout, false)?;
        self.inner.shared.schedule_poll(task_uuid, Duration::ZERO);
        Ok(stream)
    }

    /// Fetches every result of `task_uuid` that the server has so far.
    pub async fn get_response(
        &self,
        task_uuid: Uuid,
        expected: u32,
    ) -> Result<Vec<crate::protocol::ResultItem>, ClientError> {
        Ok(self.attach(task_uuid, expected, None).await?.collect_all().await?)
    }

    /// Watches the connection state.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.shared.state.subscribe()
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> Metrics {
        self.inner.shared.counters.snapshot()
    }

    /// The latest reconnect delays (up to 256), oldest first: what the backoff
    /// policy actually produced.
    pub fn reconnect_delays(&self) -> Vec<Duration> {
        self.inner.shared.reconnect_delays.lock().map(|d| d.iter().copied().collect()).unwrap_or_default()
    }

    /// How full the internal queues are now (all zero when the client is idle).
    pub fn queue_depths(&self) -> QueueDepths {
        let s = &self.inner.shared;
        QueueDepths {
            pending: s.pending.len(),
            outbound: s.outbound.max_capacity() - s.outbound.capacity(),
            polls_queued: s.control.max_capacity() - s.control.capacity(),
            poll_set: s.poll_set.lock().map(|p| p.len()).unwrap_or(0),
        }
    }

    /// Tasks in the pending table now.
    pub fn pending(&self) -> usize {
        self.inner.shared.pending.len()
    }

    /// Waits until the client is connected (or fails for good).
    pub async fn wait_connected(&self) -> Result<(), ClientError> {
        let mut rx = self.state();
        loop {
            {
                let state = rx.borrow_and_update();
                match &*state {
                    ConnectionState::Connected { .. } => return Ok(()),
                    ConnectionState::Closed => {
                        return Err(self.inner.shared.terminal_error().unwrap_or(ClientError::Closed));
                    }
                    ConnectionState::Disconnected { last_error } => {
                        let attempts = self.inner.shared.config.reconnect.max_attempts.unwrap_or(0);
                        return Err(ClientError::Unreachable { attempts, last_error: last_error.clone() });
                    }
                    _ => {}
                }
            }
            if rx.changed().await.is_err() {
                return Err(ClientError::Closed);
            }
        }
    }

    /// Stops accepting tasks, lets pending tasks finish for up to `grace`, then
    /// closes the socket with a close frame. Tasks still pending get [`ClientError::Closed`].
    pub async fn close(&self, grace: Duration) {
        let shared = &self.inner.shared;
        shared.closing.store(true, Ordering::Release);
        let deadline = Instant::now() + grace;
        while !shared.pending.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10).min(grace)).await;
        }
        shared.set_terminal(ClientError::Closed);
        shared.request_shutdown();
        let mut rx = self.state();
        let _ = tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|s| *s == ConnectionState::Closed)).await;
        shared.fail_all(&ClientError::Closed);
    }

    async fn acquire(&self, timeout: Duration) -> Result<OwnedSemaphorePermit, ClientError> {
        let shared = &self.inner.shared;
        if let Some(e) = shared.terminal_error() {
            return Err(e);
        }
        if shared.closing.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        // A free slot is taken without arming a timer; the wait for one is boxed,
        // so that every submission's future does not carry a timer's worth of state.
        if let Ok(p) = shared.permits.clone().try_acquire_owned() {
            return Ok(p);
        }
        Box::pin(self.wait_for_slot(timeout)).await
    }

    async fn wait_for_slot(&self, timeout: Duration) -> Result<OwnedSemaphorePermit, ClientError> {
        let shared = &self.inner.shared;
        match tokio::time::timeout(timeout, shared.permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout { after: timeout, connection: shared.state.borrow().to_string() }),
        }
    }

    async fn submit_prepared(
        &self,
        prepared: Prepared,
        timeout: Option<Duration>,
        send: bool,
    ) -> Result<TaskStream, ClientError> {
        let timeout = timeout.unwrap_or(self.inner.shared.config.task_timeout);
        // The deadline covers the wait for a slot too.
        let deadline = deadlines::deadline_ms(&self.inner.shared, timeout);
        let permit = self.acquire(timeout).await?;
        self.register(prepared, Some(permit), timeout, deadline, send)
    }

    /// Like [`Client::register`], with the deadline starting now.
    fn register_with(
        &self,
        prepared: Prepared,
        permit: Option<OwnedSemaphorePermit>,
        timeout: Option<Duration>,
        send: bool,
    ) -> Result<TaskStream, ClientError> {
        let timeout = timeout.unwrap_or(self.inner.shared.config.task_timeout);
        let deadline = deadlines::deadline_ms(&self.inner.shared, timeout);
        self.register(prepared, permit, timeout, deadline, send)
    }

    /// Puts the task in the pending table, then queues it for the writer.
    fn register(
        &self,
        prepared: Prepared,
        permit: Option<OwnedSemaphorePermit>,
        timeout: Duration,
        deadline_ms: u64,
        send: bool,
    ) -> Result<TaskStream, ClientError> {
        let shared = &self.inner.shared;
        if let Some(e) = shared.terminal_error() {
            return Err(e);
        }
        if shared.closing.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        let uuid = prepared.uuid;
        let mailbox = Arc::new(Mailbox::default());
        let span = tracing::debug_span!("task", task_uuid = %uuid, task_type = %prepared.task_type);
        let entry = PendingTask::new(NewTask {
            seq: shared.next_seq(),
            frame: send.then_some(prepared.frame),
            expected: prepared.expected,
            mailbox: mailbox.clone(),
            is_async: prepared.is_async,
            deadline_ms,
            timeout,
            permit,
            span,
            next_poll: shared.epoch,
        });
        match shared.pending.entry(uuid) {
            dashmap::Entry::Occupied(_) => return Err(ClientError::DuplicateTask(uuid)),
            dashmap::Entry::Vacant(v) => {
                v.insert(entry);
            }
        }
        Counters::add(&shared.counters.tasks_submitted, 1);
        let stream = TaskStream { client: self.clone(), uuid, expected: prepared.expected, mailbox, done: false };
        shared.watch_deadline(deadline_ms);
        if send && shared.outbound.try_send(uuid).is_err() {
            // The queue is full of cancelled tasks' entries (or the writer is between
            // connections): the writer's sweep sends everything not yet sent.
            shared.sweep.notify_one();
        }
        if !shared.connected.load(Ordering::Acquire) {
            // An idle supervisor (gave up on an outage) reconnects for new work.
            shared.supervisor_wake.notify_one();
        }
        if let Some(e) = shared.terminal_error() {
            // The client ended while this task was being registered.
            shared.fail(&uuid, e);
        }
        Ok(stream)
    }
}

fn prepare_kontext(task: &ImageInference) -> Result<Prepared, ClientError> {
    kontext::validate(task)?;
    Prepared::new(
        task,
        task.task_uuid,
        task.expected_results(),
        task.delivery_method() == DeliveryMethod::Async,
        "imageInference",
        inference_size_hint(task),
    )
}

fn first(mut items: Vec<crate::protocol::ResultItem>) -> Result<crate::protocol::ResultItem, ClientError> {
    if items.is_empty() {
        return Err(ClientError::Protocol("the task ended without a result".into()));
    }
    Ok(items.swap_remove(0))
}
