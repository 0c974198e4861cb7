//! Where a runner keeps its jobs' records: the attempt before it is sent, each
//! image as it arrives, the failures the server reported, the outcome, and the
//! references uploaded once. A runner started on a store that an earlier runner
//! wrote resumes its unfinished jobs under their open attempts' taskUUIDs.
//!
//! - [`MemoryStore`]: the default; nothing survives the process.
//! - [`JournalStore`](journal::JournalStore): the batch's JSONL journal (format 2; format-1 journals are
//!   read for conversion).
//!
//! A store is written through [`Store::record`]; an `attempt` or `upload` record
//! is durable when that call returns (it must be, before the attempt is sent),
//! others may be written a little later (the journal's group commit).

pub mod journal;
mod memory;

pub use memory::MemoryStore;

use crate::record::{Entry, JobState};
use std::future::Future;
use std::pin::Pin;
use uuid::Uuid;

/// A store's answer: ready at once (a store in memory, a record appended to a
/// buffer), or a future to wait for (a flush, a database round trip). The ready
/// case costs no allocation.
pub enum StoreFuture<'a, T> {
    /// The answer.
    Ready(Option<Result<T, StoreError>>),
    /// The answer, once this resolves.
    Pending(Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>),
}

impl<'a, T> StoreFuture<'a, T> {
    /// An answer known now.
    pub fn ready(answer: Result<T, StoreError>) -> Self {
        StoreFuture::Ready(Some(answer))
    }

    /// An answer `f` gives.
    pub fn pending(f: impl Future<Output = Result<T, StoreError>> + Send + 'a) -> Self {
        StoreFuture::Pending(Box::pin(f))
    }
}

impl<T: Unpin> Future for StoreFuture<'_, T> {
    type Output = Result<T, StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        match self.get_mut() {
            // Polled again after it answered: the store has nothing more to say.
            StoreFuture::Ready(answer) => std::task::Poll::Ready(answer.take().unwrap_or(Err(StoreError::Closed))),
            StoreFuture::Pending(f) => f.as_mut().poll(cx),
        }
    }
}

/// A store cannot be read or written: running on would lose the record of what ran.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store was closed, or its writer failed (the first failure is in its log).
    #[error("the job store is closed")]
    Closed,
    /// Reading or writing failed.
    #[error("{what}: {message}")]
    Io {
        /// What was being done, naming the file or database.
        what: String,
        /// The cause, in words.
        message: String,
    },
}

/// A place to record jobs. Object-safe: a runner holds an `Arc<dyn Store>`.
pub trait Store: Send + Sync + 'static {
    /// The namespace of the taskUUIDs of this store's jobs: attempt *n* of job *k*
    /// runs under [`attempt_uuid`](crate::identity::attempt_uuid)`(namespace, k, n)`.
    /// Fixed for the store's life, so a restarted runner derives the same taskUUIDs.
    fn namespace(&self) -> Uuid;

    /// The taskUUID of attempt `n` of job `key`: by default
    /// [`attempt_uuid`](crate::identity::attempt_uuid)`(namespace, key, n)`, the
    /// same in every process that opens the store. A store that does not outlive
    /// its process may derive it more cheaply, as long as it stays the same for
    /// the store's life and distinct for every (key, n).
    fn attempt_uuid(&self, key: &str, n: u32) -> Uuid {
        crate::identity::attempt_uuid(self.namespace(), key, n)
    }

    /// What the store knows of job `key` (`None`: nothing).
    fn load<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<JobState>>;

    /// Records `entry`. An [`Entry::Attempt`] or [`Entry::Upload`] is durable when
    /// this resolves.
    fn record<'a>(&'a self, entry: &'a Entry) -> StoreFuture<'a, ()>;

    /// The uploads recorded earlier: (content key, imageUUID).
    fn uploads(&self) -> Vec<(Uuid, Uuid)>;

    /// What earlier runs were billed, USD (every recorded image's reported cost).
    fn billed(&self) -> f64;

    /// The keys of jobs that are not over (an open attempt, or a failure a later
    /// run may get past), for a runner that resumes them.
    fn unfinished(&self) -> Vec<String>;
}
