//! `runware worker --queue URL`: claims tasks, runs them over one `Client`, ends
//! each lease in the statement that records its outcome.
//!
//! - **Claim**: small groups with `FOR UPDATE SKIP LOCKED`, from the oldest active
//!   batch of this worker's endpoint that is under its in-flight cap, its cost cap
//!   and its rate-limit backoff; the batch row is locked for the claim so the cap
//!   holds fleet-wide (a claim can overshoot it by at most one group when two
//!   claims race). Each claim counts a delivery.
//! - **Heartbeat and sweep**: every third of the lease this worker updates its
//!   `last_seen` and hands back the leases of workers silent for longer than the
//!   lease (a task handed out `max_deliveries` times goes to `dead`).
//! - **One attempt per delivery** through the job runner (`Runner::attempt`: its
//!   hooks save the images); **what next** is `runware_jobs::decide`'s, and this
//!   module only writes its decision to the queue: done → `done` (compare-and-set
//!   on the attempt: the first completion wins, later ones change nothing); a new
//!   attempt → the next taskUUID (`parked` by the queue when the batch's attempts
//!   are used up); resend or recover → back to `queued` under the same taskUUID
//!   (the next delivery recovers it through `conflictTaskUUID` → `getResponse`);
//!   failed for good → `failed`; the account → the batch is `paused`.
//! - **SIGTERM / Ctrl-C**: stop claiming, wait `--grace` for the tasks in flight,
//!   hand the rest back (not counted as deliveries).

use super::FleetError;
use super::db::{Conn, Db, stmt};
use super::queue::worker_sql as sql;
use super::references::Renewed;
use super::states::TaskState;
use crate::args::{ApiArgs, WorkerArgs};
use crate::download::{ImageFiles, Saver};
use crate::embedded::{self, Endpoint};
use crate::error::CliError;
use crate::input;
use crate::output::Output;
use runware_jobs::identity;
use runware_jobs::policy::{Decision, FORGOTTEN_REFERENCE, Failure, History, RetryPolicy, decide};
use runware_jobs::record::ImageRecord;
use runware_jobs::{Job, Runner};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

/// Most tasks one claim takes.
const CLAIM_GROUP: usize = 16;
/// How long an idle worker waits before it looks for work again.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// How long a worker waits for the database to come back before giving up on a
/// statement that records an outcome (the outcome is billed: it is not dropped
/// lightly).
const DB_PATIENCE: Duration = Duration::from_secs(600);
/// The longest wait between two attempts, and the longest fleet-wide backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The error code recorded for an unknown outcome.
const UNKNOWN: &str = "unknownOutcome";

/// One claimed task.
#[derive(Debug)]
struct Claimed {
    batch: Uuid,
    key: String,
    line: i32,
    request: Value,
    wanted: i32,
    attempt: i32,
    task_uuid: Uuid,
    images: Vec<ImageRecord>,
    error: Option<Value>,
    /// The imageUUID sent for each reference the row names (set by `execute`).
    sent_refs: HashMap<Uuid, Uuid>,
}

struct Ctx {
    db: Arc<Db>,
    /// Runs each delivery's attempt (its hooks save the images).
    runner: Runner,
    worker: Uuid,
    endpoint: String,
    /// The retry policy of every delivery (the queue bounds attempts and deliveries).
    policy: RetryPolicy,
    /// The references uploaded again since the batch was submitted.
    renewed: Renewed,
    stopping: AtomicBool,
    stop: Notify,
}

