//! A per-task mailbox: the reader pushes without ever waiting; the caller's future
//! or stream pops. Its bound is structural: a task receives at most its expected
//! number of distinct results plus one terminal event, so the queue cannot grow
//! past that (duplicates are dropped before they get here).

use super::error::ClientError;
use crate::protocol::ResultItem;
use crate::sync::lock;
use futures::task::AtomicWaker;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::{Context, Poll};

/// What a task's caller takes out of its mailbox.
///
/// Only ever moved from the queue to the caller; boxing the result would be the
/// very allocation (on the reader's thread, freed on the caller's) that the
/// inline slot exists to avoid.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Event {
    /// One distinct result.
    Result(ResultItem),
    /// Every expected result has arrived.
    Done,
    /// The task failed.
    Failed(ClientError),
}

/// How a task ended.
#[derive(Debug)]
enum End {
    Done,
    Failed(ClientError),
}

/// The events of one task, in order: its results, then how it ended. The first
/// result waiting lives inline (a one-result task's result is never boxed or
/// queued); later ones, which only multi-result tasks have, wait in `more`.
#[derive(Debug, Default)]
struct Queue {
    first: Option<ResultItem>,
    more: VecDeque<ResultItem>,
    end: Option<End>,
    /// The task's serialized frame, handed back on completion so that the
    /// caller's thread, which allocated it, frees it (thread-caching allocators
    /// keep such a free local; a free on the reader's thread is a remote one).
    spent: Option<String>,
}

impl Queue {
    fn push_result(&mut self, item: ResultItem) {
        if self.first.is_none() && self.more.is_empty() {
            self.first = Some(item);
        } else {
            self.more.push_back(item);
        }
    }

    fn pop(&mut self) -> Option<Event> {
        if let Some(item) = self.first.take().or_else(|| self.more.pop_front()) {
            return Some(Event::Result(item));
        }
        self.end.take().map(|end| match end {
            End::Done => Event::Done,
            End::Failed(e) => Event::Failed(e),
        })
    }
}

#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    queue: Mutex<Queue>,
    waker: AtomicWaker,
}

impl Mailbox {
    /// Queues a result (not the task's last) and wakes the receiver. Never waits.
    pub(crate) fn push_result(&self, item: ResultItem) {
        lock(&self.queue).push_result(item);
        self.waker.wake();
    }

    /// Ends the task with an error, after the results already queued.
    pub(crate) fn fail(&self, err: ClientError) {
        lock(&self.queue).end = Some(End::Failed(err));
        self.waker.wake();
    }

    /// Ends the task: its last result (if any) and `Done` in one step; `frame`
    /// is dropped by the receiver.
    pub(crate) fn complete(&self, last: Option<ResultItem>, frame: Option<String>) {
        {
            let mut q = lock(&self.queue);
            if let Some(item) = last {
                q.push_result(item);
            }
            q.end = Some(End::Done);
            q.spent = frame;
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
        // The spent frame is freed here, outside the lock.
        let (event, _spent) = {
            let mut q = lock(&self.queue);
            let spent = if q.first.is_none() && q.more.is_empty() { q.spent.take() } else { None };
            (q.pop(), spent)
        };
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(e: Option<Event>) -> i64 {
        match e {
            Some(Event::Result(item)) => item.seed.map(|s| s as i64).unwrap_or(-1),
            Some(Event::Done) => 100,
            Some(Event::Failed(_)) => 200,
            None => -2,
        }
    }

    fn r(seed: u64) -> ResultItem {
        ResultItem { seed: Some(seed), ..Default::default() }
    }

    #[test]
    fn results_come_out_in_order_across_the_inline_slot_and_the_queue() {
        let mut q = Queue::default();
        q.push_result(r(1));
        q.push_result(r(2)); // queued behind the inline one
        assert_eq!(tag(q.pop()), 1);
        q.push_result(r(3)); // the slot is free but 2 is older: queued
        assert_eq!(tag(q.pop()), 2);
        assert_eq!(tag(q.pop()), 3);
        assert_eq!(tag(q.pop()), -2);
        q.push_result(r(4));
        q.end = Some(End::Done);
        assert_eq!(tag(q.pop()), 4);
        assert_eq!(tag(q.pop()), 100);
        assert_eq!(tag(q.pop()), -2);
    }

    #[test]
    fn a_one_result_task_never_queues_and_its_end_comes_last() {
        let m = Mailbox::default();
        m.complete(Some(r(7)), Some("{}".to_string()));
        assert_eq!(m.queue.lock().map(|q| q.more.capacity()).unwrap_or(99), 0, "nothing queued");
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut pop = || match m.poll_pop(&mut cx) {
            Poll::Ready(e) => Some(e),
            Poll::Pending => None,
        };
        assert_eq!(tag(pop()), 7);
        assert!(m.queue.lock().map(|q| q.spent.is_some()).unwrap_or(false), "kept until the results are taken");
        assert_eq!(tag(pop()), 100);
        assert!(m.queue.lock().map(|q| q.spent.is_none()).unwrap_or(false), "freed by the receiver");
        assert!(pop().is_none());
    }

    #[test]
    fn a_failure_after_some_results_comes_after_them() {
        let m = Mailbox::default();
        m.push_result(r(1));
        m.fail(ClientError::Closed);
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(m.poll_pop(&mut cx), Poll::Ready(Event::Result(_))));
        assert!(matches!(m.poll_pop(&mut cx), Poll::Ready(Event::Failed(ClientError::Closed))));
        assert!(m.poll_pop(&mut cx).is_pending());
    }
}
