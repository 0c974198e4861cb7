//! The per-key task store: what makes a reused `taskUUID` a conflict, what
//! `getResponse` answers from, and how often each task ran. It survives a
//! [`Fault::Restart`](super::Fault::Restart), like a database would.

use super::config::KeyId;
use super::stats::TaskStats;
use super::sync::lock;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Default)]
struct RecordState {
    /// Successful items, pre-serialized.
    items: Vec<Arc<str>>,
    /// The error object, if the task failed.
    error: Option<Value>,
    finished_at: Option<Instant>,
    bytes: usize,
}

/// One task the server accepted.
pub(crate) struct TaskRecord {
    pub task_type: String,
    pub uuid: Uuid,
    started: Instant,
    /// Its latency, for `progress`.
    latency: Mutex<Duration>,
    executions: AtomicU32,
    images_billed: AtomicU32,
    state: Mutex<RecordState>,
    store_bytes: Arc<AtomicUsize>,
    /// The session a taskUUID is unique in, under `Quirk::NoCrossSessionConflict`
    /// (`None`: unique for the key, the default).
    scope: Option<Uuid>,
    /// Delivered on the socket (`deliveryMethod: sync`).
    sync: AtomicBool,
}

impl TaskRecord {
    /// Counts one execution; returns how many there have been.
    pub fn executed(&self) -> u32 {
        self.executions.fetch_add(1, Relaxed) + 1
    }

    /// How many times the task ran.
    pub fn executions(&self) -> u32 {
        self.executions.load(Relaxed)
    }

    /// Marks the task as delivered on the socket.
    pub fn set_sync(&self) {
        self.sync.store(true, Relaxed);
    }

    /// True when the task was delivered on the socket.
    pub fn is_sync(&self) -> bool {
        self.sync.load(Relaxed)
    }

    /// Counts one billed image.
    pub fn billed(&self) {
        self.images_billed.fetch_add(1, Relaxed);
    }

    /// The task's counters and status.
    pub fn task_stats(&self) -> TaskStats {
        let st = lock(&self.state);
        let (status, error_code) = match (&st.error, st.finished_at) {
            (Some(e), _) => ("error", Some(e.get("code").and_then(Value::as_str).unwrap_or("unknown").to_string())),
            (None, Some(_)) => ("success", None),
            (None, None) => ("processing", None),
        };
        TaskStats {
            executions: self.executions(),
            images_billed: self.images_billed.load(Relaxed),
            status: status.to_string(),
            error_code,
        }
    }

    /// Sets the latency used to report progress.
    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.latency) = latency;
    }

    /// Records a successful item.
    pub fn push_item(&self, json: Arc<str>) {
        let mut st = lock(&self.state);
        st.bytes += json.len();
        self.store_bytes.fetch_add(json.len(), Relaxed);
        st.items.push(json);
    }

    /// Records the failure of the task (and finishes it).
    pub fn fail(&self, error: Value) {
        let mut st = lock(&self.state);
        st.error = Some(error);
        st.finished_at.get_or_insert_with(Instant::now);
    }

    /// Marks the task finished.
    pub fn finish(&self) {
        lock(&self.state).finished_at.get_or_insert_with(Instant::now);
    }

    fn expired(&self, now: Instant, retention: Duration) -> bool {
        lock(&self.state).finished_at.is_some_and(|t| now.saturating_duration_since(t) > retention)
    }

    fn forget(&self) {
        let st = lock(&self.state);
        self.store_bytes.fetch_sub(st.bytes.min(self.store_bytes.load(Relaxed)), Relaxed);
    }

    /// What `getResponse` answers: every item so far, cumulative, each with a `status`.
    pub fn get_response_items(&self) -> Vec<Value> {
        let st = lock(&self.state);
        let mut out: Vec<Value> = Vec::with_capacity(st.items.len() + 1);
        for raw in &st.items {
            if let Ok(Value::Object(mut m)) = serde_json::from_str::<Value>(raw) {
                m.insert("status".into(), json!("success"));
                m.insert("progress".into(), json!(100));
                out.push(Value::Object(m));
            }
        }
        if let Some(err) = &st.error {
            out.push(json!({
                "taskType": self.task_type,
                "taskUUID": self.uuid,
                "status": "error",
                "error": err,
            }));
        } else if st.finished_at.is_none() {
            let latency = lock(&self.latency).as_secs_f64();
            let elapsed = self.started.elapsed().as_secs_f64();
            let progress = if latency > 0.0 { (elapsed / latency * 100.0).clamp(0.0, 99.0) } else { 99.0 };
            out.push(json!({
                "taskType": self.task_type,
                "taskUUID": self.uuid,
                "status": "processing",
                "progress": progress.floor() as u64,
            }));
        }
        out
    }
}

