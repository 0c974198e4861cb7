//! State shared by the parts of one client, in named groups with visible owners:
//! `tasks` (front end and dispatcher), `polls` (the poller), `deadlines` (the
//! deadline keeper), `link` (the supervisor and its connection), `life` (how the
//! client ends). The dispatcher's and the deadline keeper's methods on `Shared`
//! live in their own modules (`dispatch`, `deadlines`).

use super::config::ClientConfig;
use super::error::ClientError;
use super::metrics::Counters;
use super::pending::{PendingTable, PendingTask};
use super::state::ConnectionState;
use super::telemetry::{self, Event};
use crate::sync::lock;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::time::Instant;
use uuid::Uuid;

/// Everything the parts of one client share, grouped by owner: each group is
/// written by the part named on it and read by the others.
pub(crate) struct Shared {
    /// The settled configuration (never changes).
    pub(crate) config: ClientConfig,
    /// Counters every part adds to.
    pub(crate) counters: Counters,
    /// The zero of every `*_ms` clock below.
    pub(crate) epoch: Instant,
    /// Written by the front end (submit) and the dispatcher.
    pub(crate) tasks: Tasks,
    /// Written by the poller (and by whoever schedules a poll).
    pub(crate) polls: Polls,
    /// Written by the deadline keeper (and by submissions with a nearer deadline).
    pub(crate) deadlines: DeadlineClock,
    /// Written by the supervisor and its connection (reader and writer).
    pub(crate) link: Link,
    /// How the client ends: closing, shut down, or failed for good.
    pub(crate) life: Lifecycle,
}

/// The tasks in flight: the pending table, the in-flight slots and the queue
/// that feeds the writer.
pub(crate) struct Tasks {
    pub(crate) pending: PendingTable,
    pub(crate) permits: Arc<Semaphore>,
    /// Tasks to write (bounded by the in-flight limit, so sending never waits long).
    pub(crate) outbound: mpsc::Sender<Uuid>,
    /// Asks the writer to send every pending task it has not sent on this
    /// connection (the fallback when the outbound queue could not take a task).
    pub(crate) sweep: Notify,
    /// Submission order, for resending oldest first.
    pub(crate) seq: AtomicU64,
}

/// `getResponse` polling: what is polled, and when the poller wakes.
pub(crate) struct Polls {
    /// Polls to write.
    pub(crate) queue: mpsc::Sender<Uuid>,
    /// Tasks being recovered or fetched with `getResponse`.
    pub(crate) set: Mutex<HashSet<Uuid>>,
    pub(crate) wake: Notify,
    /// When the poller next wakes on its own (ms since `epoch`).
    pub(crate) next_ms: AtomicU64,
}

/// The deadline keeper's clock.
pub(crate) struct DeadlineClock {
    /// Its next wake-up (ms since `epoch`; `u64::MAX`: none).
    pub(crate) next_ms: AtomicU64,
    /// Wakes it for a deadline sooner than its next wake-up.
    pub(crate) wake: Notify,
}

/// The connection as the supervisor keeps it.
pub(crate) struct Link {
    pub(crate) state: watch::Sender<ConnectionState>,
    /// Wakes an idle supervisor (new work while disconnected) and a closing one.
    pub(crate) supervisor_wake: Notify,
    /// Current connection generation (0 before the first connection).
    pub(crate) generation: AtomicU64,
    pub(crate) connected: AtomicBool,
    /// The session to resume on the next connection.
    pub(crate) session: Mutex<Option<String>>,
    /// The latest reconnect delays (bounded), for checking the policy.
    pub(crate) reconnect_delays: Mutex<std::collections::VecDeque<std::time::Duration>>,
    /// The error of the last failed connection attempt (the cause of `Unreachable`).
    pub(crate) last_error: Mutex<Option<super::error::Cause>>,
    /// How long the last connection took to open and to authenticate.
    pub(crate) timings: Mutex<Option<super::ConnectTimings>>,
    /// Counts the pongs received (`Client::ping` waits for the next one).
    pub(crate) pongs: watch::Sender<u64>,
    /// Asks the writer for an application-level ping now.
    pub(crate) ping_now: Notify,
    /// Microseconds since `epoch` of the last inbound message (also the time of
    /// the completions routed from it).
    pub(crate) last_inbound_us: AtomicU64,
}

/// How the client ends.
pub(crate) struct Lifecycle {
    pub(crate) shutdown: AtomicBool,
    pub(crate) shutdown_notify: Notify,
    /// Set on a final failure (auth refused, closed): new tasks fail at once with it.
    pub(crate) terminal: Mutex<Option<ClientError>>,
    /// True once `terminal` is set (read on every submission instead of the lock).
    pub(crate) has_terminal: AtomicBool,
    /// `close` was called: no new tasks.
    pub(crate) closing: AtomicBool,
}

