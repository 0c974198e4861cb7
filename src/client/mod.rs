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
mod proxy;
mod references;
#[cfg(test)]
mod scripted;
mod shared;
mod state;
mod submit;
mod supervisor;
mod task;
pub mod telemetry;
mod tunnel;

pub use config::{ClientConfig, DEFAULT_URL, DEFAULT_USER_AGENT, Keepalive, PollPolicy, ReconnectPolicy};
pub use error::{Cause, ClientError, ConfigError, PartialFailure};
pub use lookup::Lookup;
pub use metrics::Metrics;
pub use proxy::{Proxy, ProxyPolicy};
pub use references::{ReferenceCache, Uploaded};
pub use state::ConnectionState;
pub use submit::{Submit, Submitting, Task};
pub use task::{Collect, ImageOutput, ImageResult, KontextStream, TaskStream};

use crate::protocol::{ApiKey, ImageUpload, KontextTask, MediaStorage, ResultItem};
use crate::sync::lock;
use mailbox::Mailbox;
use metrics::Counters;
use pending::{NewTask, PendingTask};
use serde_json::Value;
use shared::Shared;
use std::borrow::Cow;
use std::future::Future;
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
            .field("state", &*self.inner.shared.link.state.borrow())
            .field("pending", &self.inner.shared.tasks.pending.len())
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
    /// The `User-Agent` of the WebSocket handshake. Default `runware-ws/VERSION`
    /// ([`DEFAULT_USER_AGENT`]); an application may name itself
    /// first, e.g. `my-service/2.1 runware-ws/0.1.0`.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.config.user_agent = user_agent.into();
        self
    }
    /// Connects through this HTTP CONNECT proxy (TLS runs inside the tunnel), instead of
    /// the one the environment names (`HTTPS_PROXY` … `NO_PROXY`, the default).
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.config.proxy = ProxyPolicy::Fixed(proxy);
        self
    }
    /// Connects directly, whatever the environment says.
    pub fn no_proxy(mut self) -> Self {
        self.config.proxy = ProxyPolicy::Disabled;
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
        self.check()?;
        let connector = connection::WsConnector::new_for(&self.config).map_err(|e| match e {
            connection::ConnectError::Config(c) => ClientError::Config(c),
            other => ClientError::Config(ConfigError::new(other.to_string())),
        })?;
        Ok(self.build_with(connector))
    }

    /// Checks the configuration.
    fn check(&self) -> Result<(), ClientError> {
        if self.config.api_key.is_blank() {
            return Err(ClientError::Config(ConfigError::new("an API key is required")));
        }
        let scheme_ok = self.config.url.starts_with("ws://") || self.config.url.starts_with("wss://");
        if !scheme_ok || url::Url::parse(&self.config.url).is_err() {
            return Err(ClientError::Config(ConfigError::new(format!(
                "the URL must be ws:// or wss://, got {:?}",
                self.config.url
            ))));
        }
        Ok(())
    }

    /// Starts the client over `connector` (the real one, or a scripted one in
    /// unit tests).
    pub(crate) fn build_with<C: connection::Connector>(self, connector: C) -> Client {
        let cap = self.config.max_in_flight.max(1);
        let (task_tx, task_rx) = mpsc::channel(cap);
        let (poll_tx, poll_rx) = mpsc::channel(cap);
        let shared = Arc::new(Shared::new(self.config, task_tx, poll_tx));
        let queues = driver::Queues { tasks: task_rx, polls: poll_rx };
        tokio::spawn(supervisor::run(shared.clone(), queues, connector));
        tokio::spawn(poller::run(shared.clone()));
        tokio::spawn(deadlines::run(shared.clone()));
        Client { inner: Arc::new(Inner { shared }) }
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

/// How long the last connection took: see [`Diagnostics::last_connect`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectTimings {
    /// TCP connect, TLS and the WebSocket handshake.
    pub handshake: Duration,
    /// From sending `authentication` to its reply.
    pub authentication: Duration,
}

/// What the engine holds at one moment: see [`Client::diagnostics`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Diagnostics {
    /// Tasks in the pending table.
    pub pending: usize,
    /// How full the internal queues are (all zero when the client is idle).
    pub queues: QueueDepths,
    /// The latest reconnect delays (up to 256), oldest first: what the backoff
    /// policy actually produced.
    pub reconnect_delays: Vec<Duration>,
    /// How long the last connection took to open and to authenticate.
    pub last_connect: Option<ConnectTimings>,
}

/// Depths of the client's queues: see [`Client::diagnostics`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
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

impl Client {
    /// A builder with the documented defaults.
    pub fn builder() -> ClientBuilder {
        ClientBuilder { config: ClientConfig::new(ApiKey::new("")) }
    }

