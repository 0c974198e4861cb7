//! Test-only hooks for `benches/route.rs` and `benches/memory.rs`: the crate-private
//! dispatcher behind a tiny surface. Compiled only with the non-default
//! `bench-internals` feature; not part of the API, no stability promise.

use super::config::ClientConfig;
use super::mailbox::{Event, Mailbox};
use super::pending::PendingTask;
use super::shared::Shared;
use crate::protocol::{ApiKey, SharedStr};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use uuid::Uuid;

/// A pending table and dispatcher with no connection: register tasks, route frames.
pub struct Router {
    shared: Shared,
    waiting: Vec<Arc<Mailbox>>,
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Router {
    /// An empty pending table.
    pub fn new() -> Router {
        let (tasks, _) = mpsc::channel(1);
        let (polls, _) = mpsc::channel(1);
        Router { shared: Shared::new(ClientConfig::new(ApiKey::new("bench")), tasks, polls), waiting: Vec::new() }
    }

    /// Registers a pending task (as `Client::register_with` does) whose caller is
    /// parked on its mailbox.
    pub fn register(&mut self, uuid: Uuid, expected: u32) {
        let mailbox = Arc::new(Mailbox::default());
        let waker = futures::task::noop_waker();
        let _ = mailbox.poll_pop(&mut Context::from_waker(&waker));
        let task = PendingTask::sent(self.shared.next_seq(), expected, mailbox.clone(), false);
        self.shared.tasks.pending.insert(uuid, task);
        self.waiting.push(mailbox);
    }

    /// Decodes one inbound frame and routes its items, exactly as the reader does.
    /// Returns the number of items in the frame.
    pub fn route(&self, frame: &SharedStr) -> usize {
        match self.shared.decode(frame) {
            Ok(f) => {
                let n = f.items.len();
                self.shared.dispatch(f);
                n
            }
            Err(_) => 0,
        }
    }

    /// Takes every event delivered so far (as the callers would) and forgets the
    /// mailboxes of registered tasks. Returns the number of results taken.
    pub fn drain(&mut self) -> usize {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut results = 0;
        for m in self.waiting.drain(..) {
            while let Poll::Ready(e) = m.poll_pop(&mut cx) {
                if matches!(e, Event::Result(_)) {
                    results += 1;
                }
            }
        }
        results
    }

    /// Tasks in the pending table.
    pub fn pending(&self) -> usize {
        self.shared.tasks.pending.len()
    }
}

/// In-memory sizes of the per-task structures, for the memory report.
pub fn sizes() -> Vec<(&'static str, usize)> {
    vec![
        ("PendingTask", std::mem::size_of::<PendingTask>()),
        ("Mailbox", std::mem::size_of::<Mailbox>()),
        ("Event", std::mem::size_of::<Event>()),
        ("ResultItem", std::mem::size_of::<crate::protocol::ResultItem>()),
        ("TaskStream", std::mem::size_of::<super::TaskStream>()),
    ]
}