impl Shared {
    pub(crate) fn new(config: ClientConfig, outbound: mpsc::Sender<Uuid>, control: mpsc::Sender<Uuid>) -> Shared {
        Shared {
            tasks: Tasks {
                pending: PendingTable::default(),
                permits: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
                outbound,
                sweep: Notify::new(),
                seq: AtomicU64::new(0),
            },
            polls: Polls {
                queue: control,
                set: Mutex::new(HashSet::new()),
                wake: Notify::new(),
                next_ms: AtomicU64::new(0),
            },
            deadlines: DeadlineClock { next_ms: AtomicU64::new(u64::MAX), wake: Notify::new() },
            link: Link {
                state: watch::Sender::new(ConnectionState::Connecting),
                supervisor_wake: Notify::new(),
                generation: AtomicU64::new(0),
                connected: AtomicBool::new(false),
                session: Mutex::new(None),
                reconnect_delays: Mutex::new(std::collections::VecDeque::new()),
                last_error: Mutex::new(None),
                timings: Mutex::new(None),
                pongs: watch::channel(0).0,
                ping_now: Notify::new(),
                last_inbound_us: AtomicU64::new(0),
            },
            life: Lifecycle {
                shutdown: AtomicBool::new(false),
                shutdown_notify: Notify::new(),
                terminal: Mutex::new(None),
                has_terminal: AtomicBool::new(false),
                closing: AtomicBool::new(false),
            },
            counters: Counters::default(),
            epoch: Instant::now(),
            config,
        }
    }

    /// Decodes an inbound frame, scrubbing the API key out of any error text.
    pub(crate) fn decode(
        &self,
        text: &crate::protocol::SharedStr,
    ) -> Result<crate::protocol::Frame, crate::protocol::DecodeError> {
        let mut frame = crate::protocol::decode_frame(text)?;
        if !frame.errors.is_empty() || frame.items.iter().any(|i| i.error.is_some()) {
            frame.redact(self.config.api_key.expose());
        }
        Ok(frame)
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.tasks.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Microseconds since the epoch.
    pub(crate) fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn touch_inbound(&self) {
        self.link.last_inbound_us.store(self.now_us(), Ordering::Relaxed);
    }

    /// The error of the last failed connection attempt, if it had one.
    pub(crate) fn last_connect_error(&self) -> Option<super::error::Cause> {
        lock(&self.link.last_error).clone()
    }

    /// `Err` when the client takes no new task: ended (its terminal error) or closing.
    pub(crate) fn check_open(&self) -> Result<(), ClientError> {
        if let Some(e) = self.terminal_error() {
            return Err(e);
        }
        if self.life.closing.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        Ok(())
    }

    pub(crate) fn terminal_error(&self) -> Option<ClientError> {
        if !self.life.has_terminal.load(Ordering::Acquire) {
            return None;
        }
        lock(&self.life.terminal).clone()
    }

    pub(crate) fn set_terminal(&self, err: ClientError) {
        lock(&self.life.terminal).get_or_insert(err);
        self.life.has_terminal.store(true, Ordering::Release);
    }

    pub(crate) fn set_state(&self, state: ConnectionState) {
        self.link.state.send_replace(state);
    }

    pub(crate) fn is_shutdown(&self) -> bool {
        self.life.shutdown.load(Ordering::Acquire)
    }

    pub(crate) fn request_shutdown(&self) {
        self.life.shutdown.store(true, Ordering::Release);
        self.life.shutdown_notify.notify_waiters();
        self.link.supervisor_wake.notify_one();
    }

    /// Tells the caller of a task just removed from the table that it is complete,
    /// with its last result.
    pub(crate) fn completed(&self, mut task: PendingTask, last: Option<crate::protocol::ResultItem>) {
        Counters::add(&self.counters.tasks_completed, 1);
        // Every completion is routed from a frame just read: its arrival is "now".
        task.timer.completed(self.link.last_inbound_us.load(Ordering::Relaxed));
        task.span.in_scope(|| tracing::debug!("task complete"));
        task.mailbox.complete(last, task.frame.take());
    }

    /// Removes a task and hands its caller the error.
    pub(crate) fn fail(&self, uuid: &Uuid, err: ClientError) -> bool {
        match self.tasks.pending.remove(uuid) {
            Some((_, task)) => {
                Counters::add(&self.counters.tasks_failed, 1);
                task.timer.failed(err.kind_label());
                task.span.in_scope(|| tracing::debug!(error = %err, "task failed"));
                task.mailbox.fail(err);
                true
            }
            None => false,
        }
    }

    /// Fails every pending task with `err`.
    pub(crate) fn fail_all(&self, err: &ClientError) {
        let uuids: Vec<Uuid> = self.tasks.pending.iter().map(|e| *e.key()).collect();
        for uuid in uuids {
            self.fail(&uuid, err.clone());
        }
    }

    /// Removes a task whose caller went away.
    pub(crate) fn cancel(&self, uuid: &Uuid) {
        if self.tasks.pending.remove(uuid).is_some() {
            Counters::add(&self.counters.tasks_cancelled, 1);
            telemetry::count(Event::Cancelled, 1);
        }
    }

    /// Puts a task in the poll set; its first poll is due after `delay`.
    pub(crate) fn schedule_poll(&self, uuid: Uuid, delay: std::time::Duration) {
        let due = Instant::now() + delay;
        let newly = match self.tasks.pending.get_mut(&uuid) {
            Some(mut task) => {
                if task.polling && task.next_poll <= due {
                    false
                } else {
                    task.next_poll = due;
                    let newly = !task.polling;
                    task.polling = true;
                    newly
                }
            }
            None => return,
        };
        // The table guard is dropped before the poll-set lock is taken.
        if newly {
            lock(&self.polls.set).insert(uuid);
        }
        // Wake the poller only if this poll is due before its own next wake-up.
        let due_ms = u64::try_from(due.duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX);
        if due_ms < self.polls.next_ms.load(Ordering::Acquire) {
            self.polls.wake.notify_one();
        }
    }
}