    /// Submits any [`Task`]: a [`KontextTask`] from the
    /// builder, an [`ImageInference`](crate::ImageInference), a
    /// [`RawTask`](crate::protocol::RawTask) (or raw JSON through `Task::try_from`),
    /// an upload or a media operation. The task is validated (when it needs to be)
    /// and serialized now; awaiting the returned [`Submit`] takes an in-flight slot
    /// and yields the task's [`TaskStream`], which is a stream of results and can be
    /// awaited for all of them.
    ///
    /// ```no_run
    /// # async fn demo(client: runware_ws::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use runware_ws::{Kontext, KontextSize};
    /// use std::time::Duration;
    ///
    /// let edit = Kontext::builder().prompt("Make it snow").size(KontextSize::R1x1).build()?;
    /// let results = client.submit(edit).timeout(Duration::from_secs(60)).await?.await?;
    /// let raw = runware_ws::Task::try_from(serde_json::json!({"taskType": "promptEnhance",
    ///     "prompt": "a cat", "promptMaxLength": 64, "promptVersions": 2}))?;
    /// let versions = client.submit(raw).no_wait().await?.await?;
    /// # Ok(()) }
    /// ```
    pub fn submit(&self, task: impl Into<Task>) -> Submit {
        Submit::new(self.clone(), task.into())
    }

