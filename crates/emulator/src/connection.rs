//! One WebSocket connection: a reader that never waits on anything, a writer that
//! drains the connection's direct replies and its session's results, and a
//! supervisor that applies faults and ends the connection.

use super::config::KeyId;
use super::handlers;
use super::session::{Queued, Session};
use super::state::{Shared, lock};
use super::stats;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// Most direct frames queued for one connection; a client that lets more pile up
/// is not reading, and is disconnected.
const MAX_DIRECT: usize = 10_000;
/// Most result items in one frame.
const BATCH_ITEMS: usize = 64;
/// About the most bytes of result items in one frame.
const BATCH_BYTES: usize = 8 << 20;

/// A frame for this connection only (replies, pongs, injected garbage).
#[derive(Debug)]
pub(crate) enum Out {
    Text(String),
    Binary(Vec<u8>),
    Close(u16, &'static str),
}

/// What a fault asks of a connection's supervisor.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Control {
    Drop,
    Close,
    HalfOpen,
}

/// Who the connection authenticated as.
#[derive(Clone)]
pub(crate) struct Authed {
    pub key: KeyId,
    pub session: Arc<Session>,
}

/// The part of a connection other tasks can reach.
pub(crate) struct ConnShared {
    pub id: u64,
    notify: Notify,
    out: Mutex<VecDeque<Out>>,
    overflow: AtomicBool,
    auth: Mutex<Option<Authed>>,
}

impl ConnShared {
    fn new(id: u64) -> ConnShared {
        ConnShared {
            id,
            notify: Notify::new(),
            out: Mutex::new(VecDeque::new()),
            overflow: AtomicBool::new(false),
            auth: Mutex::new(None),
        }
    }

    /// Wakes the writer.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    fn push(&self, out: Out) {
        let mut q = lock(&self.out);
        if q.len() >= MAX_DIRECT {
            self.overflow.store(true, Relaxed);
        } else {
            q.push_back(out);
        }
        drop(q);
        self.wake();
    }

    /// Queues a text frame.
    pub fn push_text(&self, text: String) {
        self.push(Out::Text(text));
    }

    /// Queues a binary frame.
    pub fn push_binary(&self, bytes: Vec<u8>) {
        self.push(Out::Binary(bytes));
    }

    fn pop(&self) -> Option<Out> {
        lock(&self.out).pop_front()
    }

    /// Who the connection is, if authenticated.
    pub fn auth(&self) -> Option<Authed> {
        lock(&self.auth).clone()
    }

    /// Records a successful authentication; returns the previous one.
    pub fn set_auth(&self, authed: Authed) -> Option<Authed> {
        lock(&self.auth).replace(authed)
    }

    fn session(&self) -> Option<Arc<Session>> {
        lock(&self.auth).as_ref().map(|a| a.session.clone())
    }

    fn detach(&self, shared: &Shared) {
        if let Some(s) = self.session() {
            s.detach(self.id, &shared.stats);
        }
    }
}

/// A registered connection and its supervisor's control channel.
type ConnEntry = (Arc<ConnShared>, mpsc::Sender<Control>);

/// The open connections, for faults.
#[derive(Default)]
pub(crate) struct ConnRegistry {
    map: Mutex<HashMap<u64, ConnEntry>>,
    next: AtomicU64,
}

impl ConnRegistry {
    /// Sends `c` to every open connection.
    pub fn control_all(&self, c: Control) {
        let senders: Vec<_> = lock(&self.map).values().map(|(_, tx)| tx.clone()).collect();
        for tx in senders {
            let _ = tx.try_send(c);
        }
    }

    /// Runs `f` on every open connection.
    pub fn each(&self, f: impl Fn(&ConnShared)) {
        let conns: Vec<_> = lock(&self.map).values().map(|(c, _)| c.clone()).collect();
        for c in conns {
            f(&c);
        }
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }
}

