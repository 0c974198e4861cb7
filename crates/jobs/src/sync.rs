//! Locks that outlive a panic elsewhere: a poisoned mutex's data is still
//! consistent here (every critical section is a few plain assignments).

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, ignoring poisoning.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
