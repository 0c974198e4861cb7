//! The poller: sends `getResponse` for tasks in the poll set (async delivery,
//! and recovery after `conflictTaskUUID`) with a growing interval, while connected.

use super::shared::Shared;
use crate::sync::lock;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// Longest sleep between scans when nothing is due sooner.
const IDLE_SCAN: Duration = Duration::from_millis(500);

pub(crate) async fn run(shared: Arc<Shared>) {
    loop {
        if shared.is_shutdown() {
            return;
        }
        // While scanning, every new poll wakes the next scan.
        shared.polls.next_ms.store(u64::MAX, Ordering::Release);
        let now = Instant::now();
        let mut due: Vec<Uuid> = Vec::new();
        let mut next = now + IDLE_SCAN;
        let members: Vec<Uuid> = lock(&shared.polls.set).iter().copied().collect();
        let connected = shared.link.connected.load(Ordering::Acquire);
        let mut gone = Vec::new();
        for uuid in members {
            let Some(mut task) = shared.tasks.pending.get_mut(&uuid) else {
                gone.push(uuid);
                continue;
            };
            if task.next_poll <= now {
                if connected {
                    task.next_poll = now + shared.config.poll.interval(task.polls);
                    task.polls += 1;
                    due.push(uuid);
                } else {
                    // Not connected: poll as soon as a connection is back.
                    task.next_poll = now + Duration::from_millis(50);
                }
            }
            next = next.min(task.next_poll);
        }
        if !gone.is_empty() {
            let mut set = lock(&shared.polls.set);
            for u in &gone {
                set.remove(u);
            }
        }
        for uuid in due {
            if shared.polls.queue.send(uuid).await.is_err() {
                return;
            }
        }
        let next_ms = u64::try_from(next.duration_since(shared.epoch).as_millis()).unwrap_or(u64::MAX);
        shared.polls.next_ms.store(next_ms, Ordering::Release);
        let wake = shared.polls.wake.notified();
        let stop = shared.life.shutdown_notify.notified();
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = wake => {}
            _ = stop => {}
        }
    }
}
