//! The batch's in-flight cap, which follows the server: a rate-limit answer halves
//! it (not below 1, at most once per cool-down), each success grows it back by one,
//! up to `--concurrency`.

use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long after a cut the cap is not cut again: the tasks already in flight
/// when the server said "too many" answer the same way, and count as one signal.
const COOL_DOWN: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct State {
    cap: usize,
    in_use: usize,
    last_cut: Option<Instant>,
    /// Acquirers waiting for a place (a release wakes them only when there are some).
    waiters: usize,
}

/// An adjustable limit on tasks in flight.
#[derive(Debug)]
pub struct Throttle {
    max: usize,
    state: Mutex<State>,
    freed: Notify,
}

/// One task's place under the cap; dropping it frees the place.
#[derive(Debug)]
pub struct Slot<'a> {
    throttle: &'a Throttle,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let wake = self.throttle.with(|s| {
            s.in_use = s.in_use.saturating_sub(1);
            s.waiters > 0
        });
        if wake {
            self.throttle.freed.notify_waiters();
        }
    }
}

/// An acquirer waiting for a place; counted while it waits (also when its future
/// is dropped mid-wait).
struct Waiting<'a> {
    throttle: &'a Throttle,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.throttle.with(|s| s.waiters = s.waiters.saturating_sub(1));
    }
}

impl Throttle {
    /// A cap of `max`, starting at `max`.
    pub fn new(max: usize) -> Throttle {
        let max = max.max(1);
        Throttle {
            max,
            state: Mutex::new(State { cap: max, in_use: 0, last_cut: None, waiters: 0 }),
            freed: Notify::new(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Waits for a place under the current cap.
    pub async fn acquire(&self) -> Slot<'_> {
        // The common case: a place is free (no waiter registered).
        if self.try_take() {
            return Slot { throttle: self };
        }
        loop {
            // Registered before the check, so a release between the two is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            // Under the same lock as a release's check of `waiters`: a release after
            // this sees the waiter and wakes it; one before it left room here.
            let got = self.with(|s| {
                let free = s.in_use < s.cap;
                if free {
                    s.in_use += 1;
                } else {
                    s.waiters += 1;
                }
                free
            });
            if got {
                return Slot { throttle: self };
            }
            let _waiting = Waiting { throttle: self };
            freed.await;
        }
    }

    /// Takes a place if one is free under the cap.
    fn try_take(&self) -> bool {
        self.with(|s| {
            let free = s.in_use < s.cap;
            if free {
                s.in_use += 1;
            }
            free
        })
    }

    /// The server said "too many requests": halve the cap (once per cool-down).
    pub fn rate_limited(&self) {
        let now = Instant::now();
        self.with(|s| {
            if s.last_cut.is_none_or(|t| now.duration_since(t) >= COOL_DOWN) {
                s.cap = (s.cap / 2).max(1);
                s.last_cut = Some(now);
            }
        });
    }

    /// A task succeeded: grow the cap by one, up to the maximum.
    pub fn succeeded(&self) {
        let grew = self.with(|s| {
            let grow = s.cap < self.max;
            if grow {
                s.cap += 1;
            }
            grow
        });
        if grew {
            self.freed.notify_waiters();
        }
    }

    /// The cap now.
    pub fn cap(&self) -> usize {
        self.with(|s| s.cap)
    }

    /// The maximum (`--concurrency`).
    pub fn max(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rate_limits_halve_the_cap_and_successes_grow_it_back() {
        let t = Throttle::new(8);
        t.rate_limited();
        assert_eq!(t.cap(), 4);
        t.rate_limited();
        assert_eq!(t.cap(), 4, "one cut per cool-down");
        tokio::time::advance(COOL_DOWN).await;
        t.rate_limited();
        assert_eq!(t.cap(), 2);
        for _ in 0..3 {
            tokio::time::advance(COOL_DOWN).await;
            t.rate_limited();
        }
        assert_eq!(t.cap(), 1, "never below 1");
        for _ in 0..20 {
            t.succeeded();
        }
        assert_eq!(t.cap(), 8, "never above the maximum");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cap_waits_until_a_slot_is_freed_or_the_cap_grows() {
        let t = std::sync::Arc::new(Throttle::new(2));
        tokio::time::advance(COOL_DOWN).await;
        t.rate_limited();
        let first = t.acquire().await;
        let waiter = {
            let t = t.clone();
            tokio::spawn(async move {
                let _slot = t.acquire().await;
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "the cap is 1 and taken");
        t.succeeded();
        waiter.await.unwrap();
        drop(first);
        let _a = t.acquire().await;
        let _b = t.acquire().await;
    }
}
