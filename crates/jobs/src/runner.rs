//! The job runner: runs jobs over one [`Client`], recording through a [`Store`],
//! deciding after each attempt with [`policy::decide`](crate::policy::decide).
//!
//! One job's run:
//! 1. What the store knows of the job: a job already over returns its recorded
//!    outcome and sends nothing; an open attempt (sent, outcome unknown) is sent
//!    again under its own taskUUID (an open attempt older than the server's
//!    retention is looked up first).
//! 2. Each attempt: its task (the missing results, the seed moved past those
//!    received) → references uploaded once → a place under the shared in-flight
//!    cap → the spend cap's reservation → the attempt recorded (durable) → sent.
//! 3. Each image is saved (by the hooks, if they want it) and recorded as it
//!    arrives; an image received before is not counted again.
//! 4. The attempt's end goes to [`decide`], and the runner does what it says.
//!
//! A runner **halts** ([`Halt`]) on an account failure, the spend cap, a store
//! that cannot be written, an outage longer than `give_up_after`, or
//! [`Runner::halt`]: jobs waiting to send end at once, as *pending* (recorded
//! open, resumed by a later run); attempts already sent finish.
//!
//! Two runs of one key at once (a request retried by its client) wait for each
//! other: the second returns what the first recorded.
//!
//! Cancel safety: dropping a job's future leaves the store consistent (an open
//! attempt is recovered under its taskUUID by the next run of the job).

use crate::hooks::{Event, Hooks, JobInfo, NoHooks, StaleVerdict};
use crate::identity::JobKey;
use crate::policy::{Decision, Failure, History, RetryPolicy, code_and_message, decide};
use crate::record::{
    AttemptFailed, AttemptRecord, Entry, ImageEntry, ImageRecord, JobState, Record, UploadRecord, now_ms,
};
use crate::references::References;
use crate::spend::{Budget, Refusal};
use crate::store::{MemoryStore, Store, StoreError};
use crate::sync::lock;
use crate::task::JobTask;
use crate::throttle::Throttle;
use futures::StreamExt;
use runware_ws::client::{Client, ClientError, ConnectionState, ImageOutput, ImageResult, Lookup, TaskStream};
use runware_ws::protocol::ResultItem;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use uuid::Uuid;

/// How long the server is trusted to remember a taskUUID: the protocol's
/// `getResponse` retention (at least one hour).
pub const TASK_RETENTION: Duration = Duration::from_secs(3600);
/// How long a lookup of a stale attempt waits for the server's answer.
const STALE_LOOKUP_WAIT: Duration = Duration::from_secs(10);
/// The `attemptFailed` code of a stale attempt the server no longer knew.
pub const STALE_CODE: &str = "staleTaskUUID";
/// The longest wait before an attempt is resent while the server is unreachable.
const OUTAGE_POKE: Duration = Duration::from_secs(5);

/// A job: a stable key and a task. Attempt *n* runs under
/// the store's [`attempt_uuid`](Store::attempt_uuid)`(key, n)`, so a restarted runner sends an
/// open attempt again under the same taskUUID.
#[derive(Clone, Debug)]
pub struct Job {
    key: JobKey,
    task: JobTask,
    line: usize,
    first_task_uuid: Option<Uuid>,
    deadline: Option<Duration>,
}

impl Job {
    /// A job named `key` (a string the caller chooses: an order id, a request's
    /// idempotency key, …) running `task`.
    pub fn new(key: impl Into<String>, task: impl Into<JobTask>) -> Job {
        Job { key: key.into(), task: task.into(), line: 0, first_task_uuid: None, deadline: None }
    }

    /// A job named by a hash of its task's content: the same edit twice is one job.
    pub fn content_keyed(task: impl Into<JobTask>) -> Job {
        let task = task.into();
        let mut json = task.to_json();
        if let Value::Object(o) = &mut json {
            o.remove("taskUUID");
        }
        let key = format!("c:{}", crate::identity::content_hash(&json).simple());
        Job::new(key, task)
    }

    /// A number for people (a batch's line number), carried in the records.
    pub fn line(mut self, line: usize) -> Job {
        self.line = line;
        self
    }

    /// The taskUUID of the first attempt, instead of the derived one.
    pub fn first_task_uuid(mut self, task_uuid: Uuid) -> Job {
        self.first_task_uuid = Some(task_uuid);
        self
    }

    /// Bounds the job's run: past `limit` it ends pending ([`JobErrorKind::Deadline`]),
    /// its open attempt recorded for a later run.
    pub fn deadline(mut self, limit: Duration) -> Job {
        self.deadline = Some(limit);
        self
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The task.
    pub fn task(&self) -> &JobTask {
        &self.task
    }
}

/// An image of a job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobImage {
    /// What is recorded of it (imageUUID, URL, where it was saved, seed, cost, NSFW flag).
    pub record: ImageRecord,
    /// Its output as received (URL, base64 or data URI), when it arrived in this
    /// run and the runner keeps outputs; `None` for an image recorded by an earlier run.
    pub output: Option<ImageOutput>,
}

/// A job that ended with every result.
#[derive(Clone, Debug)]
pub struct JobOutput {
    /// The job's key.
    pub key: JobKey,
    /// Every image, over every attempt and run, each once.
    pub images: Vec<JobImage>,
    /// Result items that are not images, as received in this run.
    pub results: Vec<Value>,
    /// Attempts made, over every run.
    pub attempts: u32,
    /// The last attempt's taskUUID.
    pub task_uuid: Uuid,
    /// True when an earlier run had finished it (nothing was sent).
    pub earlier: bool,
}