/// Unregisters a connection and detaches its session when it ends, however it ends.
struct Guard {
    shared: Arc<Shared>,
    conn: Arc<ConnShared>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        lock(&self.shared.conns.map).remove(&self.conn.id);
        self.conn.detach(&self.shared);
        let _ = self.shared.stats.open_connections.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
        tracing::debug!(conn = self.conn.id, "connection ended");
    }
}

#[derive(Debug)]
enum ReaderEnd {
    Closed,
    Idle,
    Error,
}

#[derive(Debug)]
enum WriterEnd {
    Closed,
    Error,
    Overflow,
    DropMidTask,
}

/// Serves one upgraded socket until it ends.
pub(crate) async fn run(shared: Arc<Shared>, socket: WebSocket) {
    let id = shared.conns.next.fetch_add(1, Relaxed) + 1;
    let conn = Arc::new(ConnShared::new(id));
    let (ctl_tx, mut ctl_rx) = mpsc::channel(16);
    lock(&shared.conns.map).insert(id, (conn.clone(), ctl_tx));
    stats::bump(&shared.stats.connections);
    stats::bump(&shared.stats.open_connections);
    let _guard = Guard { shared: shared.clone(), conn: conn.clone() };
    tracing::debug!(conn = id, "connection open");

    let (sink, stream) = socket.split();
    let reader = reader_loop(&shared, &conn, stream);
    let writer = writer_loop(&shared, &conn, sink);
    let shutdown = shared.shutdown_signal();
    tokio::pin!(reader, writer, shutdown);

    enum Next {
        Done,
        HalfOpen,
        Linger(&'static str),
    }
    let next = loop {
        tokio::select! {
            end = &mut reader => {
                tracing::debug!(conn = id, ?end, "reader ended");
                break match end {
                    ReaderEnd::Idle => Next::Linger("idle timeout"),
                    ReaderEnd::Closed => Next::Linger("bye"),
                    ReaderEnd::Error => Next::Done,
                };
            }
            end = &mut writer => {
                tracing::debug!(conn = id, ?end, "writer ended");
                break Next::Done;
            }
            Some(c) = ctl_rx.recv() => match c {
                Control::Drop => break Next::Done,
                Control::HalfOpen => break Next::HalfOpen,
                Control::Close => conn.push(Out::Close(1001, "going away")),
            },
            _ = &mut shutdown => break Next::Done,
        }
    };
    match next {
        Next::Done => {}
        Next::Linger(reason) => {
            // Send a close frame (or flush the reply to the client's), briefly.
            conn.push(Out::Close(1000, reason));
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut writer).await;
        }
        Next::HalfOpen => {
            // Neither read nor write (no pongs either): hold the socket until the
            // idle timeout, a drop, or shutdown. Results go to the session buffer.
            conn.detach(&shared);
            let hold = tokio::time::sleep(shared.cfg.idle_timeout);
            tokio::pin!(hold);
            loop {
                tokio::select! {
                    _ = &mut hold => break,
                    _ = &mut shutdown => break,
                    c = ctl_rx.recv() => match c {
                        Some(Control::Drop) | None => break,
                        Some(_) => {}
                    },
                }
            }
        }
    }
}

async fn reader_loop(shared: &Arc<Shared>, conn: &Arc<ConnShared>, mut stream: SplitStream<WebSocket>) -> ReaderEnd {
    let idle = shared.cfg.idle_timeout;
    loop {
        match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => return ReaderEnd::Idle,
            Ok(None) => return ReaderEnd::Closed,
            Ok(Some(Err(e))) => {
                tracing::debug!(conn = conn.id, error = %e, "read failed");
                return ReaderEnd::Error;
            }
            Ok(Some(Ok(msg))) => match msg {
                Message::Text(text) => handlers::on_text(shared, conn, text.as_str()),
                Message::Binary(_) => handlers::on_binary(conn),
                Message::Ping(_) | Message::Pong(_) => {}
                Message::Close(_) => return ReaderEnd::Closed,
            },
        }
    }
}

