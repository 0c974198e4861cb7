//! The deadline keeper: one task that fails overdue tasks, instead of a timer per
//! task.
//!
//! Each pending task carries its deadline (milliseconds since the client's
//! epoch). The keeper sleeps until the earliest deadline it knows of, then scans
//! the pending table once: overdue tasks fail with [`ClientError::Timeout`], and
//! the earliest remaining deadline becomes the next wake-up. A submission only
//! reads that wake-up time, and lowers it (waking the keeper) in the rare case
//! that its own deadline comes sooner, so the hot path touches no timer, no lock
//! and allocates nothing.
//!
//! Scans are spaced at least ten times their own duration apart (and at least
//! [`RESOLUTION`]), so a storm of timeouts over a huge table costs at most about a
//! tenth of one core; a deadline fires at most that spacing late.

use super::error::ClientError;
use super::shared::Shared;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// The finest spacing between two scans.
const RESOLUTION: Duration = Duration::from_millis(1);

/// When a task was submitted and by when it must end, from one reading of the clock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Due {
    /// The deadline, in milliseconds since the client's epoch, rounded up (the
    /// table stores deadlines so).
    pub(crate) deadline_ms: u64,
    /// The submission, in microseconds since the client's epoch.
    pub(crate) submitted_us: u64,
}

/// The deadline `timeout` from now, and now.
pub(crate) fn due(shared: &Shared, timeout: Duration) -> Due {
    let now = shared.epoch.elapsed();
    let at = now.saturating_add(timeout);
    let ms = at.as_millis() + u128::from(!at.subsec_nanos().is_multiple_of(1_000_000));
    Due {
        deadline_ms: u64::try_from(ms).unwrap_or(u64::MAX),
        submitted_us: u64::try_from(now.as_micros()).unwrap_or(u64::MAX),
    }
}

impl Shared {
    /// Makes sure the keeper wakes by `deadline_ms` (called for every new task).
    pub(crate) fn watch_deadline(&self, deadline_ms: u64) {
        if self.lower_next_deadline(deadline_ms) {
            self.deadlines.wake.notify_one();
        }
    }

