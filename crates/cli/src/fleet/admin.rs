//! `runware batch status|results|retry|cancel|resume|list`: reading and steering
//! fleet batches.

use super::FleetError;
use super::db::{Db, stmt};
use super::queue::admin_sql as sql;
use super::states::{BatchState, TaskState};
use crate::args::{ApiArgs, BatchIdArgs, FleetCommand, ListArgs, RetryArgs, StatusArgs};
use crate::error::CliError;
use crate::output::{Output, dollars, human_duration};
use runware_jobs::record::{ImageRecord, Record};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

pub async fn dispatch(cmd: FleetCommand, top: &ApiArgs, out: &Output) -> Result<u8, CliError> {
    match cmd {
        FleetCommand::Submit(a) => super::submit::run(a.api.or(top), a, out).await,
        FleetCommand::Status(a) => status(a, out).await,
        FleetCommand::Results(a) => results(a, out).await,
        FleetCommand::Retry(a) => retry(a, out).await,
        FleetCommand::Cancel(a) => set_state(a, BatchState::Cancelled, out).await,
        FleetCommand::Resume(a) => set_state(a, BatchState::Active, out).await,
        FleetCommand::List(a) => list(a, out).await,
    }
}

/// A batch's figures.
#[derive(Debug)]
struct Figures {
    name: String,
    state: BatchState,
    paused_reason: Option<String>,
    /// By state, as the schema spells it (in the JSON, in this order).
    counts: BTreeMap<&'static str, i64>,
    billed: f64,
    images: i64,
    done_last_minute: i64,
    live_workers: i64,
}

impl Figures {
    fn count(&self, state: TaskState) -> i64 {
        self.counts.get(state.as_str()).copied().unwrap_or(0)
    }
    fn total(&self) -> i64 {
        self.counts.values().sum()
    }
    fn open(&self) -> i64 {
        self.count(TaskState::Queued) + self.count(TaskState::Leased) + self.count(TaskState::Paused)
    }
}

async fn figures(db: &Db, id: Uuid) -> Result<Figures, FleetError> {
    let c = db.client().await?;
    let Some(b) = c.query_opt(sql::READ_BATCH, &[&id]).await.map_err(stmt("read the batch"))? else {
        return Err(FleetError::NoBatch(id.to_string()));
    };
    let endpoint: String = b.get(3);
    let mut f = Figures {
        name: b.get(0),
        state: b.try_get(1).map_err(stmt("read the batch"))?,
        paused_reason: b.get(2),
        counts: BTreeMap::new(),
        billed: 0.0,
        images: 0,
        done_last_minute: 0,
        live_workers: 0,
    };
    for r in c.query(sql::COUNT_BY_STATE, &[&id]).await.map_err(stmt("count the tasks"))? {
        let state: TaskState = r.try_get(0).map_err(stmt("count the tasks"))?;
        f.counts.insert(state.as_str(), r.get(1));
    }
    let r = c.query_one(sql::SUMS, &[&id]).await.map_err(stmt("sum the costs"))?;
    f.billed = r.get(0);
    f.images = r.get(1);
    f.done_last_minute = r.get(2);
    let r = c.query_one(sql::LIVE_WORKERS, &[&endpoint]).await.map_err(stmt("count the workers"))?;
    f.live_workers = r.get(0);
    Ok(f)
}

fn describe(id: Uuid, f: &Figures) -> String {
    let counts: Vec<String> =
        TaskState::ALL.iter().filter(|s| f.count(**s) > 0).map(|s| format!("{} {s}", f.count(*s))).collect();
    let rate = f.done_last_minute as f64 / 60.0;
    let eta = if f.open() == 0 {
        "-".to_string()
    } else if rate > 0.0 {
        human_duration(Duration::from_secs_f64(f.open() as f64 / rate))
    } else {
        "unknown".to_string()
    };
    let state = match &f.paused_reason {
        Some(r) if f.state == BatchState::Paused => format!("{} ({r})", f.state),
        _ => f.state.to_string(),
    };
    format!(
        "{id} {}: {state}; {} task(s): {}; {:.1} tasks/s, ETA {eta}; {} image(s), billed {}; {} live worker(s)",
        f.name,
        f.total(),
        if counts.is_empty() { "none".into() } else { counts.join(", ") },
        rate,
        f.images,
        dollars(f.billed),
        f.live_workers
    )
}

fn figures_json(id: Uuid, f: &Figures) -> Value {
    json!({
        "batch": id, "name": f.name, "state": f.state.as_str(), "pausedReason": f.paused_reason,
        "counts": f.counts, "total": f.total(), "images": f.images, "billed": f.billed,
        "donePerSecond": f.done_last_minute as f64 / 60.0, "liveWorkers": f.live_workers,
    })
}

async fn status(args: StatusArgs, out: &Output) -> Result<u8, CliError> {
    let db = Db::open(&args.batch.queue.queue).await?;
    let id = args.batch.id;
    if !args.watch {
        let f = figures(&db, id).await?;
        if out.is_json() {
            out.json_value(&figures_json(id, &f));
        } else {
            out.line(&describe(id, &f));
        }
        return Ok(crate::EXIT_OK);
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} finished  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    loop {
        let f = figures(&db, id).await?;
        bar.set_length(f.total() as u64);
        bar.set_position((f.total() - f.open()) as u64);
        bar.set_message(describe(id, &f));
        if f.open() == 0 || f.state == BatchState::Cancelled {
            bar.finish();
            return Ok(crate::EXIT_OK);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => {
                bar.abandon();
                return Ok(crate::EXIT_INTERRUPTED);
            }
        }
    }
}

