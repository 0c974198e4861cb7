//! The crate's one lock policy.
//!
//! The engine's `std::sync::Mutex`es guard small pieces of state (a task's mailbox,
//! the poll set, the session UUID, the terminal error, the reconnect history) for a
//! few operations each and are never held across an `.await` or while taking
//! another lock. No holder can panic half-way through a change that would leave the
//! state unusable, so a poisoned lock is recovered, never propagated or ignored: a
//! result is never dropped because some other thread panicked.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, recovering from poisoning (see the module docs).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
