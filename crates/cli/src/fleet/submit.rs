//! `runware batch submit FILE --queue URL`: one row per line, idempotently.
//!
//! The batch's id is derived from its endpoint and name (the file's stem unless
//! `--name`), and each line's row from its identity (`id`, or its canonical content
//! and occurrence: the local batch's rule). Submitting the same file again adds
//! nothing and prints the same id; lines added to the file since are added, and
//! lines no longer in it are withdrawn if no worker has sent them yet (one that was
//! sent may have run: it is finished, so its outcome is known). Lines that moved
//! get their new line numbers.
//! Every line is validated by the local batch's rules; a line that breaks one is
//! recorded `failed` with the rule, so the results keep one record per line.
//! Local reference files are uploaded once (to the batch's endpoint) and the rows
//! reference the uploads by imageUUID; without a key they stay inline. Each upload's
//! reference is kept in the queue too, so a worker can upload it again when the
//! server has forgotten it (`fleet/references.rs`).

use super::FleetError;
use super::db::{Db, stmt};
use super::queue::submit_sql as sql;
use super::references::{self, Kept};
use super::states::TaskState;
use crate::args::{ApiArgs, SubmitArgs};
use crate::embedded::{self, Endpoint};
use crate::error::CliError;
use crate::input::Task;
use crate::output::Output;
use crate::reader::{self, Item};
use runware_jobs::identity;
use runware_jobs::store::journal::Loaded;
use runware_ws::client::{Client, ReferenceCache};
use runware_ws::protocol::{KontextTask, ReferenceImage};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use uuid::Uuid;

const BATCH_NAMESPACE: Uuid = Uuid::from_u128(0x0e6f_2a91_7c3d_4e58_b1a0_5f94_c2d7_83e6);
/// Rows per INSERT statement.
const CHUNK: usize = 500;

/// The id of the batch `name` on `endpoint`.
pub fn batch_id(endpoint: &str, name: &str) -> Uuid {
    Uuid::new_v5(&BATCH_NAMESPACE, format!("{endpoint}\n{name}").as_bytes())
}

/// One row to insert.
struct Row {
    key: String,
    line: usize,
    request: Value,
    wanted: u32,
    task_uuid: Uuid,
    error: Option<Value>,
}

pub async fn run(api: ApiArgs, args: SubmitArgs, out: &Output) -> Result<u8, CliError> {
    let canonical = tokio::fs::canonicalize(&args.file)
        .await
        .map_err(|source| CliError::Read { path: args.file.clone(), source })?;
    let base_dir = canonical.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    let name = match &args.name {
        Some(n) if !n.trim().is_empty() => n.clone(),
        Some(_) => return Err(CliError::Usage("--name: must not be empty".into())),
        None => args.file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "batch".into()),
    };
    let endpoint_id = embedded::endpoint_id(&api);
    let id = batch_id(&endpoint_id, &name);
    let db = Db::open(&args.queue.queue).await?;

    // Lines already queued are neither uploaded for nor inserted again.
    let known: std::collections::HashSet<String> = db
        .client()
        .await?
        .query(sql::QUEUED_LINES, &[&id])
        .await
        .map_err(stmt("read the queued lines"))?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    let mut already = 0u64;
    // Every line identity in the file, and where the already-queued ones are now.
    let mut present: Vec<String> = Vec::new();
    let mut moved: (Vec<String>, Vec<i32>) = (Vec::new(), Vec::new());
    // Read and validate every line (blocking, off the runtime).
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut rx = reader::Items::new(rx);
    let reading = {
        let (path, base) = (canonical.clone(), base_dir.clone());
        tokio::task::spawn_blocking(move || reader::read_lines(&path, &base, &Loaded::default(), id, None, 16, tx))
    };
    let mut rows = Vec::new();
    let mut references: Option<(Endpoint, Client, ReferenceCache)> = None;
    let (mut invalid, mut kept) = (0usize, Vec::new());
    while let Some(item) = rx.recv().await {
        match item {
            Item::Skip { .. } => {}
            Item::Invalid { line, key, task_uuid, error } => {
                present.push(key.clone());
                invalid += 1;
                if invalid <= 20 {
                    out.notice(&error.describe(line));
                } else if invalid == 21 {
                    out.notice("(more invalid lines: see `runware batch results`)");
                }
                let error =
                    json!({"code": error.code, "message": error.message, "parameter": error.parameter, "final": true});
                rows.push(Row { key, line, request: Value::Null, wanted: 0, task_uuid, error: Some(error) });
            }
            Item::Run(job) if known.contains(&job.key) => {
                already += 1;
                present.push(job.key.clone());
                moved.0.push(job.key);
                moved.1.push(job.line as i32);
            }
            Item::Run(job) => {
                present.push(job.key.clone());
                let task_uuid = job.own_uuid.unwrap_or_else(|| identity::attempt_uuid(id, &job.key, 1));
                let wanted = job.task.wanted();
                let task = if has_inline_refs(&job.task) && !embedded::is_embedded(&api) {
                    if references.is_none() {
                        let endpoint = Endpoint::resolve(&api, out).await?;
                        let client = endpoint.connect(|b| b).await?;
                        let cache = ReferenceCache::new(client.clone());
                        references = Some((endpoint, client, cache));
                    }
                    let Some((_, _, cache)) = references.as_ref() else { continue };
                    upload_refs(cache, job.task, &mut kept)
                        .await
                        .map_err(|e| CliError::Other(format!("line {}: uploading a reference image: {e}", job.line)))?
                } else {
                    job.task
                };
                let request = to_json(&task)
                    .map_err(|e| CliError::Other(format!("line {}: cannot serialize the task: {e}", job.line)))?;
                rows.push(Row { key: job.key, line: job.line, request, wanted, task_uuid, error: None });
            }
        }
    }
    match reading.await {
        Ok(r) => r?,
        Err(e) => return Err(CliError::Other(format!("reading {}: {e}", args.file.display()))),
    }
    if let Some((endpoint, client, _)) = references {
        client.close(Duration::from_secs(2)).await;
        endpoint.shutdown().await;
    }

    let options = json!({
        "file": canonical.display().to_string(),
        "download": !args.no_download,
    });
    let c = db.client().await?;
    c.execute(
        sql::CREATE_BATCH,
        &[
            &id,
            &name,
            &endpoint_id,
            &options,
            &(args.max_in_flight as i32),
            &(args.retries as i32 + 1),
            &(args.max_deliveries as i32),
            &args.max_cost,
        ],
    )
    .await
    .map_err(stmt("create the batch"))?;
    references::keep(&c, id, &kept).await?;
    let uploads = kept.len();
    let mut added = 0u64;
    for chunk in rows.chunks(CHUNK) {
        added += insert(&c, id, chunk).await?;
    }
    let withdrawn =
        c.execute(sql::WITHDRAW, &[&id, &present]).await.map_err(stmt("withdraw the lines no longer in the file"))?;
    c.execute(sql::RENUMBER, &[&id, &moved.0, &moved.1]).await.map_err(stmt("renumber the lines that moved"))?;
    let total = rows.len() as u64 + already;
    if out.is_json() {
        out.json_value(
            &json!({"batch": id, "name": name, "lines": total, "added": added, "withdrawn": withdrawn, "invalid": invalid, "uploads": uploads}),
        );
    } else {
        out.notice(&format!(
            "{name}: {total} line(s), {added} added ({} already queued), {withdrawn} withdrawn (no longer in the file, never sent), {invalid} invalid, {uploads} reference(s) uploaded",
            total - added
        ));
        out.line(&id.to_string());
    }
    Ok(crate::EXIT_OK)
}