/// Why a runner stopped taking work.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Halt {
    /// [`Runner::halt`] was called (a shutdown).
    #[error("the runner was stopped")]
    Stopped,
    /// The account must be fixed (key refused, no credits): nothing can succeed.
    #[error("the account cannot run tasks: {0}")]
    Account(String),
    /// The key was refused.
    #[error("the API key was refused: {0}")]
    Auth(String),
    /// An attempt's estimate would pass the spend cap.
    #[error("the spend cap would be passed by job {key}: {refusal}")]
    Budget {
        /// The job refused.
        key: JobKey,
        /// Its number for people.
        line: usize,
        /// Why.
        refusal: Refusal,
        /// The job's model.
        model: Option<String>,
    },
    /// The store cannot be written.
    #[error("the job store failed: {0}")]
    Store(StoreError),
    /// The server was unreachable for longer than the runner's give-up bound.
    #[error("the server has been unreachable for longer than {after:?} ({last})")]
    GaveUp {
        /// The bound.
        after: Duration,
        /// The connection's last state.
        last: String,
    },
    /// The client closed for good (closed by its owner, or a configuration error).
    #[error("the client is closed: {0}")]
    Closed(String),
}

/// Why a job did not end with every result.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum JobErrorKind {
    /// The job failed, and that is recorded. `is_final`: running it again as it is
    /// cannot help (bad input, refused content); otherwise its retries were used
    /// up and a later run tries again under a new taskUUID.
    #[error("{code}: {message}")]
    Failed {
        /// The server's code (or ours: `invalidParameter`, `saveFailed`, …).
        code: String,
        /// The message.
        message: String,
        /// The parameter at fault.
        parameter: Option<String>,
        /// Running it again as it is cannot help.
        is_final: bool,
    },
    /// The runner halted before the job ended: the job is pending in the store
    /// (its open attempt is recovered under its taskUUID by a later run).
    #[error("not finished: {0}")]
    Halted(Halt),
    /// The job's own deadline passed: pending in the store, like a halt.
    #[error("not finished within its deadline of {0:?}")]
    Deadline(Duration),
    /// The outcome of the job's attempt is unknown and stays so for this run
    /// (the server could not tell, or the recoveries a run allows are used up):
    /// pending in the store; a later run recovers it under the same taskUUID.
    #[error("the outcome of taskUUID {task_uuid} is unknown: {message}")]
    Unknown {
        /// The open attempt's taskUUID.
        task_uuid: Uuid,
        /// What is known.
        message: String,
    },
}

/// A job that did not end with every result: why, and the images it received
/// (paid for, recorded) all the same.
#[derive(Clone, Debug, thiserror::Error)]
#[error("job {key}: {kind}")]
pub struct JobError {
    /// The job's key.
    pub key: JobKey,
    /// Why (boxed: the error travels in every job's `Result`).
    pub kind: Box<JobErrorKind>,
    /// Every image received, over every attempt and run.
    pub images: Vec<JobImage>,
    /// Attempts made.
    pub attempts: u32,
}

impl JobError {
    /// True when the job is pending (not failed): a later run may finish it
    /// without sending anything twice.
    pub fn is_pending(&self) -> bool {
        !matches!(*self.kind, JobErrorKind::Failed { .. })
    }
}

/// Builds a [`Runner`]. Defaults: a [`MemoryStore`], [`RetryPolicy::default`],
/// an in-flight cap of the client's `max_in_flight`, no spend cap, inline
/// references uploaded once, outages waited out however long, outputs kept.
pub struct RunnerBuilder {
    client: Client,
    store: Option<Arc<dyn Store>>,
    hooks: Arc<dyn Hooks>,
    policy: RetryPolicy,
    max_in_flight: Option<usize>,
    max_cost: Option<f64>,
    references: bool,
    give_up_after: Option<Duration>,
    resubmit_stale: bool,
    retention: Duration,
    keep_outputs: bool,
}

impl RunnerBuilder {
    /// Where jobs are recorded. Default: a new [`MemoryStore`].
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The retry policy. Default [`RetryPolicy::default`].
    pub fn policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Attempts in flight at once, over every job (the cap rate limits halve and
    /// successes grow back). Default: the client's `max_in_flight`.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = Some(n.max(1));
        self
    }

    /// Refuses any attempt whose estimate would take the spend (billed, earlier
    /// runs included, plus every attempt in flight) past `usd`; the runner halts.
    pub fn max_cost(mut self, usd: f64) -> Self {
        self.max_cost = Some(usd);
        self
    }

    /// Whether inline references (data URIs, base64) are uploaded once and sent
    /// by imageUUID. Default true.
    pub fn upload_references(mut self, yes: bool) -> Self {
        self.references = yes;
        self
    }

    /// Halts the runner when the server has been unreachable for longer than
    /// `limit`. Default: never (outages are waited out).
    pub fn give_up_after(mut self, limit: Duration) -> Self {
        self.give_up_after = Some(limit);
        self
    }

    /// Whether an open attempt older than the server's retention that the server
    /// no longer knows is run again under a new taskUUID (it may have run: this
    /// may bill it twice). Default false: such a job is left pending.
    pub fn resubmit_stale(mut self, yes: bool) -> Self {
        self.resubmit_stale = yes;
        self
    }

    /// How long the server is trusted to remember a taskUUID. Default [`TASK_RETENTION`].
    pub fn retention(mut self, d: Duration) -> Self {
        self.retention = d;
        self
    }

    /// Whether [`JobImage::output`] keeps each image's output (base64 data can be
    /// large). Default true.
    pub fn keep_outputs(mut self, yes: bool) -> Self {
        self.keep_outputs = yes;
        self
    }

    /// Hooks called as jobs run. Default: none.
    pub fn hooks(mut self, hooks: Arc<dyn Hooks>) -> Self {
        self.hooks = hooks;
        self
    }

    /// The runner. Call from within a Tokio runtime (it watches the connection).
    pub fn build(self) -> Runner {
        let max = self.max_in_flight.unwrap_or_else(|| self.client_max());
        let store = self.store.unwrap_or_else(|| Arc::new(MemoryStore::new()));
        let references = self.references.then(|| References::new(self.client.clone(), store.uploads()));
        let (halt, _) = watch::channel(None);
        let inner = Arc::new(Inner {
            throttle: Throttle::new(max),
            budget: Budget::new(self.max_cost, store.billed()),
            client: self.client,
            store,
            hooks: self.hooks,
            policy: self.policy,
            references,
            halt,
            resubmit_stale: self.resubmit_stale,
            retention: self.retention,
            keep_outputs: self.keep_outputs,
            outage: Mutex::new(None),
            counts: Counts::default(),
            running: Mutex::default(),
            released: Notify::new(),
            key_hasher: std::hash::RandomState::new(),
        });
        tokio::spawn(watch_outages(Arc::downgrade(&inner), self.give_up_after));
        Runner { inner }
    }