#[derive(Default)]
struct StoreInner {
    map: HashMap<(KeyId, Uuid), Arc<TaskRecord>>,
    order: VecDeque<(KeyId, Uuid)>,
}

/// Every task accepted, per API key; bounded by count, bytes and time.
pub(crate) struct TaskStore {
    inner: Mutex<StoreInner>,
    bytes: Arc<AtomicUsize>,
    max_count: usize,
    max_bytes: usize,
}

impl TaskStore {
    pub fn new(max_count: usize, max_bytes: usize) -> TaskStore {
        TaskStore { inner: Mutex::default(), bytes: Arc::default(), max_count, max_bytes }
    }

    /// Registers a new task, or returns `None` when `key` already used `uuid`
    /// (a conflict). With a `scope` (a session), a taskUUID used in another scope
    /// is registered again, its executions carried over (it runs again).
    pub fn register(&self, key: KeyId, uuid: Uuid, task_type: &str, scope: Option<Uuid>) -> Option<Arc<TaskRecord>> {
        let mut inner = lock(&self.inner);
        let ran = match inner.map.get(&(key, uuid)) {
            Some(old) if scope.is_none() || old.scope == scope => return None,
            Some(old) => old.executions(),
            None => 0,
        };
        let record = Arc::new(TaskRecord {
            task_type: task_type.to_string(),
            uuid,
            started: Instant::now(),
            latency: Mutex::new(Duration::ZERO),
            executions: AtomicU32::new(ran),
            images_billed: AtomicU32::new(0),
            state: Mutex::default(),
            store_bytes: self.bytes.clone(),
            scope,
            sync: AtomicBool::new(false),
        });
        if inner.map.insert((key, uuid), record.clone()).is_none() {
            inner.order.push_back((key, uuid));
        }
        self.evict(&mut inner);
        Some(record)
    }

    /// Forgets the oldest tasks while over the count or byte bound.
    fn evict(&self, inner: &mut StoreInner) {
        while inner.map.len() > self.max_count || self.bytes.load(Relaxed) > self.max_bytes {
            let Some(k) = inner.order.pop_front() else { break };
            if let Some(r) = inner.map.remove(&k) {
                r.forget();
            }
        }
    }

    /// The task `uuid` of `key`.
    pub fn get(&self, key: KeyId, uuid: Uuid) -> Option<Arc<TaskRecord>> {
        lock(&self.inner).map.get(&(key, uuid)).cloned()
    }

    /// How many times `uuid` ran, over every key.
    pub fn executions(&self, uuid: Uuid, keys: usize) -> u32 {
        let inner = lock(&self.inner);
        (0..keys).filter_map(|k| inner.map.get(&(k, uuid))).map(|r| r.executions()).sum()
    }

    /// Every retained task's counters, by taskUUID (the same UUID under several keys
    /// is merged: executions and images add up, the last status wins).
    pub fn task_stats(&self) -> HashMap<Uuid, TaskStats> {
        let records: Vec<_> = lock(&self.inner).map.values().cloned().collect();
        let mut out: HashMap<Uuid, TaskStats> = HashMap::with_capacity(records.len());
        for r in records {
            let s = r.task_stats();
            out.entry(r.uuid)
                .and_modify(|e| {
                    e.executions += s.executions;
                    e.images_billed += s.images_billed;
                    e.status.clone_from(&s.status);
                    e.error_code.clone_from(&s.error_code);
                })
                .or_insert(s);
        }
        out
    }

    /// Forgets tasks finished longer ago than `retention`, and enforces the bounds.
    pub fn sweep(&self, retention: Duration) {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        let mut gone = Vec::new();
        inner.map.retain(|_, r| {
            let keep = !r.expired(now, retention);
            if !keep {
                gone.push(r.clone());
            }
            keep
        });
        for r in gone {
            r.forget();
        }
        let StoreInner { map, order } = &mut *inner;
        order.retain(|k| map.contains_key(k));
        self.evict(&mut inner);
    }
}
