//! One WebSocket connection: a reader that never waits on anything, a writer that
//! drains the connection's direct replies and its session's results, and a
//! supervisor that applies faults and ends the connection.

use super::handlers;
use super::link::{ConnShared, Control, Out, envelope};
use super::session::{Queued, Session};
use super::state::Shared;
use super::stats;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::mpsc;

/// Most result items in one frame.
const BATCH_ITEMS: usize = 64;
/// About the most bytes of result items in one frame.
const BATCH_BYTES: usize = 8 << 20;

/// Unregisters a connection and detaches its session when it ends, however it ends.
struct Guard {
    shared: Arc<Shared>,
    conn: Arc<ConnShared>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.conns.unregister(self.conn.id);
        self.conn.detach(&self.shared.stats);
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
    let (ctl_tx, mut ctl_rx) = mpsc::channel(16);
    let conn = shared.conns.register(ctl_tx);
    let id = conn.id;
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
            conn.detach(&shared.stats);
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
                Message::Text(text) => {
                    shared.stats.largest_frame_in.fetch_max(text.len() as u64, Relaxed);
                    shared.stats.bytes_in.fetch_add(text.len() as u64, Relaxed);
                    handlers::on_text(shared, conn, text.as_str())
                }
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
        conn.notified().await;
        loop {
            if conn.overflowed() {
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