    fn client_max(&self) -> usize {
        self.client.config().max_in_flight
    }
}

/// Counts a caller (or a dashboard) can read.
#[derive(Debug, Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    pending: AtomicU64,
    retries: AtomicU64,
    recoveries: AtomicU64,
    images: AtomicU64,
}

/// What a runner is doing, for a caller or a dashboard ([`Runner::status`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RunnerStatus {
    /// The in-flight cap now (rate limits halve it, successes grow it back).
    pub cap: usize,
    /// The cap's maximum.
    pub max: usize,
    /// USD billed (earlier runs of the store included).
    pub billed_usd: f64,
    /// USD reserved by attempts in flight.
    pub in_flight_usd: f64,
    /// Jobs that ended with every result (this runner).
    pub ok: u64,
    /// Jobs that failed.
    pub failed: u64,
    /// Jobs that ended pending (halt, deadline, unknown outcome).
    pub pending: u64,
    /// New attempts after server-reported failures.
    pub retries: u64,
    /// Attempts recovered under their taskUUID after an unknown outcome.
    pub recoveries: u64,
    /// Images received.
    pub images: u64,
    /// Since when the server has been unreachable, if it is.
    pub outage_since: Option<std::time::SystemTime>,
    /// Why the runner halted, if it did.
    pub halted: Option<Halt>,
}

struct Inner {
    client: Client,
    store: Arc<dyn Store>,
    hooks: Arc<dyn Hooks>,
    policy: RetryPolicy,
    throttle: Throttle,
    budget: Budget,
    references: Option<References>,
    halt: watch::Sender<Option<Halt>>,
    resubmit_stale: bool,
    retention: Duration,
    keep_outputs: bool,
    outage: Mutex<Option<std::time::SystemTime>>,
    counts: Counts,
    /// The jobs running now (a hash of each key), with how many runs of the same
    /// key wait for it.
    running: Mutex<HashMap<u64, u32>>,
    /// A run ended that another run of its key waited for.
    released: Notify,
    key_hasher: std::hash::RandomState,
}

/// Runs jobs with the project's guarantees: a task is never run twice on the
/// server, nothing paid for is lost, a failure the server reported is retried
/// under a new taskUUID and nothing else is. Cheap to clone (shared).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use runware_jobs::{Job, Runner};
/// use runware_ws::{Client, Kontext, KontextSize};
///
/// let client = Client::builder().api_key("my-key").connect().await?;
/// let runner = Runner::builder(client).build();
/// let edit = Kontext::builder().prompt("Make it snow").size(KontextSize::R1x1).build()?;
/// let done = runner.run(Job::new("order-1234", edit)).await?;
/// for image in &done.images {
///     println!("{:?}", image.record.image_url);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("namespace", &self.inner.store.namespace()).finish()
    }
}

impl Runner {
    /// A builder over `client`. For outages to be waited out rather than fail
    /// every waiting task, build the client with `ReconnectPolicy { max_attempts:
    /// None, .. }` (the runner recovers either way: it resends under the same
    /// taskUUIDs once the connection is back).
    pub fn builder(client: Client) -> RunnerBuilder {
        RunnerBuilder {
            client,
            store: None,
            hooks: Arc::new(NoHooks),
            policy: RetryPolicy::default(),
            max_in_flight: None,
            max_cost: None,
            references: true,
            give_up_after: None,
            resubmit_stale: false,
            retention: TASK_RETENTION,
            keep_outputs: true,
        }
    }

    /// The client the runner sends through.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The references the runner uploads once (none when turned off).
    pub fn references(&self) -> Option<&References> {
        self.inner.references.as_ref()
    }

    /// The taskUUID of attempt `n` of job `key`.
    pub fn attempt_uuid(&self, key: &str, n: u32) -> Uuid {
        self.inner.store.attempt_uuid(key, n)
    }

    /// Halts the runner: jobs waiting to send end pending at once; attempts in
    /// flight finish. The first reason given wins.
    pub fn halt(&self, why: Halt) {
        self.inner.halt_with(why);
    }

    /// Why the runner halted, if it did.
    pub fn halted(&self) -> Option<Halt> {
        self.inner.halt.borrow().clone()
    }

    /// Resolves once the runner halts (with the reason).
    pub async fn wait_halted(&self) -> Halt {
        self.inner.halted().await
    }

    /// What the runner is doing now.
    pub fn status(&self) -> RunnerStatus {
        let i = &self.inner;
        let c = &i.counts;
        RunnerStatus {
            cap: i.throttle.cap(),
            max: i.throttle.max(),
            billed_usd: i.budget.billed_total(),
            in_flight_usd: i.budget.in_flight_total(),
            ok: c.ok.load(Relaxed),
            failed: c.failed.load(Relaxed),
            pending: c.pending.load(Relaxed),
            retries: c.retries.load(Relaxed),
            recoveries: c.recoveries.load(Relaxed),
            images: c.images.load(Relaxed),
            outage_since: *lock(&i.outage),
            halted: self.halted(),
        }
    }

