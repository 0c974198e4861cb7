//! # runware-jobs
//!
//! Jobs over [`runware_ws`]: the guarantees of the `runware` batch for any
//! program that embeds the library — a service that fires hundreds of edits, a
//! queue worker, a batch.
//!
//! A [`Job`] is a stable key plus a task. [`Runner::run`] runs it to its end and
//! returns every image, or a final error together with the images received:
//!
//! - a failure **the server reported** is retried under the next attempt's
//!   taskUUID (a pure function of the store's namespace, the key and the attempt
//!   number), with backoff and jitter, for the missing images only;
//! - an **unknown outcome** (deadline, lost socket, crash) is recovered under the
//!   **same** taskUUID, never a new one: nothing runs, or is billed, twice;
//! - rate limits halve the in-flight cap shared by every job, successes grow it back;
//! - spend is capped before it is spent; inline references are uploaded once;
//! - every attempt is recorded in a [`Store`] before it is sent, every image as it
//!   arrives, so a runner restarted on the same store finishes what an earlier
//!   one started without sending anything twice.
//!
//! Layers (each module uses only those above it in this list): [`identity`],
//! [`task`], [`record`], [`policy`] (the one decision, a pure function),
//! [`throttle`], [`spend`], [`store`], [`references`], [`hooks`], [`runner`].

#![warn(missing_docs)]

pub mod hooks;
pub mod identity;
pub mod policy;
pub mod record;
pub mod references;
pub mod runner;
pub mod spend;
pub mod store;
mod sync;
pub mod task;
pub mod throttle;

pub use hooks::{Event, Hooks, JobInfo, NoHooks};
pub use policy::{Decision, Failure, History, RetryPolicy, decide};
pub use record::ImageRecord;
pub use runner::{
    AttemptEnd, Halt, Job, JobError, JobErrorKind, JobImage, JobOutput, Runner, RunnerBuilder, RunnerStatus,
};
pub use store::journal::JournalStore;
pub use store::{MemoryStore, Store, StoreError};
pub use task::JobTask;
