//! What a runner tells its caller while jobs run ([`Hooks`]): events for progress
//! displays and logs, and a place to save each image as it arrives.

use crate::record::AttemptRecord;
use crate::task::JobTask;
use runware_ws::client::{ClientError, ImageResult};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use uuid::Uuid;

/// The job an event is about.
#[derive(Clone, Copy, Debug)]
pub struct JobInfo<'a> {
    /// The job's key.
    pub key: &'a str,
    /// Its number for people (a batch's line number; 0 when the caller gave none).
    pub line: usize,
    /// Its task.
    pub task: &'a JobTask,
}

/// Something that happened to a job.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// An attempt is being sent (`fresh`: for the first time).
    Sending {
        /// The attempt.
        attempt: &'a AttemptRecord,
        /// Sent for the first time (not a recovery or a resend).
        fresh: bool,
    },
    /// An attempt ended (whatever its outcome).
    AttemptEnded,
    /// An image arrived (and was recorded), billed `cost` when the server said.
    Image {
        /// Its reported cost, USD.
        cost: Option<f64>,
    },
    /// The server failed the attempt; a new one follows under a new taskUUID.
    Retrying {
        /// The server's code.
        code: &'a str,
        /// The next attempt's number.
        next: u32,
        /// The results it asks for.
        missing: u32,
    },
    /// Rate-limited: the attempt is sent once more under its own taskUUID.
    ResendingSame {
        /// The taskUUID.
        task_uuid: Uuid,
    },
    /// The outcome is unknown: the attempt is recovered under its taskUUID.
    Recovering {
        /// The taskUUID.
        task_uuid: Uuid,
        /// Why the outcome is unknown.
        error: &'a ClientError,
    },
    /// The outcome is still unknown after the recoveries a run allows.
    StillUnknown {
        /// The taskUUID.
        task_uuid: Uuid,
        /// The last error.
        error: &'a ClientError,
    },
    /// An open attempt sent longer ago than the server's retention was looked up.
    Stale {
        /// The taskUUID.
        task_uuid: Uuid,
        /// How long ago it was first sent.
        age: Duration,
        /// What came of it.
        verdict: StaleVerdict<'a>,
    },
    /// The job failed (and the failure was recorded).
    Failed {
        /// The code.
        code: &'a str,
        /// The message.
        message: &'a str,
        /// The parameter at fault.
        parameter: Option<&'a str>,
    },
    /// The shared in-flight cap changed (a rate limit cut it, a success grew it).
    Cap {
        /// The cap now.
        cap: usize,
        /// Its maximum.
        max: usize,
    },
}

/// What a stale attempt's lookup found.
#[derive(Debug)]
pub enum StaleVerdict<'a> {
    /// The server still knows it: resent under its taskUUID.
    Known,
    /// Forgotten; the runner may resubmit stale attempts: a new attempt follows.
    Resubmitting,
    /// Forgotten: left pending (it may have run).
    LeftPending,
    /// The server could not be asked.
    LookupFailed(&'a ClientError),
}

/// A future returned by [`Hooks::save`].
pub type SaveFuture<'a> = Pin<Box<dyn Future<Output = Result<Option<String>, String>> + Send + 'a>>;

/// What a runner calls while jobs run. Every method has a default that does
/// nothing; the calls are made from the job's own task and must not block.
pub trait Hooks: Send + Sync + 'static {
    /// Something happened to `job`.
    fn event(&self, job: &JobInfo<'_>, event: Event<'_>) {
        let _ = (job, event);
    }

    /// True when [`Hooks::save`] wants `image` (checked first, so that a runner
    /// whose hooks save nothing makes no future per image).
    fn saves(&self, image: &ImageResult) -> bool {
        let _ = image;
        false
    }

    /// Saves `image` of `attempt`; the path it was saved at (recorded with the
    /// image), or why it could not be (the job then fails with `saveFailed` once
    /// its results are in: the image is paid for and recorded with its URL).
    fn save<'a>(&'a self, job: &'a JobInfo<'a>, attempt: &'a AttemptRecord, image: &'a ImageResult) -> SaveFuture<'a> {
        let _ = (job, attempt, image);
        Box::pin(async { Ok(None) })
    }
}

/// Hooks that do nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {}