    /// Runs `job` to its end: every image, or an error with the images received.
    /// A job the store already finished returns its recorded outcome, sending
    /// nothing; an unfinished one continues where it stopped.
    pub async fn run(&self, job: Job) -> Result<JobOutput, JobError> {
        // Two runs of one key at once would send one taskUUID twice: the second
        // waits for the first, then finds its outcome in the store.
        let _running = self.inner.exclusive(&job.key).await;
        let ended = match job.deadline {
            None => JobRun::start(&self.inner, job).await,
            Some(limit) => match tokio::time::timeout(limit, JobRun::start(&self.inner, job.clone())).await {
                Ok(ended) => ended,
                Err(_) => {
                    // The attempt in flight (if any) is recorded open: a later run recovers it.
                    let key = job.key;
                    let images = match self.inner.store.load(&key).await {
                        Ok(Some(s)) => s.images.into_iter().map(|record| JobImage { record, output: None }).collect(),
                        _ => Vec::new(),
                    };
                    let attempts = 0;
                    Err(JobError { key, kind: Box::new(JobErrorKind::Deadline(limit)), images, attempts })
                }
            },
        };
        let c = &self.inner.counts;
        match &ended {
            Ok(_) => c.ok.fetch_add(1, Relaxed),
            Err(e) if e.is_pending() => c.pending.fetch_add(1, Relaxed),
            Err(_) => c.failed.fetch_add(1, Relaxed),
        };
        ended
    }
}

/// How one attempt ended, for a caller that keeps its own records
/// ([`Runner::attempt`]).
#[derive(Debug)]
pub struct AttemptEnd {
    /// Every image of the job: those given, then those this attempt brought (each once).
    pub images: Vec<ImageRecord>,
    /// Result items that are not images, as received.
    pub results: Vec<Value>,
    /// `Ok` when every result arrived; else the failure to hand to
    /// [`decide`] (a halt of the runner is an unknown outcome).
    pub outcome: Result<(), Failure>,
    /// The imageUUIDs of the uploads the attempt referenced.
    pub referenced: Vec<Uuid>,
}

impl Runner {
    /// Runs one attempt of `job` — number `number`, under `task_uuid`, for the
    /// results `images` does not have yet (the seed moved past them) — through
    /// the runner's throttle, spend cap, references and hooks, and records
    /// nothing: for a caller that keeps the job's records itself and decides with
    /// [`decide`] (a queue that leases jobs to workers).
    pub async fn attempt(&self, job: &Job, number: u32, task_uuid: Uuid, images: Vec<ImageRecord>) -> AttemptEnd {
        let wanted = job.task.wanted();
        let mut run = JobRun {
            inner: &self.inner,
            job: job.clone(),
            outputs: vec![None; images.len()],
            images,
            others: Vec::new(),
            save_error: None,
            started: None,
            referenced: Vec::new(),
            history: History { wanted, ..History::default() },
            recorded: number,
            keeps_records: false,
        };
        let mut attempt = run.next_attempt(number, wanted);
        attempt.task_uuid = task_uuid;
        let outcome = match run.attempt(&attempt, false).await {
            Ended::Complete => Ok(()),
            Ended::Failed(e) => Err(Failure::of(&e)),
            Ended::Halted(h) => Err(Failure::Unknown { message: h.to_string() }),
        };
        if let Some(e) = &run.save_error {
            tracing::warn!(error = %e, task_uuid = %task_uuid, "an image could not be saved; recorded with its URL");
        }
        AttemptEnd { images: run.images, results: run.others, outcome, referenced: run.referenced }
    }
}

/// A job's key held by its run; dropping it lets the next run of the key go.
struct Running<'a> {
    inner: &'a Inner,
    key: u64,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let waited = lock(&self.inner.running).remove(&self.key).unwrap_or(0);
        if waited > 0 {
            self.inner.released.notify_waiters();
        }
    }
}

impl Inner {
    /// Waits until no other run of `key` is under way, and holds the key. (Keys
    /// are told apart by a 64-bit hash: two keys of one hash would only make one
    /// wait for the other.)
    async fn exclusive(&self, key: &str) -> Running<'_> {
        use std::hash::BuildHasher;
        let hash = self.key_hasher.hash_one(key);
        let take = |count_waiter: bool| {
            let mut running = lock(&self.running);
            match running.entry(hash) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(0);
                    true
                }
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    if count_waiter {
                        *o.get_mut() += 1;
                    }
                    false
                }
            }
        };
        loop {
            // The common case: nobody runs this key.
            if take(false) {
                return Running { inner: self, key: hash };
            }
            // Registered before the key is looked up again, so a release between
            // the two is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if take(true) {
                return Running { inner: self, key: hash };
            }
            released.await;
        }
    }

    fn halt_with(&self, why: Halt) {
        self.halt.send_if_modified(|h| {
            let first = h.is_none();
            if first {
                tracing::warn!(reason = %why, "job runner halted");
                *h = Some(why);
            }
            first
        });
    }

    fn halted_now(&self) -> Option<Halt> {
        self.halt.borrow().clone()
    }

    async fn halted(&self) -> Halt {
        let mut rx = self.halt.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(h) => h.clone().unwrap_or(Halt::Stopped),
            Err(_) => Halt::Stopped,
        }
    }

    /// Halts for an account failure (`Auth` for a refused key).
    fn halt_for_account(&self, e: &ClientError) {
        let (code, message) = code_and_message(e);
        match e {
            ClientError::Auth(api) => self.halt_with(Halt::Auth(api.to_string())),
            _ => self.halt_with(Halt::Account(format!("{code}: {message}"))),
        }
    }

    /// Waits until the connection is up (or, while the server is unreachable and
    /// the client has given up for now, a little, so that a resend wakes it).
    async fn await_link(&self) -> Result<(), Halt> {
        let connected = tokio::select! {
            c = self.client.wait_connected() => c,
            h = self.halted() => return Err(h),
        };
        match connected {
            Ok(()) => Ok(()),
            Err(ClientError::Unreachable { .. }) => {
                let wait = OUTAGE_POKE.mul_f64(0.2 + 0.8 * fastrand::f64());
                tokio::select! {
                    _ = tokio::time::sleep(wait) => Ok(()),
                    h = self.halted() => Err(h),
                }
            }
            Err(e) if e.is_account_failure() => {
                self.halt_for_account(&e);
                Err(self.halted_now().unwrap_or(Halt::Stopped))
            }
            Err(e) => {
                self.halt_with(Halt::Closed(e.to_string()));
                Err(self.halted_now().unwrap_or(Halt::Stopped))
            }
        }
    }

    async fn record(&self, entry: &Entry) -> Result<(), Halt> {
        match self.store.record(entry).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.halt_with(Halt::Store(e));
                Err(self.halted_now().unwrap_or(Halt::Stopped))
            }
        }
    }

    fn cap_event(&self, info: &JobInfo<'_>) {
        self.hooks.event(info, Event::Cap { cap: self.throttle.cap(), max: self.throttle.max() });
    }
}

