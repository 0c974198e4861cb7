//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`):
//! what the engine records for whichever recorder the application installs (a Prometheus
//! exporter, StatsD, …). Without a recorder each call is a load of the global recorder
//! and a no-op; without the feature every function here is empty and inlined away.
//!
//! | name | type | what |
//! |---|---|---|
//! | `runware_tasks_submitted_total` | counter | tasks accepted for sending |
//! | `runware_tasks_completed_total` | counter | tasks that ended with all their results |
//! | `runware_tasks_failed_total{kind}` | counter | tasks that ended with an error, by kind (`validation`, `api`, `auth`, `timeout`, `unreachable`, `busy`, `duplicate_task`, `closed`, …) |
//! | `runware_tasks_cancelled_total` | counter | tasks whose caller went away |
//! | `runware_tasks_in_flight` | gauge | tasks submitted and not ended |
//! | `runware_task_duration_seconds` | histogram | submission to the last result, of completed tasks |
//! | `runware_slot_wait_seconds` | histogram | time a caller waited for an in-flight slot, when it had to |
//! | `runware_reconnects_total` | counter | connections after the first |
//! | `runware_resends_total` | counter | tasks sent again on a new connection, under their own taskUUID |
//! | `runware_conflicts_total` | counter | `conflictTaskUUID` answers (the server had the task) |
//! | `runware_duplicates_dropped_total` | counter | result items already delivered, dropped |
//! | `runware_polls_total` | counter | `getResponse` polls sent |
//! | `runware_dead_sockets_total` | counter | sockets declared dead by the keepalive |

/// Names, for the README and the tests.
pub const NAMES: &[&str] = &[
    "runware_tasks_submitted_total",
    "runware_tasks_completed_total",
    "runware_tasks_failed_total",
    "runware_tasks_cancelled_total",
    "runware_tasks_in_flight",
    "runware_task_duration_seconds",
    "runware_slot_wait_seconds",
    "runware_reconnects_total",
    "runware_resends_total",
    "runware_conflicts_total",
    "runware_duplicates_dropped_total",
    "runware_polls_total",
    "runware_dead_sockets_total",
];

/// Engine events with a counter of their own.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
    Submitted,
    Cancelled,
    Reconnect,
    Resends,
    Conflict,
    DuplicateDropped,
    Polls,
    DeadSocket,
}

#[cfg(feature = "metrics")]
mod imp {
    use super::Event;
    use std::time::Duration;

    #[inline]
    pub(crate) fn count(event: Event, n: u64) {
        let name = match event {
            Event::Submitted => "runware_tasks_submitted_total",
            Event::Cancelled => "runware_tasks_cancelled_total",
            Event::Reconnect => "runware_reconnects_total",
            Event::Resends => "runware_resends_total",
            Event::Conflict => "runware_conflicts_total",
            Event::DuplicateDropped => "runware_duplicates_dropped_total",
            Event::Polls => "runware_polls_total",
            Event::DeadSocket => "runware_dead_sockets_total",
        };
        metrics::counter!(name).increment(n);
    }

    #[inline]
    pub(crate) fn slot_waited(waited: Duration) {
        metrics::histogram!("runware_slot_wait_seconds").record(waited.as_secs_f64());
    }

    /// Held by a pending task: it is in flight while this lives.
    #[derive(Debug)]
    pub(crate) struct TaskTimer {
        /// Microseconds since the client's epoch (the clock the caller already read).
        started_us: u64,
    }

    impl TaskTimer {
        #[inline]
        pub(crate) fn start(started_us: u64) -> TaskTimer {
            metrics::gauge!("runware_tasks_in_flight").increment(1.0);
            TaskTimer { started_us }
        }

        /// `now_us`: microseconds since the client's epoch.
        #[inline]
        pub(crate) fn completed(&self, now_us: u64) {
            // The duration first: a scrape that counts a task completed (exporters
            // read counters before histograms) then also has its duration.
            let took = Duration::from_micros(now_us.saturating_sub(self.started_us));
            metrics::histogram!("runware_task_duration_seconds").record(took.as_secs_f64());
            metrics::counter!("runware_tasks_completed_total").increment(1);
        }

        #[inline]
        pub(crate) fn failed(&self, kind: &'static str) {
            metrics::counter!("runware_tasks_failed_total", "kind" => kind).increment(1);
        }
    }

    impl Drop for TaskTimer {
        fn drop(&mut self) {
            metrics::gauge!("runware_tasks_in_flight").decrement(1.0);
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod imp {
    use super::Event;
    use std::time::Duration;

    #[inline(always)]
    pub(crate) fn count(_: Event, _: u64) {}

    #[inline(always)]
    pub(crate) fn slot_waited(_: Duration) {}

    #[derive(Debug)]
    pub(crate) struct TaskTimer;

    impl TaskTimer {
        #[inline(always)]
        pub(crate) fn start(_: u64) -> TaskTimer {
            TaskTimer
        }
        #[inline(always)]
        pub(crate) fn completed(&self, _: u64) {}
        #[inline(always)]
        pub(crate) fn failed(&self, _: &'static str) {}
    }
}

pub(crate) use imp::{TaskTimer, count, slot_waited};
