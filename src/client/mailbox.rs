//! A per-task mailbox: the reader pushes without ever waiting; the caller's future
//! or stream pops. Its bound is structural: a task receives at most its expected
//! number of distinct results plus one terminal event, so the queue cannot grow
//! past that (duplicates are dropped before they get here).

use super::error::ClientError;
use crate::protocol::ResultItem;
use futures::task::AtomicWaker;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::{Context, Poll};

/// What the dispatcher tells a task.
#[derive(Debug)]
pub(crate) enum Event {
    /// One distinct result.
    Result(Box<ResultItem>),
    /// Every expected result has arrived.
    Done,
    /// The task failed.
    Failed(ClientError),
}

#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    queue: Mutex<VecDeque<Event>>,
    waker: AtomicWaker,
}

impl Mailbox {
    /// Pushes an event and wakes the receiver. Never waits.
    pub(crate) fn push(&self, event: Event) {
        if let Ok(mut q) = self.queue.lock() {
            q.push_back(event);
        }
        self.waker.wake();
    }

    /// Pops the next event, or registers the waker.
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Event> {
        if let Some(e) = self.try_pop() {
            return Poll::Ready(e);
        }
        self.waker.register(cx.waker());
        match self.try_pop() {
            Some(e) => Poll::Ready(e),
            None => Poll::Pending,
        }
    }

    fn try_pop(&self) -> Option<Event> {
        self.queue.lock().ok()?.pop_front()
    }
}