pub async fn run(api: ApiArgs, args: WorkerArgs, out: &Output) -> Result<u8, CliError> {
    let db = Arc::new(Db::open(&args.queue.queue).await?);
    let endpoint_id = embedded::endpoint_id(&api);
    let worker = Uuid::new_v4();
    let host = hostname();
    {
        let c = db.client().await?;
        c.exec(sql::REGISTER, &[&worker, &host, &(std::process::id() as i32), &endpoint_id])
            .await
            .map_err(stmt("register the worker"))?;
    }
    tokio::fs::create_dir_all(&args.out).await.map_err(|source| CliError::Write { path: args.out.clone(), source })?;
    let endpoint = Endpoint::resolve(&api, out).await?;
    let concurrency = args.concurrency as usize;
    let client = match endpoint.connect_batch(concurrency, args.timeout).await {
        Ok(c) => c,
        Err(e) => {
            if let CliError::Auth { .. } = &e {
                pause_endpoint(&db, &endpoint_id, &format!("auth: {e}")).await;
                out.error(&format!(
                    "{e}; this endpoint's active batches are paused until a worker with a working key starts"
                ));
            }
            endpoint.shutdown().await;
            mark_stopped(&db, worker).await;
            return Err(e);
        }
    };
    // A working key resumes what a refused one paused.
    let resumed = resume_after_auth(&db, &endpoint_id).await?;
    if resumed > 0 {
        out.notice(&format!("the key works: {resumed} batch(es) paused for a refused key resumed"));
    }
    let files = ImageFiles { saver: Saver::new(8, !args.no_download)?, dir: args.out.clone() };
    // The queue keeps the records and the fleet-wide caps; references are the
    // queue's too (uploaded at submit, renewed by `renew_references`).
    let runner = Runner::builder(client.clone())
        .hooks(Arc::new(files))
        .max_in_flight(concurrency)
        .upload_references(false)
        .build();
    let renewed = Renewed::load(&db, client.clone()).await?;
    let ctx = Arc::new(Ctx {
        db: db.clone(),
        runner,
        worker,
        endpoint: endpoint_id.clone(),
        policy: RetryPolicy {
            retries: u32::MAX,
            max_rate_limited: u32::MAX,
            max_recoveries: None,
            backoff: args.retry_backoff,
            max_backoff: MAX_BACKOFF,
        },
        renewed,
        stopping: AtomicBool::new(false),
        stop: Notify::new(),
    });
    out.notice(&format!("worker {worker} on {host}: up to {concurrency} task(s) at once from the queue"));

    let heartbeat = tokio::spawn(heartbeat(db.clone(), worker, args.lease));
    let mut listening = crate::signals::Signals::new();
    let signals = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            listening.next().await;
            ctx.stopping.store(true, Relaxed);
            ctx.stop.notify_waiters();
        }
    });

    let slots = Arc::new(Semaphore::new(concurrency));
    let mut running = JoinSet::new();
    let mut done = 0u64;
    while !ctx.stopping.load(Relaxed) {
        while running.try_join_next().is_some() {
            done += 1;
        }
        let free = slots.available_permits().min(CLAIM_GROUP);
        if free == 0 {
            tokio::select! {
                _ = running.join_next() => done += 1,
                _ = ctx.stop.notified() => {}
            }
            continue;
        }
        let claimed = match claim(&ctx, free).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim tasks");
                if e.is_connection() {
                    db.reset();
                }
                Vec::new()
            }
        };
        if claimed.is_empty() {
            if args.exit_when_idle && running.is_empty() && nothing_left(&ctx).await.unwrap_or(false) {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(IDLE_POLL.mul_f64(0.5 + fastrand::f64())) => {}
                _ = running.join_next(), if !running.is_empty() => done += 1,
                _ = ctx.stop.notified() => {}
            }
            continue;
        }
        for task in claimed {
            // A claim takes at most the free slots, so this does not wait; were it to,
            // the claimed task would wait for a slot rather than sit leased unrun.
            let Ok(permit) = slots.clone().acquire_owned().await else { break };
            let ctx = ctx.clone();
            let span =
                tracing::info_span!("task", task_uuid = %task.task_uuid, line = task.line, attempt = task.attempt);
            running.spawn(
                async move {
                    run_task(&ctx, task).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }
    if ctx.stopping.load(Relaxed) {
        out.notice(&format!("stopping: waiting up to {:?} for {} task(s) in flight", args.grace, running.len()));
        let grace = tokio::time::sleep(args.grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                next = running.join_next() => match next {
                    Some(_) => done += 1,
                    None => break,
                },
                _ = &mut grace => break,
            }
        }
        running.abort_all();
        while running.join_next().await.is_some() {}
        let released = release_all(&db, worker).await;
        if released > 0 {
            out.notice(&format!("{released} task(s) handed back to the queue"));
        }
    }
    heartbeat.abort();
    signals.abort();
    mark_stopped(&db, worker).await;
    client.close(Duration::from_secs(2)).await;
    endpoint.shutdown().await;
    out.notice(&format!("worker {worker}: {done} task(s) handled"));
    Ok(crate::EXIT_OK)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

async fn claim(ctx: &Ctx, n: usize) -> Result<Vec<Claimed>, FleetError> {
    let c = ctx.db.client().await?;
    let rows = c.rows(sql::CLAIM, &[&ctx.endpoint, &ctx.worker, &(n as i32)]).await.map_err(stmt("claim tasks"))?;
    Ok(rows
        .into_iter()
        .map(|r| Claimed {
            batch: r.get(0),
            key: r.get(1),
            line: r.get(2),
            request: r.get(3),
            wanted: r.get(4),
            attempt: r.get(5),
            task_uuid: r.get(6),
            images: serde_json::from_value(r.get::<_, Value>(7)).unwrap_or_default(),
            error: r.get(8),
            sent_refs: HashMap::new(),
        })
        .collect())
}

/// True when no active batch of this endpoint has a task queued or leased.
async fn nothing_left(ctx: &Ctx) -> Result<bool, FleetError> {
    let c = ctx.db.client().await?;
    let row = c.query_one(sql::NOTHING_LEFT, &[&ctx.endpoint]).await.map_err(stmt("look for work"))?;
    Ok(row.get(0))
}

async fn heartbeat(db: Arc<Db>, worker: Uuid, lease: Duration) {
    let every = (lease / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let beat = async {
            let c = db.client().await?;
            c.exec(sql::HEARTBEAT, &[&worker]).await.map_err(stmt("heartbeat"))?;
            let swept = c
                .execute(sql::SWEEP, &[&worker, &lease.as_secs_f64()])
                .await
                .map_err(stmt("hand back silent workers' leases"))?;
            Ok::<u64, FleetError>(swept)
        };
        match beat.await {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "handed back the leases of silent workers"),
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed");
                if e.is_connection() {
                    db.reset();
                }
            }
        }
    }
}

