//! The emulator's one lock policy.
//!
//! Every map the emulator keeps sits behind a `std::sync::Mutex` that is held for a
//! few map operations and never across an `.await`. A holder that panics cannot
//! leave a map worse than one entry missing or stale, so a poisoned lock is
//! recovered, never propagated: one failed request must not take the emulator down.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, recovering from poisoning (see the module docs).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