type Sink = SplitSink<WebSocket, Message>;

async fn writer_loop(shared: &Arc<Shared>, conn: &Arc<ConnShared>, mut sink: Sink) -> WriterEnd {
    loop {
        conn.notify.notified().await;
        loop {
            if conn.overflow.load(Relaxed) {
                tracing::warn!(conn = conn.id, "client is not reading its replies; disconnecting");
                return WriterEnd::Overflow;
            }
            let mut progressed = false;
            while let Some(out) = conn.pop() {
                progressed = true;
                let msg = match out {
                    Out::Text(s) => Message::text(s),
                    Out::Binary(b) => Message::binary(b),
                    Out::Close(code, reason) => {
                        let _ = sink.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                        return WriterEnd::Closed;
                    }
                };
                if sink.send(msg).await.is_err() {
                    return WriterEnd::Error;
                }
            }
            if let Some(session) = conn.session() {
                let batch = session.pop_batch(conn.id, BATCH_ITEMS, BATCH_BYTES);
                if !batch.is_empty() {
                    progressed = true;
                    if let Err(end) = write_batch(shared, conn, &session, &mut sink, batch).await {
                        return end;
                    }
                }
            }
            if !progressed {
                break;
            }
        }
    }
}

/// Writes one frame of results; applies the duplicate and mid-task-drop faults.
async fn write_batch(
    shared: &Shared,
    conn: &ConnShared,
    session: &Session,
    sink: &mut Sink,
    mut batch: Vec<Queued>,
) -> Result<(), WriterEnd> {
    let cut = if shared.faults.drop_mid_task_armed() {
        batch.iter().position(|q| !q.is_error && q.total > 1 && q.index + 1 < q.total)
    } else {
        None
    };
    let rest = match cut {
        Some(i) => batch.split_off(i + 1),
        None => Vec::new(),
    };
    let mut data = Vec::with_capacity(batch.len());
    let mut errors = Vec::new();
    let (mut delivered, mut replayed) = (0u64, 0u64);
    for q in &batch {
        if q.is_error {
            errors.push(q.json.clone());
            continue;
        }
        let copies = if shared.faults.take_duplicate() { 2 } else { 1 };
        for _ in 0..copies {
            data.push(q.json.clone());
        }
        delivered += copies;
        replayed += u64::from(q.buffered);
    }
    let frame = envelope(&data, &errors);
    if sink.send(Message::text(frame)).await.is_err() {
        batch.extend(rest);
        session.requeue(conn.id, batch, &shared.stats);
        return Err(WriterEnd::Error);
    }
    stats::add(&shared.stats.results_delivered, delivered);
    stats::add(&shared.stats.results_replayed, replayed);
    if cut.is_some() {
        let fired = shared.faults.fire_drop_mid_task();
        session.requeue(conn.id, rest, &shared.stats);
        if fired {
            tracing::info!(conn = conn.id, "dropping the connection mid-task (fault)");
            return Err(WriterEnd::DropMidTask);
        }
    }
    Ok(())
}

/// `{"data":[…],"errors":[…]}` from pre-serialized items.
pub(crate) fn envelope(data: &[Arc<str>], errors: &[Arc<str>]) -> String {
    let size = data.iter().chain(errors).map(|s| s.len() + 1).sum::<usize>() + 24;
    let mut s = String::with_capacity(size);
    s.push('{');
    fn list(name: &str, items: &[Arc<str>], s: &mut String) {
        if !s.ends_with('{') {
            s.push(',');
        }
        s.push('"');
        s.push_str(name);
        s.push_str("\":[");
        for (i, it) in items.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(it);
        }
        s.push(']');
    }
    if !data.is_empty() || errors.is_empty() {
        list("data", data, &mut s);
    }
    if !errors.is_empty() {
        list("errors", errors, &mut s);
    }
    s.push('}');
    s
}
