//! Counters the tests assert on, and their snapshot [`Stats`] (also `GET /stats`).

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of the emulator's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Stats {
    /// WebSocket connections accepted, in total.
    pub connections: u64,
    /// WebSocket connections open now.
    pub open_connections: u64,
    /// Successful authentications.
    pub auths: u64,
    /// Refused authentications.
    pub auth_failures: u64,
    /// Task objects received (every kind except `authentication` and `ping`).
    pub tasks_received: u64,
    /// `imageInference` and `promptEnhance` executions started.
    pub executions_total: u64,
    /// The most executions of one `taskUUID` (must stay 1).
    pub max_executions_per_task: u64,
    /// `taskUUID`s executed more than once (must stay 0).
    pub double_executed: u64,
    /// Tasks answered with `conflictTaskUUID`.
    pub conflicts: u64,
    /// Image result items written to a socket (duplicates and replays included).
    pub results_delivered: u64,
    /// Result items that could not be written because no socket was there; they wait in
    /// their session's buffer.
    pub results_buffered: u64,
    /// Buffered result items later written on a resumed session.
    pub results_replayed: u64,
    /// `imageInference` and `promptEnhance` tasks accepted and not yet finished.
    pub outstanding: u64,
    /// The high-water mark of `outstanding`.
    pub max_outstanding: u64,
    /// Application pings answered.
    pub pings: u64,
    /// `getResponse` tasks answered.
    pub get_responses: u64,
    /// Faults injected.
    pub faults_injected: u64,
    /// Image results produced by successful generation, including those of a task
    /// that later failed; duplicates and replays are not counted again.
    pub images_billed: u64,
    /// What those images cost, in micro-USD (`images_billed` × $0.04), whether or not
    /// the task asked for `includeCost`.
    pub billed_micro_usd: u64,
    /// Tasks failed by a [`FailRule`](super::FailRule).
    pub tasks_failed_injected: u64,
    /// Tasks stalled (never to end) by a [`FailRule::stall`](super::FailRule::stall).
    pub tasks_stalled_injected: u64,
    /// `imageUpload` and `mediaStorage` uploads accepted.
    pub uploads: u64,
    /// The largest text frame received from a client, in bytes.
    pub largest_frame_in: u64,
    /// Bytes of text frames received from clients, in all.
    pub bytes_in: u64,
    /// The largest `imageInference` task received, in bytes (of a frame of only such
    /// tasks, its size over their count).
    pub largest_inference_in: u64,
}

/// One task's counters (`EmulatorHandle::task_stats`, `GET /stats/tasks`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskStats {
    /// How many times the task ran (must stay at most 1).
    pub executions: u32,
    /// Image results billed for it.
    pub images_billed: u32,
    /// `processing`, `success` or `error`.
    pub status: String,
    /// The error code, when the task failed.
    pub error_code: Option<String>,
}

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connections: AtomicU64,
    pub open_connections: AtomicU64,
    pub auths: AtomicU64,
    pub auth_failures: AtomicU64,
    pub tasks_received: AtomicU64,
    pub executions_total: AtomicU64,
    pub max_executions_per_task: AtomicU64,
    pub double_executed: AtomicU64,
    pub conflicts: AtomicU64,
    pub results_delivered: AtomicU64,
    pub results_buffered: AtomicU64,
    pub results_replayed: AtomicU64,
    pub outstanding: AtomicU64,
    pub max_outstanding: AtomicU64,
    pub pings: AtomicU64,
    pub get_responses: AtomicU64,
    pub faults_injected: AtomicU64,
    pub images_billed: AtomicU64,
    pub billed_micro_usd: AtomicU64,
    pub tasks_failed_injected: AtomicU64,
    pub tasks_stalled_injected: AtomicU64,
    pub uploads: AtomicU64,
    pub largest_frame_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub largest_inference_in: AtomicU64,
}

/// Adds one.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

/// Adds `n`.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Relaxed);
    }
}

impl Counters {
    /// A task was accepted for execution.
    pub fn task_started(&self) {
        let now = self.outstanding.fetch_add(1, Relaxed) + 1;
        self.max_outstanding.fetch_max(now, Relaxed);
    }

    /// An accepted task finished.
    pub fn task_finished(&self) {
        let _ = self.outstanding.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
    }

    /// A task ran; `count` is how many times its UUID has run now.
    pub fn executed(&self, count: u32) {
        bump(&self.executions_total);
        self.max_executions_per_task.fetch_max(u64::from(count), Relaxed);
        if count == 2 {
            bump(&self.double_executed);
        }
    }

    /// One image was produced and billed at `micro_usd`.
    pub fn billed(&self, micro_usd: u64) {
        bump(&self.images_billed);
        add(&self.billed_micro_usd, micro_usd);
    }

    /// A consistent-enough copy of every counter.
    pub fn snapshot(&self) -> Stats {
        let g = |c: &AtomicU64| c.load(Relaxed);
        Stats {
            connections: g(&self.connections),
            open_connections: g(&self.open_connections),
            auths: g(&self.auths),
            auth_failures: g(&self.auth_failures),
            tasks_received: g(&self.tasks_received),
            executions_total: g(&self.executions_total),
            max_executions_per_task: g(&self.max_executions_per_task),
            double_executed: g(&self.double_executed),
            conflicts: g(&self.conflicts),
            results_delivered: g(&self.results_delivered),
            results_buffered: g(&self.results_buffered),
            results_replayed: g(&self.results_replayed),
            outstanding: g(&self.outstanding),
            max_outstanding: g(&self.max_outstanding),
            pings: g(&self.pings),
            get_responses: g(&self.get_responses),
            faults_injected: g(&self.faults_injected),
            images_billed: g(&self.images_billed),
            billed_micro_usd: g(&self.billed_micro_usd),
            tasks_failed_injected: g(&self.tasks_failed_injected),
            tasks_stalled_injected: g(&self.tasks_stalled_injected),
            uploads: g(&self.uploads),
            largest_frame_in: g(&self.largest_frame_in),
            bytes_in: g(&self.bytes_in),
            largest_inference_in: g(&self.largest_inference_in),
        }
    }
}