/// Follows the connection: records since when it is down, and halts the runner
/// when an outage lasts longer than `give_up_after`.
async fn watch_outages(inner: std::sync::Weak<Inner>, give_up_after: Option<Duration>) {
    let Some(strong) = inner.upgrade() else { return };
    let mut rx = strong.client.state();
    drop(strong);
    let mut since: Option<Instant> = None;
    loop {
        let state = rx.borrow_and_update().clone();
        let Some(me) = inner.upgrade() else { return };
        match &state {
            ConnectionState::Connected { .. } => {
                since = None;
                *lock(&me.outage) = None;
            }
            ConnectionState::Closed => return,
            _ => {
                if since.is_none() {
                    since = Some(Instant::now());
                    *lock(&me.outage) = Some(std::time::SystemTime::now());
                }
            }
        }
        drop(me);
        let deadline = match (since, give_up_after) {
            (Some(s), Some(limit)) => Some(s + limit),
            _ => None,
        };
        let changed = match deadline {
            Some(d) => tokio::select! {
                c = rx.changed() => c,
                _ = tokio::time::sleep_until(d) => {
                    if let Some(me) = inner.upgrade() {
                        me.halt_with(Halt::GaveUp { after: give_up_after.unwrap_or_default(), last: state.to_string() });
                    }
                    return;
                }
            },
            None => rx.changed().await,
        };
        if changed.is_err() {
            return;
        }
    }
}

/// How one attempt ended.
enum Ended {
    /// Every result arrived.
    Complete,
    /// It failed (before or after it was sent).
    Failed(ClientError),
    /// The runner halted while the attempt waited to be sent (nothing sent).
    Halted(Halt),
}

/// One job's run.
struct JobRun<'a> {
    inner: &'a Inner,
    job: Job,
    /// Every image of the job (earlier runs' included), each once.
    images: Vec<ImageRecord>,
    /// The output of each of `images`, when received in this run and kept.
    outputs: Vec<Option<ImageOutput>>,
    /// Non-image results of this run.
    others: Vec<Value>,
    /// Why an image could not be saved, if one could not.
    save_error: Option<String>,
    started: Option<Instant>,
    /// The uploads the current attempt references.
    referenced: Vec<Uuid>,
    history: History,
    /// The highest attempt number the store has a record of (recorded before it is sent).
    recorded: u32,
    /// False for [`Runner::attempt`]: the caller keeps the records.
    keeps_records: bool,
}

impl<'a> JobRun<'a> {
    async fn start(inner: &'a Inner, job: Job) -> Result<JobOutput, JobError> {
        let prior = match inner.store.load(&job.key).await {
            Ok(p) => p.unwrap_or_default(),
            Err(e) => {
                inner.halt_with(Halt::Store(e));
                let halt = inner.halted_now().unwrap_or(Halt::Stopped);
                return Err(JobError {
                    key: job.key,
                    kind: Box::new(JobErrorKind::Halted(halt)),
                    images: Vec::new(),
                    attempts: 0,
                });
            }
        };
        let images = prior.images.clone();
        let wanted = job.task.wanted();
        let run = JobRun {
            inner,
            job,
            outputs: vec![None; images.len()],
            images,
            others: Vec::new(),
            save_error: None,
            started: None,
            referenced: Vec::new(),
            history: History { wanted, ..History::default() },
            recorded: prior.attempt.as_ref().map_or(0, |a| a.attempt),
            keeps_records: true,
        };
        if let Some(result) = prior.result.as_ref().filter(|r| r.is_done()) {
            return run.earlier(result);
        }
        run.run(prior).await
    }

    /// The images with their outputs, for the caller.
    fn job_images(&mut self) -> Vec<JobImage> {
        let outputs = std::mem::take(&mut self.outputs);
        std::mem::take(&mut self.images)
            .into_iter()
            .zip(outputs.into_iter().chain(std::iter::repeat_with(|| None)))
            .map(|(record, output)| JobImage { record, output })
            .collect()
    }