/// Pauses every active batch of `endpoint`.
async fn pause_endpoint(db: &Db, endpoint: &str, reason: &str) {
    let r = async {
        let c = db.client().await?;
        c.exec(sql::PAUSE_ENDPOINT, &[&endpoint, &reason]).await.map_err(stmt("pause the batches"))
    }
    .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "cannot pause the batches");
    }
}

async fn resume_after_auth(db: &Db, endpoint: &str) -> Result<u64, FleetError> {
    let c = db.client().await?;
    c.exec(sql::RESUME_AFTER_AUTH, &[&endpoint]).await.map_err(stmt("resume the batches"))
}

async fn mark_stopped(db: &Db, worker: Uuid) {
    if let Ok(c) = db.client().await {
        let _ = c.execute(sql::MARK_STOPPED, &[&worker]).await;
    }
}

/// Hands back what this worker still holds (not counted as deliveries).
async fn release_all(db: &Db, worker: Uuid) -> u64 {
    let r = db
        .retrying(Duration::from_secs(10), |c| async move {
            c.exec(sql::RELEASE_ALL, &[&worker]).await.map_err(stmt("hand back the leases"))
        })
        .await;
    r.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot hand back the leases; the sweepers will");
        0
    })
}

async fn run_task(ctx: &Ctx, mut task: Claimed) {
    let started = Instant::now();
    let (end, others) = execute(ctx, &mut task).await;
    let latency_ms = runware_jobs::runner::latency_ms(started.elapsed());
    let images = serde_json::to_value(&task.images).unwrap_or(Value::Array(Vec::new()));
    let cost: f64 = task.images.iter().filter_map(|i| i.cost).sum::<f64>() + 0.0;
    let failure = match end {
        Ok(()) => {
            let results = Value::Array(others);
            let (batch, key, attempt) = (task.batch, task.key.clone(), task.attempt);
            let result = record(ctx, "record a result", move |c| {
                let (images, results, key) = (images.clone(), results.clone(), key.clone());
                async move {
                    c.exec(sql::RECORD_DONE, &[&batch, &key, &attempt, &images, &results, &cost, &latency_ms]).await
                }
            })
            .await;
            return handed_back_if_unrecorded(ctx, &task, result).await;
        }
        Err(f) => f,
    };
    // What this delivery knows of the task's history; the queue keeps the rest
    // (attempts past the batch's max_attempts are parked by `advance`, deliveries
    // past max_deliveries go dead).
    let history = History {
        wanted: task.wanted.max(1) as u32,
        have: task.images.len() as u32,
        resent_after_rate_limit: last_rate_limited(&task),
        reuploaded: task.error.as_ref().is_some_and(|e| e["code"] == FORGOTTEN_REFERENCE),
        uses_uploads: !task.sent_refs.is_empty(),
        ..History::default()
    };
    if let Failure::Reported { rate_limited: true, .. } = failure {
        back_off_batch(ctx, task.batch).await;
    }
    let (decision, _) = decide(&ctx.policy, &history, &failure);
    let (code, message) = (failure.code().to_string(), failure.message().to_string());
    let result = match decision {
        Decision::Done => {
            // Every image is in: the failure came after the last one.
            let error = json!({"code": code, "message": message});
            finish_failed(ctx, &task, TaskState::Done, error, images, cost).await
        }
        Decision::ResendSame { .. } => {
            // A rate-limited taskUUID may or may not be registered: sent once more
            // under the same UUID first (a conflict then recovers it).
            let error = json!({"code": code, "message": message, "taskUUID": task.task_uuid});
            release(ctx, &task, error, images, cost, true).await
        }
        Decision::NextAttempt { reupload: true, .. } if !renew_references(ctx, &task).await => {
            let error = json!({"code": code, "message": message, "parameter": "inputs.referenceImages", "final": true});
            finish_failed(ctx, &task, TaskState::Failed, error, images, cost).await
        }
        Decision::NextAttempt { reupload, .. } => {
            // The server reported the failure (or forgot an upload that is live
            // again): a new taskUUID cannot run the task twice.
            let error = if reupload {
                json!({"code": code, "message": message, "parameter": "inputs.referenceImages"})
            } else {
                json!({"code": code, "message": message})
            };
            advance(ctx, &task, error, images, cost).await
        }
        // Retries are bounded by the batch's max_attempts in the queue (parked).
        Decision::Fail { is_final: false } => {
            advance(ctx, &task, json!({"code": code, "message": message}), images, cost).await
        }
        Decision::Fail { is_final: true } => {
            let parameter = match &failure {
                Failure::Final { parameter, .. } => parameter.clone(),
                _ => None,
            };
            let error = json!({"code": code, "message": message, "parameter": parameter, "final": true});
            finish_failed(ctx, &task, TaskState::Failed, error, images, cost).await
        }
        Decision::Recover | Decision::LeavePending => {
            let error = json!({"code": UNKNOWN, "message": message, "taskUUID": task.task_uuid});
            release(ctx, &task, error, images, cost, false).await
        }
        Decision::StopForAccount { record_failure } => {
            let reason = if code == "invalidApiKey" || !record_failure {
                format!("auth: {message}")
            } else {
                format!("account: {code}: {message}")
            };
            pause_endpoint(&ctx.db, &ctx.endpoint, &reason).await;
            let error = json!({"code": code, "message": message});
            if record_failure {
                // Failed on the server for the account: a new attempt once it is fixed.
                advance(ctx, &task, error, images, cost).await
            } else {
                release(ctx, &task, error, images, cost, true).await
            }
        }
    };
    handed_back_if_unrecorded(ctx, &task, result).await;
}

