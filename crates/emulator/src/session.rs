//! Sessions: the identity a client resumes after a drop, and the results that
//! wait for it.
//!
//! Results of sync tasks are queued on the session that submitted them; the
//! connection attached to the session drains the queue. With no connection attached
//! the queue is the buffer of undelivered results, kept for `session_ttl`.

use super::config::KeyId;
use super::stats::{self, Counters};
use super::sync::lock;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use uuid::Uuid;

/// The connection a session delivers to: which one, and how to wake its writer.
/// Sessions know nothing else of connections.
#[derive(Clone)]
pub(crate) struct Listener {
    /// The connection's id.
    pub id: u64,
    wake: Arc<Notify>,
}

impl Listener {
    /// Connection `id`, woken through `wake`.
    pub fn new(id: u64, wake: Arc<Notify>) -> Listener {
        Listener { id, wake }
    }

    fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Most items one session buffers; beyond, the oldest are dropped (they stay
/// available through `getResponse`).
const MAX_QUEUED: usize = 100_000;

/// One item waiting to be written: pre-serialized JSON.
#[derive(Clone, Debug)]
pub(crate) struct Queued {
    /// The item or error object.
    pub json: Arc<str>,
    /// True for an `errors` entry, false for a `data` item.
    pub is_error: bool,
    /// Its index among the task's results, and the task's result count.
    pub index: u32,
    pub total: u32,
    /// Set once the item has waited without a socket (so writing it is a replay).
    pub buffered: bool,
}

#[derive(Default)]
struct Inner {
    attached: Option<Listener>,
    queue: VecDeque<Queued>,
    detached_since: Option<Instant>,
    dead: bool,
}

/// One session.
pub(crate) struct Session {
    pub uuid: Uuid,
    pub key: KeyId,
    inner: Mutex<Inner>,
}

impl Session {
    fn new(uuid: Uuid, key: KeyId) -> Session {
        Session { uuid, key, inner: Mutex::new(Inner { detached_since: Some(Instant::now()), ..Inner::default() }) }
    }

    /// Marks every queued item as buffered, counting the ones newly marked.
    fn mark_buffered(inner: &mut Inner, stats: &Counters) {
        let mut n = 0;
        for q in inner.queue.iter_mut().filter(|q| !q.buffered) {
            q.buffered = true;
            n += u64::from(!q.is_error);
        }
        stats::add(&stats.results_buffered, n);
    }

    /// Queues a result for the attached connection, or buffers it.
    pub fn deliver(&self, mut item: Queued, stats: &Counters) {
        let mut inner = lock(&self.inner);
        if inner.dead {
            return;
        }
        if inner.queue.len() >= MAX_QUEUED {
            tracing::warn!(session = %self.uuid, "session buffer full, dropping its oldest item");
            inner.queue.pop_front();
        }
        match &inner.attached {
            Some(conn) => {
                let conn = conn.clone();
                inner.queue.push_back(item);
                drop(inner);
                conn.wake();
            }
            None => {
                item.buffered = true;
                if !item.is_error {
                    stats::bump(&stats.results_buffered);
                }
                inner.queue.push_back(item);
            }
        }
    }

    /// Attaches `conn`; a connection attached before is detached. Returns false when
    /// the session is gone (restart).
    pub fn attach(&self, conn: Listener, stats: &Counters) -> bool {
        let mut inner = lock(&self.inner);
        if inner.dead {
            return false;
        }
        if inner.attached.is_some() {
            Self::mark_buffered(&mut inner, stats);
        }
        inner.attached = Some(conn.clone());
        inner.detached_since = None;
        let pending = !inner.queue.is_empty();
        drop(inner);
        if pending {
            conn.wake();
        }
        true
    }

    /// Drops what waited for a socket (`Quirk::NoReplay`): a resumed session
    /// then replays nothing.
    pub fn drop_undelivered(&self) {
        lock(&self.inner).queue.retain(|q| !q.buffered);
    }

    /// Detaches connection `conn_id` if it is the one attached; what is queued
    /// becomes buffered.
    pub fn detach(&self, conn_id: u64, stats: &Counters) {
        let mut inner = lock(&self.inner);
        if inner.attached.as_ref().is_some_and(|c| c.id == conn_id) {
            inner.attached = None;
            inner.detached_since = Some(Instant::now());
            Self::mark_buffered(&mut inner, stats);
        }
    }

    /// Takes up to `max_items` items (at least one) of at most about `max_bytes`, if
    /// `conn_id` is the attached connection.
    pub fn pop_batch(&self, conn_id: u64, max_items: usize, max_bytes: usize) -> Vec<Queued> {
        let mut inner = lock(&self.inner);
        if inner.attached.as_ref().is_none_or(|c| c.id != conn_id) {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        while let Some(front) = inner.queue.front() {
            if !out.is_empty() && (out.len() >= max_items || bytes + front.json.len() > max_bytes) {
                break;
            }
            bytes += front.json.len();
            if let Some(q) = inner.queue.pop_front() {
                out.push(q);
            }
        }
        out
    }

    /// Puts back items a connection could not write, in their order, ahead of the rest.
    pub fn requeue(&self, conn_id: u64, items: Vec<Queued>, stats: &Counters) {
        let mut inner = lock(&self.inner);
        if inner.dead {
            return;
        }
        for item in items.into_iter().rev() {
            inner.queue.push_front(item);
        }
        if inner.attached.as_ref().is_none_or(|c| c.id != conn_id) {
            Self::mark_buffered(&mut inner, stats);
        }
    }

    /// True when no connection has been attached for longer than `ttl`, or after a restart.
    pub fn expired(&self, now: Instant, ttl: Duration) -> bool {
        let inner = lock(&self.inner);
        inner.dead || inner.detached_since.is_some_and(|t| now.saturating_duration_since(t) > ttl)
    }

    fn kill(&self) {
        let mut inner = lock(&self.inner);
        inner.dead = true;
        inner.queue.clear();
        inner.attached = None;
    }

    fn is_detached(&self) -> bool {
        lock(&self.inner).attached.is_none()
    }
}

/// Every live session, bounded.
pub(crate) struct Sessions {
    map: Mutex<HashMap<Uuid, Arc<Session>>>,
    max: usize,
}

impl Sessions {
    pub fn new(max: usize) -> Sessions {
        Sessions { map: Mutex::new(HashMap::new()), max }
    }

    /// A new session for `key` under `uuid`.
    pub fn create(&self, uuid: Uuid, key: KeyId, ttl: Duration) -> Arc<Session> {
        let session = Arc::new(Session::new(uuid, key));
        let mut map = lock(&self.map);
        if map.len() >= self.max {
            let now = Instant::now();
            map.retain(|_, s| !s.expired(now, ttl));
        }
        if map.len() >= self.max {
            // Still full: forget one detached session (any), else the insert just grows
            // past the bound by one connection's worth until the sweeper runs.
            if let Some(victim) = map.iter().find(|(_, s)| s.is_detached()).map(|(k, _)| *k)
                && let Some(old) = map.remove(&victim)
            {
                old.kill();
            }
        }
        map.insert(uuid, session.clone());
        session
    }

    /// The session `uuid` of `key`, if it exists and has not expired.
    pub fn resume(&self, uuid: Uuid, key: KeyId, ttl: Duration) -> Option<Arc<Session>> {
        let map = lock(&self.map);
        let s = map.get(&uuid)?;
        (s.key == key && !s.expired(Instant::now(), ttl)).then(|| s.clone())
    }

    /// Forgets expired sessions.
    pub fn sweep(&self, ttl: Duration) {
        let now = Instant::now();
        let mut gone = Vec::new();
        lock(&self.map).retain(|_, s| {
            let keep = !s.expired(now, ttl);
            if !keep {
                gone.push(s.clone());
            }
            keep
        });
        for s in gone {
            s.kill();
        }
    }

    /// Forgets every session and its buffered results (restart).
    pub fn clear(&self) {
        let all: Vec<_> = lock(&self.map).drain().map(|(_, s)| s).collect();
        for s in all {
            s.kill();
        }
    }

    /// How many sessions exist.
    #[allow(dead_code)]
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }
}
