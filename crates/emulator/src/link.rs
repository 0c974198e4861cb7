//! A connection as the rest of the emulator reaches it: its queue of direct
//! frames, who it authenticated as, the registry of open connections that faults
//! act on, and the `{"data","errors"}` envelope. Nothing here reads or writes a
//! socket (that is `connection`).

use super::config::KeyId;
use super::session::{Listener, Session};
use super::stats::Counters;
use super::sync::lock;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, mpsc};

/// Most direct frames queued for one connection; a client that lets more pile up
/// is not reading, and is disconnected.
const MAX_DIRECT: usize = 10_000;

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
    notify: Arc<Notify>,
    out: Mutex<VecDeque<Out>>,
    overflow: AtomicBool,
    auth: Mutex<Option<Authed>>,
}

impl ConnShared {
    pub(crate) fn new(id: u64) -> ConnShared {
        ConnShared {
            id,
            notify: Arc::new(Notify::new()),
            out: Mutex::new(VecDeque::new()),
            overflow: AtomicBool::new(false),
            auth: Mutex::new(None),
        }
    }

    /// Wakes the writer.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    pub(crate) fn push(&self, out: Out) {
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

    pub(crate) fn pop(&self) -> Option<Out> {
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

    pub(crate) fn session(&self) -> Option<Arc<Session>> {
        lock(&self.auth).as_ref().map(|a| a.session.clone())
    }

    /// Detaches this connection from its session (its results wait in the session).
    pub(crate) fn detach(&self, stats: &Counters) {
        if let Some(s) = self.session() {
            s.detach(self.id, stats);
        }
    }

    /// What a session needs to deliver to this connection.
    pub(crate) fn listener(&self) -> Listener {
        Listener::new(self.id, self.notify.clone())
    }

    /// Waits until something is queued for the writer.
    pub(crate) async fn notified(&self) {
        self.notify.notified().await;
    }

    /// True when the client let more than the bound of direct frames pile up.
    pub(crate) fn overflowed(&self) -> bool {
        self.overflow.load(Relaxed)
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

    /// Registers a new connection; returns it with its id.
    pub fn register(&self, control: mpsc::Sender<Control>) -> Arc<ConnShared> {
        let id = self.next.fetch_add(1, Relaxed) + 1;
        let conn = Arc::new(ConnShared::new(id));
        lock(&self.map).insert(id, (conn.clone(), control));
        conn
    }

    /// Forgets connection `id`.
    pub fn unregister(&self, id: u64) {
        lock(&self.map).remove(&id);
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }
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