/// After an outcome could not be recorded: a live worker's leases never expire,
/// so a task left leased would wait for ever. It is handed back plainly (its
/// outcome is unknown: same taskUUID).
async fn handed_back_if_unrecorded(ctx: &Ctx, task: &Claimed, result: Result<(), FleetError>) {
    if let Err(e) = result {
        // A live worker's leases never expire: a task left leased here would wait for
        // ever. Hand it back plainly (its outcome is unknown: same taskUUID).
        let fallback = if e.is_connection() { Err(e) } else { abandon(ctx, task).await.map_err(|_| e) };
        if let Err(e) = fallback {
            tracing::error!(error = %e, task_uuid = %task.task_uuid, "cannot record the task's outcome; it is handed out again once this worker stops");
        } else {
            tracing::error!(task_uuid = %task.task_uuid, "cannot record the task's outcome; handed it back to be run again under its taskUUID");
        }
    }
}

/// After [`FORGOTTEN_REFERENCE`]: true when the task's kept references are live again (once
/// per line in a row: a reference that fails again right after is not a forgotten one).
async fn renew_references(ctx: &Ctx, task: &Claimed) -> bool {
    if task.error.as_ref().is_some_and(|e| e["code"] == FORGOTTEN_REFERENCE) {
        return false;
    }
    match ctx.renewed.renew(&ctx.db, task.batch, &task.sent_refs).await {
        Ok(renewed) => renewed,
        Err(e) => {
            tracing::warn!(error = %e, task_uuid = %task.task_uuid, "cannot upload the task's references again; the line fails");
            false
        }
    }
}

/// Back to the queue as it was claimed, with nothing recorded (the fallback when
/// recording an outcome failed).
async fn abandon(ctx: &Ctx, task: &Claimed) -> Result<u64, FleetError> {
    let c = ctx.db.client().await?;
    c.exec(sql::ABANDON, &[&task.batch, &task.key, &task.attempt, &ctx.worker])
        .await
        .map_err(stmt("hand the task back"))
}

fn last_rate_limited(task: &Claimed) -> bool {
    task.error.as_ref().is_some_and(|e| {
        e["code"] == "requestRateLimitExceeded" && e["taskUUID"].as_str() == Some(task.task_uuid.to_string().as_str())
    })
}

