//! One live connection: a reader task that decodes and dispatches every frame,
//! and a writer (on the supervisor's task) that drains the outbound queues, sends
//! keepalive pings and judges the socket dead when nothing comes back.

use super::connection::{Transport, describe};
use super::metrics::Counters;
use super::shared::Shared;
use crate::protocol::{ApiError, SharedStr};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use uuid::Uuid;

/// Why a connection ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The server closed the connection (close frame or end of stream).
    Closed(String),
    /// A read or write failed.
    Failed(String),
    /// No reply to a keepalive ping in time.
    Dead(Duration),
    /// The server revoked the authentication.
    Auth(ApiError),
    /// The client is shutting down; a close frame was sent.
    Shutdown,
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::Closed(why) => write!(f, "closed by server{why}"),
            Ended::Failed(e) => write!(f, "{e}"),
            Ended::Dead(after) => write!(f, "no reply to keepalive ping within {after:?}"),
            Ended::Auth(e) => write!(f, "authentication revoked: {e}"),
            Ended::Shutdown => f.write_str("client shut down"),
        }
    }
}

/// The queues the writer drains; they outlive connections.
pub(crate) struct Queues {
    pub(crate) tasks: mpsc::Receiver<Uuid>,
    pub(crate) polls: mpsc::Receiver<Uuid>,
}

/// Runs a connection until it ends. The reader is drained (given a moment to
/// read what the socket still holds) before this returns.
pub(crate) async fn run<T: Transport>(
    shared: &Arc<Shared>,
    ws: T,
    generation: u64,
    resumed: bool,
    queues: &mut Queues,
) -> Ended {
    let (sink, stream) = ws.split();
    // The callers, the reader and the writer share one thread on a current-thread
    // runtime: see `read_loop` and `Writer::yield_to_callers`.
    let current_thread =
        tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread;
    let mut reader = tokio::spawn(read_loop(shared.clone(), stream, current_thread));
    let per_frame = shared.config.max_tasks_per_frame.max(1);
    let yield_to_callers = !current_thread;
    let mut writer = Writer { shared, sink, generation, resumed, batch: Batch::new(per_frame), yield_to_callers };
    let ended = writer.run(queues, &mut reader).await;
    // After a write failure the socket may still hold results: let the reader take
    // them before the supervisor resends. A silent (dead) socket has nothing to give.
    let drain = matches!(ended, Ended::Failed(_) | Ended::Shutdown);
    if drain && !reader.is_finished() && tokio::time::timeout(Duration::from_millis(200), &mut reader).await.is_ok() {
        return ended;
    }
    reader.abort();
    ended
}

/// Reads and dispatches every frame. On a current-thread runtime it would
/// otherwise read every frame the socket holds before any caller it woke runs, so
/// the writer would send their next tasks only after all of them and the socket
/// would idle for a round trip each cycle: it steps aside after every
/// [`REQUEUE_EVERY`] results instead.
async fn read_loop<T: Transport>(shared: Arc<Shared>, mut stream: SplitStream<T>, current_thread: bool) -> Ended {
    let mut since_requeue = 0usize;
    while let Some(msg) = stream.next().await {
        shared.touch_inbound();
        match msg {
            Ok(Message::Text(t)) => {
                Counters::add(&shared.counters.frames_in, 1);
                let text = SharedStr::from(t);
                tracing::trace!(bytes = text.len(), "frame in");
                match shared.decode(&text) {
                    Ok(frame) => {
                        since_requeue += frame.items.len();
                        if let Some(err) = shared.dispatch(frame) {
                            return Ended::Auth(err);
                        }
                        if current_thread && since_requeue >= REQUEUE_EVERY {
                            since_requeue = 0;
                            requeue().await;
                        }
                    }
                    Err(e) => {
                        Counters::add(&shared.counters.malformed, 1);
                        tracing::warn!(error = %e, "undecodable frame from server");
                    }
                }
            }
            Ok(Message::Binary(b)) => {
                Counters::add(&shared.counters.malformed, 1);
                tracing::warn!(bytes = b.len(), "unexpected binary frame from server");
            }
            Ok(Message::Close(c)) => {
                return Ended::Closed(c.map(|c| format!(": {} {}", c.code, c.reason)).unwrap_or_default());
            }
            Ok(_) => {}
            Err(e) => return Ended::Failed(describe(&e)),
        }
    }
    Ended::Closed(String::new())
}

/// How many results the reader routes on a current-thread runtime before it lets
/// the callers they woke run (measured: 128–256 keeps the socket busy without a
/// flush per frame).
const REQUEUE_EVERY: usize = 256;