    fn info(&self) -> JobInfo<'_> {
        JobInfo { key: &self.job.key, line: self.job.line, task: &self.job.task }
    }

    /// The outcome an earlier run recorded.
    fn earlier(mut self, result: &Record) -> Result<JobOutput, JobError> {
        let attempts = result.attempts.unwrap_or(1);
        let images = self.job_images();
        match result.status {
            crate::record::Status::Ok => Ok(JobOutput {
                key: self.job.key,
                images,
                results: result.results.clone(),
                attempts,
                task_uuid: result.task_uuid,
                earlier: true,
            }),
            crate::record::Status::Error => Err(JobError {
                key: self.job.key,
                kind: Box::new(JobErrorKind::Failed {
                    code: result.code.clone().unwrap_or_default(),
                    message: result.message.clone().unwrap_or_default(),
                    parameter: result.parameter.clone(),
                    is_final: result.is_final,
                }),
                images,
                attempts,
            }),
        }
    }

    fn pending(mut self, kind: JobErrorKind, attempts: u32) -> Result<JobOutput, JobError> {
        let images = self.job_images();
        Err(JobError { key: self.job.key, kind: Box::new(kind), images, attempts })
    }

    async fn run(mut self, prior: JobState) -> Result<JobOutput, JobError> {
        let inner = self.inner;
        let wanted = self.history.wanted;
        let mut open: Option<AttemptRecord> = prior.open_attempt().cloned();
        let mut last = prior.attempt.as_ref().map_or(0, |a| a.attempt);
        drop(prior);
        if let Some(a) = open.as_ref().filter(|a| is_stale(a, now_ms(), inner.retention)) {
            match self.check_stale(a).await {
                Ok(true) => {}
                Ok(false) => open = None,
                Err(kind) => return self.pending(kind, last),
            }
        }
        loop {
            if let Some(h) = inner.halted_now() {
                return self.pending(JobErrorKind::Halted(h), last);
            }
            let (attempt, fresh) = match open.take() {
                Some(a) => (a, false),
                None => {
                    last += 1;
                    (self.next_attempt(last, wanted), true)
                }
            };
            let ended = self.attempt(&attempt, fresh).await;
            inner.hooks.event(&self.info(), Event::AttemptEnded);
            let error = match ended {
                Ended::Complete => {
                    inner.throttle.succeeded();
                    inner.cap_event(&self.info());
                    return self.finish_ok(&attempt).await;
                }
                Ended::Halted(h) => return self.pending(JobErrorKind::Halted(h), last),
                Ended::Failed(e) => e,
            };
            let failure = Failure::of(&error);
            if let Failure::Reported { rate_limited: true, .. } = failure {
                inner.throttle.rate_limited();
                inner.cap_event(&self.info());
            }
            self.history.have = self.images.len() as u32;
            self.history.uses_uploads = !self.referenced.is_empty();
            let (decision, after) = decide(&inner.policy, &self.history, &failure);
            self.history = after;
            match decision {
                Decision::Done => return self.finish_ok(&attempt).await,
                Decision::ResendSame { wait } => {
                    tracing::info!(key = %self.job.key, task_uuid = %attempt.task_uuid, "rate limited: sending again under the same taskUUID");
                    inner.hooks.event(&self.info(), Event::ResendingSame { task_uuid: attempt.task_uuid });
                    if let Err(h) = self.sleep(wait).await {
                        return self.pending(JobErrorKind::Halted(h), last);
                    }
                    open = Some(attempt);
                }
                Decision::NextAttempt { wait, reupload } => {
                    let (code, message) = (failure.code().to_string(), failure.message().to_string());
                    if let Err(h) = self.record_failed(&attempt, &code, &message).await {
                        return self.pending(JobErrorKind::Halted(h), last);
                    }
                    if reupload {
                        if let Some(refs) = &inner.references {
                            for u in self.referenced.drain(..) {
                                refs.forget(u);
                            }
                        }
                    } else {
                        inner.counts.retries.fetch_add(1, Relaxed);
                        let missing = wanted.saturating_sub(self.images.len() as u32);
                        inner
                            .hooks
                            .event(&self.info(), Event::Retrying { code: &code, next: attempt.attempt + 1, missing });
                    }
                    if let Err(h) = self.sleep(wait).await {
                        return self.pending(JobErrorKind::Halted(h), last);
                    }
                }
                Decision::Recover => {
                    inner.counts.recoveries.fetch_add(1, Relaxed);
                    tracing::info!(key = %self.job.key, task_uuid = %attempt.task_uuid, %error, "outcome unknown: recovering under the same taskUUID");
                    inner.hooks.event(&self.info(), Event::Recovering { task_uuid: attempt.task_uuid, error: &error });
                    if let Err(h) = inner.await_link().await {
                        return self.pending(JobErrorKind::Halted(h), last);
                    }
                    open = Some(attempt);
                }
                Decision::LeavePending => {
                    inner
                        .hooks
                        .event(&self.info(), Event::StillUnknown { task_uuid: attempt.task_uuid, error: &error });
                    let kind = JobErrorKind::Unknown { task_uuid: attempt.task_uuid, message: error.to_string() };
                    return self.pending(kind, last);
                }
                Decision::StopForAccount { record_failure } => {
                    // A task the server failed for the account is done with: the next
                    // run (after the account is fixed) sends a new attempt.
                    if record_failure {
                        let (code, message) = code_and_message(&error);
                        if let Err(h) = self.record_failed(&attempt, &code, &message).await {
                            return self.pending(JobErrorKind::Halted(h), last);
                        }
                    }
                    inner.halt_for_account(&error);
                    let halt = inner.halted_now().unwrap_or(Halt::Stopped);
                    return self.pending(JobErrorKind::Halted(halt), last);
                }
                Decision::Fail { is_final } => {
                    let (code, mut message, parameter) = match &failure {
                        Failure::Final { code, message, parameter } => {
                            (code.clone(), message.clone(), parameter.clone())
                        }
                        other => (other.code().to_string(), other.message().to_string(), None),
                    };
                    if !is_final {
                        // The server reported it: the attempt is closed (a later run
                        // starts a new one).
                        if let Failure::Reported { .. } = &failure
                            && let Err(h) = self.record_failed(&attempt, &code, &message).await
                        {
                            return self.pending(JobErrorKind::Halted(h), last);
                        }
                        let tries = self.history.failures + self.history.rate_limited;
                        message = format!("{message} (after {tries} attempts in this run)");
                    }
                    return self.fail(&attempt, code, message, parameter, is_final).await;
                }
            }
        }
    }

    /// Waits retry wait number `n` (none for 0), or until the runner halts.
    async fn sleep(&self, n: u32) -> Result<(), Halt> {
        if n == 0 {
            return Ok(());
        }
        let wait = self.inner.policy.wait(n, fastrand::f64());
        tokio::select! {
            _ = tokio::time::sleep(wait) => Ok(()),
            h = self.inner.halted() => Err(h),
        }
    }

    /// Prepares, records and sends one attempt, and collects its results.
    async fn attempt(&mut self, attempt: &AttemptRecord, fresh: bool) -> Ended {
        let inner = self.inner;
        let task = match self.job.task.for_attempt(attempt.task_uuid, attempt.number_results, attempt.seed) {
            Ok(t) => t,
            Err(e) => return Ended::Failed(ClientError::Validation(e)),
        };
        let task = match &inner.references {
            None => task,
            Some(refs) => match refs.prepare(task).await {
                Ok(p) => {
                    for u in p.uploads.iter().filter(|_| self.keeps_records) {
                        let entry =
                            Entry::Upload(UploadRecord { key: u.key, image_uuid: u.image_uuid, at_ms: now_ms() });
                        if let Err(h) = inner.record(&entry).await {
                            return Ended::Halted(h);
                        }
                    }
                    self.referenced = p.referenced;
                    p.task
                }
                // Nothing of this attempt was sent: a refusal for good fails the job,
                // an account failure halts the runner, anything else leaves it pending.
                Err(e) => {
                    return match e.retry_advice() {
                        runware_ws::protocol::RetryAdvice::Never => {
                            let (code, message) = code_and_message(&e);
                            let api = runware_ws::protocol::ApiError::new(
                                code,
                                format!("uploading a reference image: {message}"),
                            )
                            .with_parameter("inputs.referenceImages");
                            Ended::Failed(ClientError::Api(Box::new(api)))
                        }
                        runware_ws::protocol::RetryAdvice::FixAccount => {
                            inner.halt_for_account(&e);
                            Ended::Halted(inner.halted_now().unwrap_or(Halt::Stopped))
                        }
                        _ => Ended::Failed(e),
                    };
                }
            },
        };
        let slot = tokio::select! {
            slot = inner.throttle.acquire() => slot,
            h = inner.halted() => return Ended::Halted(h),
        };
        let reservation = match inner.budget.reserve(self.job.task.estimate(attempt.number_results)) {
            Ok(r) => r,
            Err(refusal) => {
                drop(slot);
                let model = self.job.task.model().map(str::to_string);
                inner.halt_with(Halt::Budget { key: self.job.key.clone(), line: self.job.line, refusal, model });
                return Ended::Halted(inner.halted_now().unwrap_or(Halt::Stopped));
            }
        };
        if self.keeps_records && attempt.attempt > self.recorded {
            if let Err(h) = inner.record(&Entry::Attempt(attempt.clone())).await {
                return Ended::Halted(h);
            }
            self.recorded = attempt.attempt;
        }
        self.started.get_or_insert_with(Instant::now);
        tracing::debug!(key = %self.job.key, task_uuid = %attempt.task_uuid, attempt = attempt.attempt, fresh, "sending");
        inner.hooks.event(&self.info(), Event::Sending { attempt, fresh });
        let ended = match inner.client.submit(task).await {
            Ok(stream) => self.collect(attempt, stream).await,
            Err(e) => Err(Collected::Client(e)),
        };
        drop(reservation);
        drop(slot);
        match ended {
            Ok(()) => Ended::Complete,
            Err(Collected::Client(e)) => Ended::Failed(e),
            Err(Collected::Halted(h)) => Ended::Halted(h),
        }
    }

    /// Takes an attempt's results as they arrive: every new image saved (by the
    /// hooks) and recorded at once.
    async fn collect(&mut self, attempt: &AttemptRecord, mut stream: TaskStream) -> Result<(), Collected> {
        let inner = self.inner;
        while let Some(item) = stream.next().await {
            let item = item.map_err(Collected::Client)?;
            let image = match as_image(item) {
                Ok(image) => image,
                Err(other) => {
                    self.others.push(other);
                    continue;
                }
            };
            if self.images.iter().any(|have| have.image_uuid == image.image_uuid.as_str()) {
                continue;
            }
            let path = if inner.hooks.saves(&image) {
                let info = self.info();
                match inner.hooks.save(&info, attempt, &image).await {
                    Ok(path) => path,
                    Err(e) => {
                        // Recorded without a file: the image is paid for.
                        self.save_error.get_or_insert(e);
                        None
                    }
                }
            } else {
                None
            };
            let record = image_record(&image, path);
            inner.counts.images.fetch_add(1, Relaxed);
            inner.hooks.event(&self.info(), Event::Image { cost: record.cost });
            inner.budget.billed(record.cost.or_else(|| self.job.task.estimate(1)).unwrap_or(0.0));
            let entry = Entry::Image(ImageEntry {
                key: self.job.key.clone(),
                line: self.job.line,
                attempt: attempt.attempt,
                task_uuid: attempt.task_uuid,
                image: record,
            });
            let recorded = if self.keeps_records { inner.record(&entry).await } else { Ok(()) };
            if let Entry::Image(e) = entry {
                let output = inner.keep_outputs.then_some(image.output);
                self.images.push(e.image);
                self.outputs.push(output);
            }
            recorded.map_err(Collected::Halted)?;
        }
        Ok(())
    }

    /// Attempt `n`: under a new taskUUID (the job's own for the first), for the
    /// results still missing, with the seed moved past those received.
    fn next_attempt(&self, n: u32, wanted: u32) -> AttemptRecord {
        let have = self.images.len() as u32;
        let task_uuid = match (n, self.job.first_task_uuid) {
            (1, Some(own)) => own,
            _ => self.inner.store.attempt_uuid(&self.job.key, n),
        };
        let seed = self.job.task.seed().map(|s| s.checked_add(u64::from(have)).unwrap_or(s));
        AttemptRecord {
            key: self.job.key.clone(),
            line: self.job.line,
            attempt: n,
            task_uuid,
            number_results: wanted.saturating_sub(have).max(1),
            seed,
            sent_at_ms: now_ms(),
        }
    }

    /// An open attempt first sent longer ago than the server is trusted to
    /// remember a taskUUID: asks the server before re-sending it. `Ok(true)`:
    /// resend it; `Ok(false)`: a new attempt (forgotten, and stale attempts are
    /// resubmitted); `Err`: the job stays pending.
    async fn check_stale(&self, attempt: &AttemptRecord) -> Result<bool, JobErrorKind> {
        let inner = self.inner;
        let age = Duration::from_millis(now_ms().saturating_sub(attempt.sent_at_ms));
        let looked_up = tokio::select! {
            l = inner.client.lookup(attempt.task_uuid, Some(attempt.number_results), STALE_LOOKUP_WAIT) => l,
            h = inner.halted() => return Err(JobErrorKind::Halted(h)),
        };
        let task_uuid = attempt.task_uuid;
        let event = |verdict| Event::Stale { task_uuid, age, verdict };
        let unknown = |message: String| JobErrorKind::Unknown { task_uuid, message };
        match looked_up {
            Ok(Lookup::Known { .. }) => {
                inner.hooks.event(&self.info(), event(StaleVerdict::Known));
                Ok(true)
            }
            Ok(_) if inner.resubmit_stale => {
                inner.hooks.event(&self.info(), event(StaleVerdict::Resubmitting));
                let message = format!("the server no longer knew this taskUUID {age:?} after it was sent");
                match self.record_failed(attempt, STALE_CODE, &message).await {
                    Ok(()) => Ok(false),
                    Err(h) => Err(JobErrorKind::Halted(h)),
                }
            }
            Ok(_) => {
                inner.hooks.event(&self.info(), event(StaleVerdict::LeftPending));
                Err(unknown(format!("sent {age:?} ago and no longer known to the server (it may have run)")))
            }
            Err(e) => {
                if e.is_account_failure() {
                    inner.halt_for_account(&e);
                }
                inner.hooks.event(&self.info(), event(StaleVerdict::LookupFailed(&e)));
                Err(unknown(format!("the server could not be asked: {e}")))
            }
        }
    }

    /// Records that the server failed `attempt`.
    async fn record_failed(&self, attempt: &AttemptRecord, code: &str, message: &str) -> Result<(), Halt> {
        let failed = AttemptFailed {
            key: self.job.key.clone(),
            line: self.job.line,
            attempt: attempt.attempt,
            task_uuid: attempt.task_uuid,
            code: code.to_string(),
            message: message.to_string(),
        };
        self.inner.record(&Entry::AttemptFailed(failed)).await
    }

    async fn finish_ok(mut self, attempt: &AttemptRecord) -> Result<JobOutput, JobError> {
        if let Some(e) = self.save_error.take() {
            let message = format!("the task succeeded but not every image could be saved: {e}");
            return self.fail(attempt, "saveFailed".into(), message, None, false).await;
        }
        // The images go into the record and come back out of it: not copied.
        let entry = Entry::Result(Record {
            images: std::mem::take(&mut self.images),
            results: std::mem::take(&mut self.others),
            attempts: Some(attempt.attempt),
            latency_ms: self.started.map(|s| latency_ms(s.elapsed())),
            ..Record::ok(self.job.key.clone(), self.job.line, attempt.task_uuid)
        });
        let recorded = self.inner.record(&entry).await;
        if let Entry::Result(r) = entry {
            self.images = r.images;
            self.others = r.results;
        }
        if let Err(h) = recorded {
            return self.pending(JobErrorKind::Halted(h), attempt.attempt);
        }
        let images = self.job_images();
        Ok(JobOutput {
            key: self.job.key,
            images,
            results: self.others,
            attempts: attempt.attempt,
            task_uuid: attempt.task_uuid,
            earlier: false,
        })
    }

    async fn fail(
        mut self,
        attempt: &AttemptRecord,
        code: String,
        message: String,
        parameter: Option<String>,
        is_final: bool,
    ) -> Result<JobOutput, JobError> {
        self.inner
            .hooks
            .event(&self.info(), Event::Failed { code: &code, message: &message, parameter: parameter.as_deref() });
        let record = Record {
            images: self.images.clone(),
            results: self.others.clone(),
            attempts: Some(attempt.attempt),
            latency_ms: self.started.map(|s| latency_ms(s.elapsed())),
            ..Record::error(
                self.job.key.clone(),
                self.job.line,
                attempt.task_uuid,
                code.clone(),
                message.clone(),
                parameter.clone(),
                is_final,
            )
        };
        if let Err(h) = self.inner.record(&Entry::Result(record)).await {
            return self.pending(JobErrorKind::Halted(h), attempt.attempt);
        }
        let kind = JobErrorKind::Failed { code, message, parameter, is_final };
        let images = self.job_images();
        Err(JobError { key: self.job.key, kind: Box::new(kind), images, attempts: attempt.attempt })
    }
}

