//! The pending table: every task that has not ended, keyed by `taskUUID`, with
//! its serialized frame (for resends) and its delivery state.
//!
//! Guards of the table are never held across `.await`. While it holds an entry's
//! guard, the dispatcher takes that task's own mailbox lock (so a task's results
//! are delivered in order); nothing takes the locks the other way round, and no
//! guard is held while taking the poll-set lock or another entry.

use super::mailbox::Mailbox;
use crate::protocol::SharedStr;
use dashmap::DashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use uuid::Uuid;

/// The pending table: task UUID → task.
pub(crate) type PendingTable = DashMap<Uuid, PendingTask, BuildHasherDefault<UuidHasher>>;

/// The pending table's hasher. Task UUIDs are random (v4) or derived from a hash,
/// and the table is only filled with this client's own tasks, so a keyed SipHash
/// buys nothing; each 8-byte half goes through a full-avalanche mix (MurmurHash3's
/// finalizer) instead, so that sequential UUIDs a caller picks by hand still
/// spread over every shard and bucket.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct UuidHasher(u64);

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

impl Hasher for UuidHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = mix(self.0.rotate_left(29) ^ u64::from_le_bytes(word));
        }
    }

    fn write_usize(&mut self, n: usize) {
        // The length prefix of the UUID's 16 bytes: the same for every key.
        self.0 ^= n as u64;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// One pending task.
#[derive(Debug)]
pub(crate) struct PendingTask {
    /// Submission order (resends go out in this order).
    pub(crate) seq: u64,
    /// The serialized task object, sent as is on every (re)send. `None` for a
    /// task that is only being recovered with `getResponse`.
    pub(crate) frame: Option<String>,
    /// When the task times out (ms since the client's epoch; see `deadlines`).
    pub(crate) deadline_ms: u64,
    /// The timeout the deadline came from (for the error).
    pub(crate) timeout: Duration,
    /// Distinct results that complete the task.
    pub(crate) expected: u32,
    /// Result keys (imageUUIDs) delivered so far.
    pub(crate) seen: Vec<SharedStr>,
    /// Where events go.
    pub(crate) mailbox: Arc<Mailbox>,
    /// Connection generation the frame was last written on (0: never).
    pub(crate) sent_gen: u64,
    /// True once the task was resent on a connection that resumed the session.
    pub(crate) resent_on_resumed: bool,
    /// `deliveryMethod: async`: results are fetched with `getResponse`.
    pub(crate) is_async: bool,
    /// In the poll set.
    pub(crate) polling: bool,
    /// The server acknowledged the task or reported it processing (no result yet).
    pub(crate) acknowledged: bool,
    /// Polls sent so far.
    pub(crate) polls: u32,
    /// When the next poll is due.
    pub(crate) next_poll: Instant,
    /// The in-flight slot, released when the entry is removed.
    pub(crate) _permit: Option<OwnedSemaphorePermit>,
    /// The task's span (taskUUID as a field).
    pub(crate) span: tracing::Span,
    /// In flight for the metrics while this lives (zero-sized without the feature).
    pub(crate) timer: super::telemetry::TaskTimer,
}

/// What a new pending task is made of; the rest of its state starts empty.
pub(crate) struct NewTask {
    pub(crate) seq: u64,
    pub(crate) frame: Option<String>,
    pub(crate) expected: u32,
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) is_async: bool,
    pub(crate) deadline_ms: u64,
    /// Microseconds since the client's epoch (for the task-duration metric).
    pub(crate) submitted_us: u64,
    pub(crate) timeout: Duration,
    pub(crate) permit: Option<OwnedSemaphorePermit>,
    pub(crate) span: tracing::Span,
    /// Any instant (the client's epoch): only read once the task is polled.
    pub(crate) next_poll: Instant,
}

impl PendingTask {
    /// A task not yet sent on any connection.
    pub(crate) fn new(t: NewTask) -> PendingTask {
        PendingTask {
            seq: t.seq,
            frame: t.frame,
            deadline_ms: t.deadline_ms,
            timeout: t.timeout,
            expected: t.expected,
            seen: Vec::new(),
            mailbox: t.mailbox,
            sent_gen: 0,
            resent_on_resumed: false,
            is_async: t.is_async,
            polling: false,
            acknowledged: false,
            polls: 0,
            next_poll: t.next_poll,
            _permit: t.permit,
            span: t.span,
            timer: super::telemetry::TaskTimer::start(t.submitted_us),
        }
    }

    /// A task already sent on connection 1, with no deadline, slot or span (for
    /// the dispatcher's tests and benches).
    #[cfg(any(test, feature = "bench-internals"))]
    pub(crate) fn sent(seq: u64, expected: u32, mailbox: Arc<Mailbox>, is_async: bool) -> PendingTask {
        let mut task = PendingTask::new(NewTask {
            seq,
            frame: Some("{}".to_string()),
            expected,
            mailbox,
            is_async,
            deadline_ms: u64::MAX,
            submitted_us: 0,
            timeout: Duration::MAX,
            permit: None,
            span: tracing::Span::none(),
            next_poll: Instant::now(),
        });
        task.sent_gen = 1;
        task
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn sequential_uuids_spread_over_low_and_high_bits() {
        let build = BuildHasherDefault::<UuidHasher>::default();
        let hashes: Vec<u64> = (0..4096u128).map(|n| build.hash_one(Uuid::from_u128(n))).collect();
        for (name, shift) in [("low", 0), ("high", 52)] {
            let distinct: std::collections::HashSet<u64> = hashes.iter().map(|&h| (h >> shift) & 0xfff).collect();
            // 4,096 keys into 4,096 slots: a good hash fills about 63 % of them.
            assert!(distinct.len() > 2400, "{name} bits: {} distinct of 4096", distinct.len());
        }
    }
}