/// Puts the running task at the back of the runtime's queue once (a wake of its
/// own, not `yield_now`, which on a current-thread runtime waits for the I/O
/// driver and every other ready task first).
fn requeue() -> impl std::future::Future<Output = ()> {
    let mut queued = false;
    std::future::poll_fn(move |cx| {
        if queued {
            return std::task::Poll::Ready(());
        }
        queued = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
}

struct Writer<'a, T: Transport> {
    shared: &'a Arc<Shared>,
    sink: SplitSink<T, Message>,
    generation: u64,
    resumed: bool,
    batch: Batch,
    /// On a multi-thread runtime the writer runs beside the callers: it yields once
    /// so that callers already running can queue their tasks into the same frame. On
    /// a current-thread runtime the callers woken before it have already run when it
    /// does, and a yield would hold the frame until every ready task had run (the
    /// I/O driver included), leaving the socket idle meanwhile.
    yield_to_callers: bool,
}

/// Largest frame built by batching several tasks (a single task may be larger).
const BATCH_BYTES: usize = 1 << 20;

/// Outbound frames being built: each task's JSON is copied straight from the
/// pending table into an array frame of at most `per_frame` tasks (and about
/// [`BATCH_BYTES`]), so a task's frame is never shared or reference-counted.
struct Batch {
    frames: Vec<String>,
    in_last: usize,
    per_frame: usize,
    /// How many tasks are expected in this batch (sizes the first buffer).
    expect: usize,
}

impl Batch {
    fn new(per_frame: usize) -> Batch {
        Batch { frames: Vec::new(), in_last: 0, per_frame, expect: 1 }
    }

    fn push(&mut self, task: &str) {
        if let Some(frame) = self.frames.last_mut()
            && self.in_last < self.per_frame
            && frame.len() + task.len() < BATCH_BYTES
        {
            frame.push(',');
            frame.push_str(task);
            self.in_last += 1;
            return;
        }
        let tasks = self.expect.clamp(1, self.per_frame);
        let mut frame = String::with_capacity(((task.len() + 1) * tasks + 2).min(BATCH_BYTES + task.len() + 2));
        frame.push('[');
        frame.push_str(task);
        self.frames.push(frame);
        self.in_last = 1;
        self.expect = self.expect.saturating_sub(self.per_frame);
    }

    /// The finished frames; the batch is empty afterwards.
    fn take(&mut self) -> Vec<String> {
        self.in_last = 0;
        self.expect = 1;
        let mut frames = std::mem::take(&mut self.frames);
        for f in &mut frames {
            f.push(']');
        }
        frames
    }
}

impl<T: Transport> Writer<'_, T> {
    async fn run(&mut self, queues: &mut Queues, reader: &mut tokio::task::JoinHandle<Ended>) -> Ended {
        if let Err(e) = self.resend_pending().await {
            return e;
        }
        let ka = self.shared.config.keepalive.clone();
        let tick = ka.check_every();
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ping_sent: Option<Instant> = None;
        let mut last_ping = Instant::now();
        loop {
            if self.shared.is_shutdown() {
                let close = CloseFrame { code: CloseCode::Normal, reason: "client closing".into() };
                let _ = self.sink.send(Message::Close(Some(close))).await;
                return Ended::Shutdown;
            }
            let shutdown = self.shared.life.shutdown_notify.notified();
            tokio::select! {
                biased;
                r = &mut *reader => {
                    return r.unwrap_or_else(|e| Ended::Failed(format!("reader stopped: {e}")));
                }
                _ = shutdown => {}
                _ = self.shared.link.ping_now.notified() => {
                    if let Err(e) = self.send_text(r#"[{"taskType":"ping","ping":true}]"#.to_string()).await {
                        return e;
                    }
                    Counters::add(&self.shared.counters.pings, 1);
                }
                _ = self.shared.tasks.sweep.notified() => {
                    if let Err(e) = self.resend_pending().await {
                        return e;
                    }
                }
                Some(uuid) = queues.polls.recv() => {
                    let mut uuids = vec![uuid];
                    while uuids.len() < 256 {
                        match queues.polls.try_recv() {
                            Ok(u) => uuids.push(u),
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = self.send_polls(&uuids).await {
                        return e;
                    }
                }
                Some(uuid) = queues.tasks.recv() => {
                    self.batch.expect = queues.tasks.len() + 1;
                    self.take(uuid);
                    // Let callers that are already running submit too, so that
                    // they share this frame and its flush (see `yield_to_callers`).
                    if self.yield_to_callers {
                        tokio::task::yield_now().await;
                    }
                    for _ in 0..4096 {
                        match queues.tasks.try_recv() {
                            Ok(u) => {
                                self.take(u);
                            }
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = self.flush_tasks().await {
                        return e;
                    }
                }
                _ = ticker.tick() => {
                    let now = Instant::now();
                    let last_in = self.shared.epoch + Duration::from_micros(self.shared.link.last_inbound_us.load(Ordering::Relaxed));
                    // Tighter bounds while anyone waits for the socket.
                    let (ping_after, dead_after) = ka.bounds(!self.shared.tasks.pending.is_empty());
                    if let Some(sent) = ping_sent {
                        if last_in >= sent {
                            ping_sent = None;
                        } else if now.duration_since(sent) >= dead_after {
                            let silence = now.duration_since(last_in).as_millis();
                            Counters::add(&self.shared.counters.dead_sockets, 1);
                            super::telemetry::count(super::telemetry::Event::DeadSocket, 1);
                            Counters::max(&self.shared.counters.max_dead_silence_ms, u64::try_from(silence).unwrap_or(u64::MAX));
                            return Ended::Dead(dead_after);
                        }
                    }
                    if ping_sent.is_none() && now.duration_since(last_in.max(last_ping)) >= ping_after {
                        if let Err(e) = self.send_text(r#"[{"taskType":"ping","ping":true}]"#.to_string()).await {
                            return e;
                        }
                        Counters::add(&self.shared.counters.pings, 1);
                        ping_sent = Some(now);
                        last_ping = now;
                    }
                }
            }
        }
    }

    /// Marks `uuid` sent on this connection and copies its task into the batch,
    /// unless it was cancelled or already sent here. True if it was batched.
    fn take(&mut self, uuid: Uuid) -> bool {
        let Some(mut task) = self.shared.tasks.pending.get_mut(&uuid) else { return false };
        if task.sent_gen == self.generation {
            return false;
        }
        task.sent_gen = self.generation;
        match &task.frame {
            Some(f) => {
                self.batch.push(f);
                true
            }
            None => false,
        }
    }

    /// Resends every pending task not yet sent on this connection, oldest first,
    /// under its own taskUUID; tasks with no frame (recovery only) are polled.
    async fn resend_pending(&mut self) -> Result<(), Ended> {
        let resumed = self.resumed;
        let mut todo: Vec<(u64, Uuid)> = Vec::new();
        let mut poll_now: Vec<Uuid> = Vec::new();
        for mut task in self.shared.tasks.pending.iter_mut() {
            if task.sent_gen == self.generation {
                continue;
            }
            if task.frame.is_none() {
                poll_now.push(*task.key());
                continue;
            }
            if task.sent_gen != 0 {
                task.resent_on_resumed = resumed;
            }
            todo.push((task.seq, *task.key()));
        }
        for uuid in poll_now {
            self.shared.schedule_poll(uuid, Duration::ZERO);
        }
        todo.sort_unstable();
        self.batch.expect = todo.len();
        let mut resent = 0u64;
        for (_, uuid) in todo {
            let was_sent = self.shared.tasks.pending.get(&uuid).is_some_and(|t| t.sent_gen != 0);
            if self.take(uuid) && was_sent {
                resent += 1;
            }
        }
        Counters::add(&self.shared.counters.resends, resent);
        super::telemetry::count(super::telemetry::Event::Resends, resent);
        if resent > 0 {
            tracing::info!(tasks = resent, resumed, "resending pending tasks under their own taskUUIDs");
        }
        self.flush_tasks().await
    }

    async fn flush_tasks(&mut self) -> Result<(), Ended> {
        let frames = self.batch.take();
        if frames.is_empty() {
            return Ok(());
        }
        for frame in frames {
            self.feed(frame).await?;
        }
        self.sink.flush().await.map_err(|e| Ended::Failed(describe(&e)))
    }

    async fn send_polls(&mut self, uuids: &[Uuid]) -> Result<(), Ended> {
        let mut frame = String::with_capacity(uuids.len() * 64 + 2);
        frame.push('[');
        for (i, u) in uuids.iter().enumerate() {
            if i > 0 {
                frame.push(',');
            }
            frame.push_str(r#"{"taskType":"getResponse","taskUUID":""#);
            frame.push_str(&u.hyphenated().to_string());
            frame.push_str(r#""}"#);
        }
        frame.push(']');
        Counters::add(&self.shared.counters.polls, uuids.len() as u64);
        super::telemetry::count(super::telemetry::Event::Polls, uuids.len() as u64);
        self.send_text(frame).await
    }

    async fn feed(&mut self, frame: String) -> Result<(), Ended> {
        Counters::add(&self.shared.counters.frames_out, 1);
        tracing::trace!(bytes = frame.len(), "frame out");
        self.sink.feed(Message::Text(frame.into())).await.map_err(|e| Ended::Failed(describe(&e)))
    }

    async fn send_text(&mut self, frame: String) -> Result<(), Ended> {
        self.feed(frame).await?;
        self.sink.flush().await.map_err(|e| Ended::Failed(describe(&e)))
    }
}