/// Why collecting an attempt's results stopped.
enum Collected {
    Client(ClientError),
    Halted(Halt),
}

/// The item as an image, when it is one (what `ImageResult::try_from` needs is
/// checked first: an item it would refuse is kept as it came).
fn as_image(item: ResultItem) -> Result<ImageResult, Value> {
    if item.output().is_some() && item.task_uuid.is_some() && item.image_uuid.is_some() {
        // Checked above: this does not fail.
        ImageResult::try_from(item).map_err(|e| Value::String(e.to_string()))
    } else {
        Err(serde_json::to_value(&item).unwrap_or(Value::Null))
    }
}

/// The record of an image saved at `path` (if it was).
fn image_record(img: &ImageResult, path: Option<String>) -> ImageRecord {
    ImageRecord {
        image_uuid: img.image_uuid.to_string(),
        image_url: img.item.image_url.as_ref().map(|u| u.to_string()),
        path,
        seed: img.seed,
        cost: img.cost,
        nsfw_content: img.nsfw_content,
    }
}

/// True when `attempt` was first sent longer than `retention` before `now_ms`.
fn is_stale(attempt: &AttemptRecord, now_ms: u64, retention: Duration) -> bool {
    let retention = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
    now_ms.saturating_sub(attempt.sent_at_ms) > retention
}

/// `d` in milliseconds, rounded to the microsecond.
pub fn latency_ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_is_stale_after_the_servers_retention() {
        let attempt = AttemptRecord {
            key: "id:x".into(),
            line: 1,
            attempt: 1,
            task_uuid: Uuid::nil(),
            number_results: 1,
            seed: None,
            sent_at_ms: 1_000_000,
        };
        let hour = 3_600_000;
        assert!(!is_stale(&attempt, 1_000_000 + hour, TASK_RETENTION));
        assert!(is_stale(&attempt, 1_000_000 + hour + 1, TASK_RETENTION));
        assert!(!is_stale(&attempt, 0, TASK_RETENTION), "a clock that went back is not staleness");
    }
}