    /// Lowers the keeper's next wake-up to `deadline_ms`; true if it was later.
    fn lower_next_deadline(&self, deadline_ms: u64) -> bool {
        let next = &self.deadlines.next_ms;
        let mut current = next.load(Ordering::Acquire);
        while deadline_ms < current {
            match next.compare_exchange_weak(current, deadline_ms, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
        false
    }

    /// Fails every task whose deadline is at or before `now_ms`; returns the
    /// earliest deadline still pending (`u64::MAX` if none).
    fn expire(&self, now_ms: u64) -> u64 {
        let mut earliest = u64::MAX;
        let mut overdue: Vec<(Uuid, Duration)> = Vec::new();
        for task in self.tasks.pending.iter() {
            if task.deadline_ms <= now_ms {
                overdue.push((*task.key(), task.timeout));
            } else {
                earliest = earliest.min(task.deadline_ms);
            }
        }
        // Table guards are released before failing (which removes entries).
        if !overdue.is_empty() {
            let connection = self.link.state.borrow().to_string();
            for (uuid, after) in overdue {
                self.fail(&uuid, ClientError::Timeout { after, connection: connection.clone() });
            }
        }
        earliest
    }
}

/// Runs until the client shuts down.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut spacing = RESOLUTION;
    let mut last_scan: Option<Instant> = None;
    loop {
        if shared.is_shutdown() {
            return;
        }
        let next = shared.deadlines.next_ms.load(Ordering::Acquire);
        let now_ms = shared.now_ms();
        let not_before = last_scan.map(|t| t + spacing);
        if next > now_ms || not_before.is_some_and(|t| t > Instant::now()) {
            let wake = shared.deadlines.wake.notified();
            // Created before the flag is read again: a shutdown requested after this
            // point wakes it (`notify_waiters` reaches every `Notified` created).
            let stop = shared.life.shutdown_notify.notified();
            if shared.is_shutdown() {
                return;
            }
            // No deadline at all (or one beyond what an Instant holds): sleep until woken.
            let at = shared.epoch.checked_add(Duration::from_millis(next)).map(|at| match not_before {
                Some(t) => at.max(t),
                None => at,
            });
            let far = at.is_none();
            let at = at.unwrap_or_else(Instant::now);
            tokio::select! {
                _ = tokio::time::sleep_until(at), if !far => {}
                _ = wake => {}
                _ = stop => {}
            }
            continue;
        }
        // New submissions during the scan lower this again.
        shared.deadlines.next_ms.store(u64::MAX, Ordering::Release);
        let started = Instant::now();
        let earliest = shared.expire(now_ms);
        spacing = (started.elapsed() * 10).max(RESOLUTION);
        last_scan = Some(started);
        shared.lower_next_deadline(earliest);
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::ClientConfig;
    use super::super::mailbox::{Event, Mailbox};
    use super::super::pending::{NewTask, PendingTask};
    use super::*;
    use crate::protocol::ApiKey;
    use tokio::sync::mpsc;

    fn shared() -> Arc<Shared> {
        let (t, _) = mpsc::channel(8);
        let (p, _) = mpsc::channel(8);
        Arc::new(Shared::new(ClientConfig::new(ApiKey::new("k")), t, p))
    }

    /// Registers a task with `timeout`, as `Client::register` does.
    fn add(s: &Shared, timeout: Duration) -> (Uuid, Arc<Mailbox>) {
        let (uuid, mailbox) = (Uuid::new_v4(), Arc::new(Mailbox::default()));
        let Due { deadline_ms, submitted_us } = due(s, timeout);
        s.tasks.pending.insert(
            uuid,
            PendingTask::new(NewTask {
                seq: s.next_seq(),
                frame: Some("{}".into()),
                expected: 1,
                mailbox: mailbox.clone(),
                is_async: false,
                deadline_ms,
                submitted_us,
                timeout,
                permit: None,
                span: tracing::Span::none(),
                next_poll: Instant::now(),
            }),
        );
        s.watch_deadline(deadline_ms);
        (uuid, mailbox)
    }

    async fn next_event(m: &Mailbox) -> Event {
        std::future::poll_fn(|cx| m.poll_pop(cx)).await
    }

    fn timeout_of(e: Event) -> Duration {
        match e {
            Event::Failed(ClientError::Timeout { after, .. }) => after,
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_task_fails_at_its_own_deadline_and_no_other() {
        let s = shared();
        let keeper = tokio::spawn(run(s.clone()));
        let t0 = Instant::now();
        let (long, long_box) = add(&s, Duration::from_secs(60));
        // Submitted later with a sooner deadline: the keeper must wake for it.
        let (_, short_box) = add(&s, Duration::from_millis(200));
        // Completed before its deadline: never times out.
        let (done, done_box) = add(&s, Duration::from_millis(100));
        let (_, task) = s.tasks.pending.remove(&done).expect("pending");
        s.completed(task, None);

        assert_eq!(timeout_of(next_event(&short_box).await), Duration::from_millis(200));
        assert_eq!(t0.elapsed(), Duration::from_millis(200), "fires at its deadline, not a tick later");
        assert!(s.tasks.pending.contains_key(&long), "the long task is untouched");
        assert!(matches!(next_event(&done_box).await, Event::Done));

        assert_eq!(timeout_of(next_event(&long_box).await), Duration::from_secs(60));
        assert_eq!(t0.elapsed(), Duration::from_secs(60));
        assert!(s.tasks.pending.is_empty());
        assert_eq!(s.counters.snapshot().tasks_failed, 2);

        // Idle with nothing pending: a new task is still watched.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let (_, late_box) = add(&s, Duration::from_millis(5));
        let t1 = Instant::now();
        assert_eq!(timeout_of(next_event(&late_box).await), Duration::from_millis(5));
        assert_eq!(t1.elapsed(), Duration::from_millis(5));

        s.request_shutdown();
        keeper.await.expect("the keeper stops on shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_sub_millisecond_remainder_rounds_up_never_down() {
        let s = shared();
        tokio::time::advance(Duration::from_micros(300)).await;
        assert_eq!(due(&s, Duration::from_millis(2)).deadline_ms, 3);
        assert_eq!(due(&s, Duration::from_micros(700)).deadline_ms, 1);
        assert_eq!(due(&s, Duration::MAX).deadline_ms, u64::MAX);
    }
}