    /// Runs a Kontext \[pro\] task and waits for all its images; a failure keeps
    /// the images received before it ([`PartialFailure`]). A thin wrapper over
    /// [`Client::submit`].
    pub fn kontext(
        &self,
        task: KontextTask,
    ) -> impl Future<Output = Result<Vec<ImageResult>, PartialFailure<ImageResult>>> + Send + 'static {
        let submit = self.submit(task);
        async move { submit.await.map_err(PartialFailure::new)?.images().await }
    }

    /// Submits a Kontext \[pro\] task (waiting for an in-flight slot) and streams
    /// its images. A thin wrapper over [`Client::submit`].
    pub fn kontext_stream(
        &self,
        task: KontextTask,
    ) -> impl Future<Output = Result<KontextStream, ClientError>> + Send + 'static {
        let submit = self.submit(task);
        async move { Ok(submit.await?.images()) }
    }

    /// Runs any task given as JSON (it needs `taskType`; a `taskUUID` is added when
    /// missing) and waits for all its result items; a failure keeps the items
    /// received before it. A thin wrapper over [`Client::submit`].
    pub fn raw(
        &self,
        task: Value,
    ) -> impl Future<Output = Result<Vec<ResultItem>, PartialFailure<ResultItem>>> + Send + 'static {
        let submit = Task::try_from(task).map(|t| self.submit(t));
        async move { submit.map_err(|e| PartialFailure::new(e.into()))?.await.map_err(PartialFailure::new)?.await }
    }

    /// Uploads an image (data URI, base64 or URL) with `imageUpload`; the result
    /// carries `imageUUID` and `imageURL`.
    pub fn upload_image(
        &self,
        image: impl Into<String>,
    ) -> impl Future<Output = Result<ResultItem, ClientError>> + Send + 'static {
        let submit = self.submit(ImageUpload::new(image));
        async move { first(submit.await?.await?) }
    }

    /// Stores media with `mediaStorage`; the result carries `mediaUUID` and `mediaURL`.
    pub fn store_media(
        &self,
        media: impl Into<String>,
    ) -> impl Future<Output = Result<ResultItem, ClientError>> + Send + 'static {
        let submit = self.submit(MediaStorage::upload(media));
        async move { first(submit.await?.await?) }
    }

    /// Deletes stored media with `mediaStorage` (`"operation":"delete"`, the mediaUUID sent
    /// as `media`, as Runware's SDKs do).
    pub fn delete_media(
        &self,
        media_uuid: impl Into<String>,
    ) -> impl Future<Output = Result<ResultItem, ClientError>> + Send + 'static {
        let submit = self.submit(MediaStorage::delete(media_uuid));
        async move { first(submit.await?.await?) }
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
        let prepared = submit::Prepared {
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

    /// Waits for `expected` distinct results of `task_uuid`, polling `getResponse`
    /// until they are all there (or the task timeout passes). To ask what the
    /// server has *now*, without waiting, use [`Client::lookup`].
    pub async fn get_response(&self, task_uuid: Uuid, expected: u32) -> Result<Vec<ResultItem>, ClientError> {
        Ok(self.attach(task_uuid, expected, None).await?.await?)
    }

    /// The configuration the client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.shared.config
    }

    /// Watches the connection state.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.shared.link.state.subscribe()
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> Metrics {
        self.inner.shared.counters.snapshot()
    }

    /// What the engine holds now, for tests and debugging: the pending table's
    /// size, the queues' depths and the latest reconnect delays.
    pub fn diagnostics(&self) -> Diagnostics {
        let s = &self.inner.shared;
        Diagnostics {
            pending: s.tasks.pending.len(),
            queues: QueueDepths {
                pending: s.tasks.pending.len(),
                outbound: s.tasks.outbound.max_capacity() - s.tasks.outbound.capacity(),
                polls_queued: s.polls.queue.max_capacity() - s.polls.queue.capacity(),
                poll_set: lock(&s.polls.set).len(),
            },
            reconnect_delays: lock(&s.link.reconnect_delays).iter().copied().collect(),
            last_connect: *lock(&s.link.timings),
        }
    }

    /// Sends an application-level ping (`{"taskType":"ping","ping":true}`) on the
    /// current connection and returns the time until a pong arrives, or
    /// [`ClientError::Timeout`] after `timeout` (a reconnect in between counts
    /// against it). A keepalive pong already on its way may answer it early.
    pub async fn ping(&self, timeout: Duration) -> Result<Duration, ClientError> {
        let shared = &self.inner.shared;
        shared.check_open()?;
        let mut pongs = shared.link.pongs.subscribe();
        pongs.borrow_and_update();
        let started = Instant::now();
        let wait = async {
            self.wait_connected().await?;
            shared.link.ping_now.notify_one();
            pongs.changed().await.map_err(|_| ClientError::Closed)
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(())) => Ok(started.elapsed()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClientError::Timeout { after: timeout, connection: shared.link.state.borrow().to_string() }),
        }
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
                        let cause = self.inner.shared.last_connect_error();
                        return Err(ClientError::Unreachable { attempts, last_error: last_error.clone(), cause });
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
        shared.life.closing.store(true, Ordering::Release);
        let deadline = Instant::now() + grace;
        while !shared.tasks.pending.is_empty() && Instant::now() < deadline {
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
        shared.check_open()?;
        if let Ok(p) = shared.tasks.permits.clone().try_acquire_owned() {
            return Ok(p);
        }
        Box::pin(submit::wait_for_slot(shared.clone(), timeout)).await
    }

    /// Like [`Client::register`], with the deadline starting now.
    fn register_with(
        &self,
        prepared: submit::Prepared,
        permit: Option<OwnedSemaphorePermit>,
        timeout: Option<Duration>,
        send: bool,
    ) -> Result<TaskStream, ClientError> {
        let timeout = timeout.unwrap_or(self.inner.shared.config.task_timeout);
        let due = deadlines::due(&self.inner.shared, timeout);
        self.register(prepared, permit, timeout, due, send)
    }

    /// Puts the task in the pending table, then queues it for the writer.
    pub(crate) fn register(
        &self,
        prepared: submit::Prepared,
        permit: Option<OwnedSemaphorePermit>,
        timeout: Duration,
        due: deadlines::Due,
        send: bool,
    ) -> Result<TaskStream, ClientError> {
        let shared = &self.inner.shared;
        shared.check_open()?;
        let uuid = prepared.uuid;
        let mailbox = Arc::new(Mailbox::default());
        let span = tracing::debug_span!("task", task_uuid = %uuid, task_type = %prepared.task_type);
        let entry = PendingTask::new(NewTask {
            seq: shared.next_seq(),
            frame: send.then_some(prepared.frame),
            expected: prepared.expected,
            mailbox: mailbox.clone(),
            is_async: prepared.is_async,
            deadline_ms: due.deadline_ms,
            submitted_us: due.submitted_us,
            timeout,
            permit,
            span,
            next_poll: shared.epoch,
        });
        match shared.tasks.pending.entry(uuid) {
            dashmap::Entry::Occupied(_) => return Err(ClientError::DuplicateTask(uuid)),
            dashmap::Entry::Vacant(v) => {
                v.insert(entry);
            }
        }
        Counters::add(&shared.counters.tasks_submitted, 1);
        telemetry::count(telemetry::Event::Submitted, 1);
        let stream = TaskStream { client: self.clone(), uuid, expected: prepared.expected, mailbox, done: false };
        shared.watch_deadline(due.deadline_ms);
        if send && shared.tasks.outbound.try_send(uuid).is_err() {
            // The queue is full of cancelled tasks' entries (or the writer is between
            // connections): the writer's sweep sends everything not yet sent.
            shared.tasks.sweep.notify_one();
        }
        if !shared.link.connected.load(Ordering::Acquire) {
            // An idle supervisor (gave up on an outage) reconnects for new work.
            shared.link.supervisor_wake.notify_one();
        }
        if let Some(e) = shared.terminal_error() {
            // The client ended while this task was being registered.
            shared.fail(&uuid, e);
        }
        Ok(stream)
    }
}

fn first(mut items: Vec<ResultItem>) -> Result<ResultItem, ClientError> {
    if items.is_empty() {
        return Err(ClientError::Protocol("the task ended without a result".into()));
    }
    Ok(items.swap_remove(0))
}
