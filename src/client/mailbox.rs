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

/// The events of one task, in order: up to two inline (a one-result task's
/// result and its `Done` never allocate), the rest in an overflow queue that only
/// multi-result tasks use. Everything in `overflow` is newer than what is inline,
/// because events go inline only while the overflow is empty.
#[derive(Debug, Default)]
struct Queue {
    inline: [Option<Event>; 2],
    head: usize,
    len: usize,
    overflow: VecDeque<Event>,
}

impl Queue {
    fn push(&mut self, event: Event) {
        if self.overflow.is_empty() && self.len < 2 {
            self.inline[(self.head + self.len) % 2] = Some(event);
            self.len += 1;
        } else {
            self.overflow.push_back(event);
        }
    }

    fn pop(&mut self) -> Option<Event> {
        if self.len > 0 {
            let e = self.inline[self.head].take();
            self.head = (self.head + 1) % 2;
            self.len -= 1;
            e
        } else {
            self.overflow.pop_front()
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    queue: Mutex<Queue>,
    waker: AtomicWaker,
}

impl Mailbox {
    /// Pushes an event and wakes the receiver. Never waits.
    pub(crate) fn push(&self, event: Event) {
        if let Ok(mut q) = self.queue.lock() {
            q.push(event);
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
        self.queue.lock().ok()?.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_out_in_order_across_inline_and_overflow() {
        let mut q = Queue::default();
        let tag = |e: Option<Event>| match e {
            Some(Event::Result(item)) => item.seed.map(|s| s as i64).unwrap_or(-1),
            Some(Event::Done) => 100,
            Some(Event::Failed(_)) => 200,
            None => -2,
        };
        let r = |seed: u64| Event::Result(Box::new(ResultItem { seed: Some(seed), ..Default::default() }));
        q.push(r(1));
        q.push(r(2));
        q.push(r(3)); // overflow
        assert_eq!(tag(q.pop()), 1);
        q.push(r(4)); // overflow is not empty: goes behind 3
        assert_eq!(tag(q.pop()), 2);
        assert_eq!(tag(q.pop()), 3);
        q.push(r(5));
        assert_eq!(tag(q.pop()), 4);
        assert_eq!(tag(q.pop()), 5);
        q.push(Event::Done);
        assert_eq!(tag(q.pop()), 100);
        assert_eq!(tag(q.pop()), -2);
        q.push(r(6));
        q.push(Event::Done);
        assert!(q.overflow.capacity() <= 4, "a one-result task stays inline");
        assert_eq!(tag(q.pop()), 6);
        assert_eq!(tag(q.pop()), 100);
    }
}