/// The results as the local batch's result records, in line order; lines still
/// open are left out.
async fn results(args: BatchIdArgs, out: &Output) -> Result<u8, CliError> {
    let db = Db::open(&args.queue.queue).await?;
    let c = db.client().await?;
    if c.query_opt(sql::BATCH_EXISTS, &[&args.id]).await.map_err(stmt("read the batch"))?.is_none() {
        return Err(FleetError::NoBatch(args.id.to_string()).into());
    }
    let rows = c.query(sql::RESULTS, &[&args.id]).await.map_err(stmt("read the results"))?;
    for r in rows {
        let (key, line, task_uuid): (String, i32, Uuid) = (r.get(0), r.get(1), r.get(2));
        let state: TaskState = r.try_get(3).map_err(stmt("read the results"))?;
        let images: Vec<ImageRecord> = serde_json::from_value(r.get::<_, Value>(5)).unwrap_or_default();
        let others: Vec<Value> = serde_json::from_value(r.get::<_, Value>(6)).unwrap_or_default();
        let error: Option<Value> = r.get(7);
        let latency: Option<f64> = r.get(8);
        let line = line as usize;
        let mut record = if state == TaskState::Done {
            Record::ok(key, line, task_uuid)
        } else {
            let e = error.unwrap_or(Value::Null);
            let code = e["code"].as_str().unwrap_or("error").to_string();
            let message = e["message"].as_str().unwrap_or("").to_string();
            let parameter = e["parameter"].as_str().map(str::to_owned);
            Record::error(key, line, task_uuid, code, message, parameter, state == TaskState::Failed)
        };
        record.attempts = Some(r.get::<_, i32>(4) as u32);
        record.images = images;
        record.results = others;
        record.latency_ms = latency.map(|l| (l * 1000.0).round() / 1000.0);
        out.json_value(&record);
    }
    Ok(crate::EXIT_OK)
}

async fn retry(args: RetryArgs, out: &Output) -> Result<u8, CliError> {
    let db = Db::open(&args.batch.queue.queue).await?;
    let c = db.client().await?;
    let mut dead = 0u64;
    if args.dead {
        // A dead task's outcome is unknown (it may have run): it goes back under the
        // same attempt and taskUUID, so the server's conflict → getResponse recovers
        // it instead of billing it twice. Only its delivery count starts again.
        dead = c.execute(sql::REQUEUE_DEAD, &[&args.batch.id]).await.map_err(stmt("queue the dead tasks again"))?;
    }
    let mut parked = 0u64;
    if args.parked {
        // A parked task's last attempt failed on the server: a new attempt under a new
        // taskUUID, with its retries budget afresh.
        let rows = c.query(sql::FIND_PARKED, &[&args.batch.id]).await.map_err(stmt("find the parked tasks"))?;
        for r in rows {
            let (key, attempt): (String, i32) = (r.get(0), r.get(1));
            let uuid = runware_jobs::identity::attempt_uuid(args.batch.id, &key, attempt as u32 + 1);
            parked += c
                .execute(sql::REQUEUE_PARKED, &[&args.batch.id, &key, &attempt, &uuid])
                .await
                .map_err(stmt("queue the parked tasks again"))?;
        }
    }
    out.notice(&format!(
        "{dead} dead task(s) queued again under their taskUUIDs, {parked} parked task(s) under new taskUUIDs"
    ));
    Ok(crate::EXIT_OK)
}

async fn set_state(args: BatchIdArgs, state: BatchState, out: &Output) -> Result<u8, CliError> {
    let db = Db::open(&args.queue.queue).await?;
    let c = db.client().await?;
    let n = c.execute(sql::SET_BATCH_STATE, &[&args.id, &state]).await.map_err(stmt("change the batch's state"))?;
    if n == 0 {
        let exists = c.query_opt(sql::BATCH_STATE, &[&args.id]).await.map_err(stmt("read the batch"))?;
        return match exists {
            None => Err(FleetError::NoBatch(args.id.to_string()).into()),
            Some(_) => Err(CliError::Usage(format!("batch {} is cancelled; it cannot be {state} again", args.id))),
        };
    }
    out.notice(&format!("batch {}: {state}", args.id));
    Ok(crate::EXIT_OK)
}

async fn list(args: ListArgs, out: &Output) -> Result<u8, CliError> {
    let db = Db::open(&args.queue.queue).await?;
    let c = db.client().await?;
    let rows = c.query(sql::LIST_BATCHES, &[]).await.map_err(stmt("list the batches"))?;
    for r in rows {
        let id: Uuid = r.get(0);
        let f = figures(&db, id).await?;
        if out.is_json() {
            out.json_value(&figures_json(id, &f));
        } else {
            out.line(&describe(id, &f));
        }
    }
    Ok(crate::EXIT_OK)
}
