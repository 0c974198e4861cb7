//! Fault injection: what a test can make go wrong, on purpose.

use super::failures::{FailRule, FailRules};
use super::sync::lock;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::time::Instant;

/// A fault to inject with [`EmulatorHandle::inject`](super::EmulatorHandle::inject).
///
/// Connection faults apply to the connections open at the moment of injection; the
/// "next" kinds are armed and fire later. Task faults ([`Fault::FailTasks`],
/// [`Fault::Nsfw`]) apply to tasks accepted (or results produced) after injection.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Fault {
    /// Close every connection's TCP socket abruptly, without a close frame.
    Drop,
    /// Close every connection cleanly with a close frame (1001, going away).
    Close,
    /// Stop reading and writing on every connection but keep its socket open (no
    /// pongs, no results) until the idle timeout; its results go to the session
    /// buffer as if undelivered.
    HalfOpen,
    /// Armed: the next time a connection has written some but not all results of a
    /// task with `numberResults` > 1, drop it abruptly right there.
    DropMidTask,
    /// Drop every connection and forget every session with its buffered results. The
    /// task store (conflicts, `getResponse`) survives.
    Restart,
    /// On every connection, send an error for a random unknown `taskUUID` and one with
    /// no `taskUUID`.
    StrayError,
    /// On every connection, send malformed frames: non-JSON text, a JSON array,
    /// `{"data":5}`, an item without `taskUUID`, and a binary frame.
    Garbage,
    /// Armed: each of the next `n` result items is sent twice.
    DuplicateResults(u32),
    /// The next `n` WebSocket upgrades get HTTP 503.
    RefuseHandshakes(u32),
    /// Armed: the next upgrade is delayed by this long.
    SlowHandshake(Duration),
    /// For this long (tokio time) from now, every WebSocket upgrade is held open
    /// without an answer until the window ends, then proceeds: a server that is
    /// back on TCP but not yet serving. Clients with a connect timeout shorter than
    /// the window see their attempts time out.
    HoldHandshakes(Duration),
    /// The next `n` authentications get `invalidApiKey`, even with a valid key.
    RefuseAuth(u32),
    /// Arms a rule that fails accepted `imageInference` and `promptEnhance` tasks on
    /// the server, possibly after some of their results (§7.1 of the protocol).
    /// Several rules may be armed; the first that matches a task wins. A failed
    /// task's delivered results are billed, its taskUUID stays used.
    FailTasks(FailRule),
    /// From now on, each image result is flagged `"NSFWContent": true` with this
    /// probability (seeded RNG); 1.0 flags every one, 0.0 disarms.
    Nsfw(f64),
    /// Drops every connection abruptly now and refuses every WebSocket upgrade with
    /// HTTP 503 for this long (tokio time). Tasks keep running; their results wait in
    /// their sessions' buffers as after any drop.
    Outage(Duration),
    /// Forgets every uploaded image now, as a server whose uploads expired would:
    /// tasks that reference one fail with `invalidReferenceImage`.
    ForgetUploads,
}

/// Armed faults.
#[derive(Debug, Default)]
pub(crate) struct FaultState {
    refuse_handshakes: AtomicU32,
    slow_handshake: Mutex<Option<Duration>>,
    refuse_auth: AtomicU32,
    duplicate_results: AtomicU32,
    drop_mid_task: AtomicBool,
    /// The armed task failure rules.
    pub fail_rules: FailRules,
    /// The NSFW probability, as `f64` bits (0 is 0.0: disarmed).
    nsfw_bits: AtomicU64,
    /// Upgrades are refused until then.
    outage_until: Mutex<Option<Instant>>,
    /// Upgrades are held until then.
    hold_until: Mutex<Option<Instant>>,
}

/// Takes one from `counter` if it is positive.
fn take(counter: &AtomicU32) -> bool {
    counter.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_ok()
}

impl FaultState {
    /// Arms `fault` if it is one that fires later (the "next N" kinds, task faults,
    /// an outage's deadline). Faults that act on the open connections now (drop,
    /// close, half-open, restart, stray errors, garbage) are not armed here.
    pub fn arm(&self, fault: Fault) {
        match fault {
            Fault::DropMidTask => self.drop_mid_task.store(true, Relaxed),
            Fault::DuplicateResults(n) => {
                self.duplicate_results.fetch_add(n, Relaxed);
            }
            Fault::RefuseHandshakes(n) => {
                self.refuse_handshakes.fetch_add(n, Relaxed);
            }
            Fault::SlowHandshake(d) => *lock(&self.slow_handshake) = Some(d),
            Fault::RefuseAuth(n) => {
                self.refuse_auth.fetch_add(n, Relaxed);
            }
            Fault::FailTasks(rule) => self.fail_rules.arm(rule),
            Fault::Nsfw(p) => self.nsfw_bits.store(probability(p).to_bits(), Relaxed),
            Fault::Outage(d) => extend(&self.outage_until, d),
            Fault::HoldHandshakes(d) => extend(&self.hold_until, d),
            Fault::Drop
            | Fault::Close
            | Fault::HalfOpen
            | Fault::Restart
            | Fault::StrayError
            | Fault::Garbage
            | Fault::ForgetUploads => {}
        }
    }

    /// True if this upgrade must be refused.
    pub fn take_refuse_handshake(&self) -> bool {
        take(&self.refuse_handshakes)
    }
    /// The delay for this upgrade, if one is armed.
    pub fn take_slow_handshake(&self) -> Option<Duration> {
        lock(&self.slow_handshake).take()
    }
    /// True if this authentication must be refused.
    pub fn take_refuse_auth(&self) -> bool {
        take(&self.refuse_auth)
    }
    /// True if this result item must be sent twice.
    pub fn take_duplicate(&self) -> bool {
        take(&self.duplicate_results)
    }
    /// True if a mid-task drop is armed (does not disarm).
    pub fn drop_mid_task_armed(&self) -> bool {
        self.drop_mid_task.load(Relaxed)
    }
    /// Disarms the mid-task drop; true if this caller is the one that fires it.
    pub fn fire_drop_mid_task(&self) -> bool {
        self.drop_mid_task.swap(false, Relaxed)
    }
    /// The probability that an image result is flagged NSFW.
    pub fn nsfw_probability(&self) -> f64 {
        f64::from_bits(self.nsfw_bits.load(Relaxed))
    }
    /// When a held upgrade may proceed, while a hold window is open.
    pub fn handshake_hold(&self) -> Option<Instant> {
        let mut until = lock(&self.hold_until);
        match *until {
            Some(t) if Instant::now() < t => Some(t),
            Some(_) => {
                *until = None;
                None
            }
            None => None,
        }
    }
    /// True while an outage refuses upgrades (an ended outage is forgotten).
    pub fn in_outage(&self) -> bool {
        let mut until = lock(&self.outage_until);
        match *until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }
}

/// Moves a window's end to `d` from now, unless it already ends later.
fn extend(window: &Mutex<Option<Instant>>, d: Duration) {
    let now = Instant::now();
    let until = now.checked_add(d).unwrap_or_else(|| now + Duration::from_secs(86_400 * 365));
    let mut cur = lock(window);
    *cur = Some(cur.map_or(until, |c| c.max(until)));
}

/// A probability clamped to `0..=1` (NaN is 0).
fn probability(p: f64) -> f64 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
}