/// Runs `op` until the database takes it (or [`DB_PATIENCE`] runs out).
async fn record<F, Fut>(ctx: &Ctx, what: &'static str, op: F) -> Result<(), FleetError>
where
    F: Fn(Arc<Conn>) -> Fut,
    Fut: std::future::Future<Output = Result<u64, tokio_postgres::Error>>,
{
    let changed = ctx
        .db
        .retrying(DB_PATIENCE, |c| {
            let f = op(c);
            async move { f.await.map_err(stmt(what)) }
        })
        .await?;
    if changed == 0 {
        tracing::info!(what, "the task had moved on (another delivery finished it first): nothing changed");
    }
    Ok(())
}

async fn finish_failed(
    ctx: &Ctx,
    task: &Claimed,
    state: TaskState,
    error: Value,
    images: Value,
    cost: f64,
) -> Result<(), FleetError> {
    let (batch, key, attempt) = (task.batch, task.key.clone(), task.attempt);
    record(ctx, "record a failure", move |c| {
        let (error, images, key) = (error.clone(), images.clone(), key.clone());
        async move { c.exec(sql::RECORD_END, &[&batch, &key, &attempt, &state, &error, &images, &cost]).await }
    })
    .await
}

/// The next attempt, under a new taskUUID (compare-and-set on the attempt).
async fn advance(ctx: &Ctx, task: &Claimed, error: Value, images: Value, cost: f64) -> Result<(), FleetError> {
    let next = task.attempt + 1;
    let uuid = identity::attempt_uuid(task.batch, &task.key, next as u32);
    let wait = ctx.policy.wait(task.attempt as u32, fastrand::f64());
    let (batch, key, attempt) = (task.batch, task.key.clone(), task.attempt);
    record(ctx, "start the next attempt", move |c| {
        let (error, images, key) = (error.clone(), images.clone(), key.clone());
        async move {
            c.exec(sql::ADVANCE, &[&batch, &key, &attempt, &next, &uuid, &error, &images, &cost, &wait.as_secs_f64()])
                .await
        }
    })
    .await
}

/// Back to the queue under the same taskUUID; `free` does not count the delivery.
async fn release(
    ctx: &Ctx,
    task: &Claimed,
    error: Value,
    images: Value,
    cost: f64,
    free: bool,
) -> Result<(), FleetError> {
    let (batch, key, attempt, worker) = (task.batch, task.key.clone(), task.attempt, ctx.worker);
    let give_back = i32::from(free);
    record(ctx, "hand the task back", move |c| {
        let (error, images, key) = (error.clone(), images.clone(), key.clone());
        async move {
            c.exec(
                sql::RELEASE,
                &[&batch, &key, &attempt, &worker, &give_back, &error, &images, &cost],
            )
            .await
        }
    })
    .await
}

async fn back_off_batch(ctx: &Ctx, batch: Uuid) {
    let wait = ctx.policy.wait(1, fastrand::f64());
    let r = async {
        let c = ctx.db.client().await?;
        c.exec(sql::BACK_OFF, &[&batch, &wait.as_secs_f64()]).await.map_err(stmt("back the batch off"))
    }
    .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "cannot back the batch off");
    }
}

/// Sends the task's attempt and gathers its results (images saved as they come).
async fn execute(ctx: &Ctx, task: &mut Claimed) -> (Result<(), Failure>, Vec<Value>) {
    if task.error.as_ref().is_some_and(|e| e["code"] == FORGOTTEN_REFERENCE) {
        // Another worker may have uploaded the reference again.
        if let Err(e) = ctx.renewed.learn(&ctx.db, task.batch, &task.request).await {
            tracing::warn!(error = %e, "cannot read the renewed references; sending the ones this worker knows");
        }
    }
    let mut request = task.request.clone();
    task.sent_refs = ctx.renewed.apply(&mut request);
    let built = match input::build(request, task.task_uuid, Path::new("/")) {
        Ok(t) => t,
        Err(e) => {
            return (
                Err(Failure::Final { code: e.code.into(), message: e.message, parameter: e.parameter }),
                Vec::new(),
            );
        }
    };
    // One attempt through the job runner (its throttle, hooks and collection of
    // results); the queue keeps the records and `run_task` decides.
    let job = Job::new(task.key.clone(), built).line(usize::try_from(task.line).unwrap_or(0));
    let images = std::mem::take(&mut task.images);
    let end = ctx.runner.attempt(&job, task.attempt.max(1) as u32, task.task_uuid, images).await;
    task.images = end.images;
    (end.outcome, end.results)
}