fn to_json(task: &Task) -> Result<Value, serde_json::Error> {
    match task {
        Task::Kontext(k) => serde_json::to_value(&**k),
        Task::Inference(i) => serde_json::to_value(&**i),
        Task::Raw(r) => Ok(Value::Object(r.as_object().clone())),
    }
}

fn reference_images(task: &Task) -> &[ReferenceImage] {
    let inputs = match task {
        Task::Kontext(k) => k.inputs.as_ref(),
        Task::Inference(i) => i.inputs.as_ref(),
        Task::Raw(_) => None,
    };
    inputs.map_or(&[], |i| i.reference_images.as_slice())
}

fn has_inline_refs(task: &Task) -> bool {
    reference_images(task).iter().any(|r| ReferenceCache::key(r).is_some())
}

/// The task with its inline references replaced by their uploads' imageUUIDs; each
/// upload made now is added to `kept` with its reference (moved, not copied).
async fn upload_refs(
    cache: &ReferenceCache,
    task: Task,
    kept: &mut Vec<Kept>,
) -> Result<Task, runware_ws::ClientError> {
    let (mut inference, kontext) = match task {
        Task::Kontext(k) => (k.into_inner(), true),
        Task::Inference(i) => (*i, false),
        raw => return Ok(raw),
    };
    if let Some(inputs) = inference.inputs.as_mut() {
        for r in inputs.reference_images.iter_mut() {
            let (sent, made) = cache.reference(r).await?;
            let given = std::mem::replace(r, sent);
            if let (Some(u), ReferenceImage::DataUri(data) | ReferenceImage::Base64(data)) = (made, given) {
                kept.push(Kept { image_uuid: u.image_uuid, data });
            }
        }
    }
    if kontext {
        // An imageUUID is always an allowed reference: the task stays valid.
        return Ok(Task::Kontext(Box::new(KontextTask::try_from(inference)?)));
    }
    Ok(match KontextTask::try_from(inference.clone()) {
        Ok(k) if k.model == runware_ws::protocol::kontext::MODEL => Task::Kontext(Box::new(k)),
        _ => Task::Inference(Box::new(inference)),
    })
}

async fn insert(c: &tokio_postgres::Client, batch: Uuid, rows: &[Row]) -> Result<u64, FleetError> {
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    let lines: Vec<i32> = rows.iter().map(|r| r.line as i32).collect();
    let requests: Vec<&Value> = rows.iter().map(|r| &r.request).collect();
    let wanted: Vec<i32> = rows.iter().map(|r| r.wanted as i32).collect();
    let uuids: Vec<Uuid> = rows.iter().map(|r| r.task_uuid).collect();
    let states: Vec<TaskState> =
        rows.iter().map(|r| if r.error.is_some() { TaskState::Failed } else { TaskState::Queued }).collect();
    let errors: Vec<Option<&Value>> = rows.iter().map(|r| r.error.as_ref()).collect();
    c.execute(sql::INSERT_TASKS, &[&batch, &keys, &lines, &requests, &wanted, &uuids, &states, &errors])
        .await
        .map_err(stmt("insert the tasks"))
}
