//! Running one accepted Kontext task: latency, pictures, result items, delivery,
//! billing; and what every accepted task shares (execution counting, failures).

use super::failures::FailPlan;
use super::imaging;
use super::references;
use super::render::{self, Recipe};
use super::session::{Queued, Session};
use super::state::Shared;
use super::tasks::TaskRecord;
use super::validate::{InferenceParams, task_error};
use super::webhook;
use base64::Engine as _;
use rand::Rng as _;
use runware_ws::protocol::kontext::{PRICE_PER_IMAGE, rules::SEED_MAX};
use runware_ws::protocol::{OutputType, tag};
use serde_json::{Map, Value, json};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// How long URL outputs stay servable when the task gives no `ttl`.
const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// What one image costs, in micro-USD.
fn micro_usd_per_image() -> u64 {
    (PRICE_PER_IMAGE * 1e6).round() as u64
}

/// Runs the task to its end (results, or an error), unless the emulator shuts down.
pub(crate) async fn run(
    shared: Arc<Shared>,
    record: Arc<TaskRecord>,
    params: InferenceParams,
    session: Option<Arc<Session>>,
    plan: Option<FailPlan>,
) {
    supervise(&shared, &record, execute(&shared, &record, &params, session.as_deref(), plan)).await;
}

/// Counts an execution of `record`, runs `work` (unless the emulator shuts down
/// first), then finishes the task.
pub(crate) async fn supervise(shared: &Shared, record: &TaskRecord, work: impl Future<Output = ()>) {
    let count = record.executed();
    shared.stats.executed(count);
    tokio::select! {
        _ = work => {}
        _ = shared.shutdown_signal() => {}
    }
    record.finish();
    shared.stats.task_finished();
}

async fn execute(
    shared: &Arc<Shared>,
    record: &TaskRecord,
    p: &InferenceParams,
    session: Option<&Session>,
    plan: Option<FailPlan>,
) {
    let start = Instant::now();
    let latency = shared.sample_latency();
    record.set_latency(latency);

    let reference = match load_reference(shared, p).await {
        Ok(r) => r,
        Err(message) => {
            let mut e =
                task_error("invalidReferenceImage", message, tag::ImageInference::NAME, &p.task_uuid.to_string())
                    .with_parameter("inputs.referenceImages");
            e.documentation = Some("https://runware.ai/docs/models/bfl-flux-1-kontext-pro".into());
            fail(shared, record, session, serde_json::to_value(&e).unwrap_or(Value::Null));
            return;
        }
    };

    let n = p.number_results.max(1);
    // An injected failure replaces result `fail_at` (so at least one is missing).
    let fail_at = plan.as_ref().map(|plan| plan.after_results.min(n - 1));
    let divisor = shared.cfg.render_divisor.max(1);
    let base_seed = p.seed.unwrap_or_else(|| shared.random_seed());
    for i in 0..n {
        // Results are spaced over the latency window: result i at (i+1)/n of it.
        let due = start + latency.mul_f64(f64::from(i + 1) / f64::from(n));
        // A deadline already reached is not slept on: tokio would round even a zero
        // wait up to its next 1 ms tick, and zero latency should mean zero.
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        if let (Some(plan), Some(at)) = (&plan, fail_at)
            && at == i
        {
            fail_injected(shared, record, session, tag::ImageInference::NAME, plan).await;
            return;
        }
        let seed =
            base_seed.checked_add(u64::from(i)).filter(|s| u128::from(*s) <= SEED_MAX as u128).unwrap_or(u64::from(i));
        let image_uuid = shared.new_uuid();
        let recipe = Arc::new(Recipe {
            width: (p.width / divisor).max(1),
            height: (p.height / divisor).max(1),
            seed,
            format: p.output_format,
            quality: p.output_quality,
            reference: reference.clone(),
        });
        let item = match make_item(shared, p, image_uuid, recipe).await {
            Ok(item) => item,
            Err(message) => {
                let e = task_error("inferenceError", message, tag::ImageInference::NAME, &p.task_uuid.to_string());
                fail(shared, record, session, serde_json::to_value(&e).unwrap_or(Value::Null));
                return;
            }
        };
        let json: Arc<str> = Arc::from(item.to_string());
        record.push_item(json.clone());
        record.billed();
        shared.stats.billed(micro_usd_per_image());
        if let Some(url) = &p.webhook_url {
            webhook::post_item(shared, url, json.clone());
        }
        if let Some(s) = session {
            s.deliver(Queued { json, is_error: false, index: i, total: n, buffered: false }, &shared.stats);
        }
    }
}

/// Decodes the first reference image (and checks the others decode too).
async fn load_reference(shared: &Shared, p: &InferenceParams) -> Result<Option<Arc<image::RgbImage>>, String> {
    let mut first = None;
    for (i, r) in p.references.iter().enumerate() {
        let bytes = references::resolve(shared, r).await.map_err(|e| format!("inputs.referenceImages[{i}]: {e}"))?;
        let thumb = tokio::task::spawn_blocking(move || render::thumbnail(&bytes))
            .await
            .map_err(|e| format!("inputs.referenceImages[{i}]: {e}"))?
            .map_err(|e| format!("inputs.referenceImages[{i}] is not a decodable image: {e}"))?;
        if i == 0 {
            first = Some(Arc::new(thumb));
        }
    }
    Ok(first)
}

/// One result item; renders now for base64/dataURI outputs and upload endpoints,
/// registers a lazily rendered URL otherwise.
async fn make_item(
    shared: &Arc<Shared>,
    p: &InferenceParams,
    image_uuid: Uuid,
    recipe: Arc<Recipe>,
) -> Result<Value, String> {
    let mut item = Map::new();
    item.insert("taskType".into(), json!(tag::ImageInference::NAME));
    item.insert("taskUUID".into(), json!(p.task_uuid));
    item.insert("imageUUID".into(), json!(image_uuid));
    let needs_bytes = p.output_type != OutputType::Url || p.upload_endpoint.is_some();
    let bytes = if needs_bytes {
        Some(imaging::render(shared, recipe.clone()).await.map_err(|e| e.to_string())?)
    } else {
        None
    };
    let mime = p.output_format.mime();
    match (p.output_type, &bytes) {
        (OutputType::Base64Data, Some(b)) => {
            item.insert("imageBase64Data".into(), json!(base64::engine::general_purpose::STANDARD.encode(b)));
        }
        (OutputType::DataUri, Some(b)) => {
            let data = base64::engine::general_purpose::STANDARD.encode(b);
            item.insert("imageDataURI".into(), json!(format!("data:{mime};base64,{data}")));
        }
        _ => {
            let ttl = p.ttl.map(Duration::from_secs).unwrap_or(DEFAULT_TTL);
            shared.media.add_recipe(image_uuid, recipe.clone(), ttl);
            let url = format!("{}/images/{image_uuid}.{}", shared.http_url, p.output_format.extension());
            item.insert("imageURL".into(), json!(url));
        }
    }
    if let (Some(url), Some(b)) = (&p.upload_endpoint, bytes) {
        webhook::put_bytes(shared, url, b, mime);
    }
    item.insert("seed".into(), json!(recipe.seed));
    item.insert("NSFWContent".into(), json!(roll_nsfw(shared)));
    if p.include_cost {
        item.insert("cost".into(), json!(PRICE_PER_IMAGE));
    }
    Ok(Value::Object(item))
}

/// True when this image is flagged NSFW (the [`Fault::Nsfw`](super::Fault::Nsfw) probability).
fn roll_nsfw(shared: &Shared) -> bool {
    let p = shared.faults.nsfw_probability();
    p >= 1.0 || (p > 0.0 && shared.with_rng(|r| r.random::<f64>()) < p)
}

/// Fails the task as `plan` says (an injected failure): the error item is
/// `{code, message, taskType, taskUUID}`, recorded and delivered like any task error.
/// A stalling plan never returns (the task ends only with the emulator).
pub(crate) async fn fail_injected(
    shared: &Shared,
    record: &TaskRecord,
    session: Option<&Session>,
    task_type: &str,
    plan: &FailPlan,
) {
    if plan.stall {
        tracing::info!(task = %record.uuid, "stalling a task (fault injection): it will never end");
        super::stats::bump(&shared.stats.tasks_stalled_injected);
        std::future::pending::<()>().await;
    }
    tracing::info!(task = %record.uuid, code = %plan.code, "failing a task (fault injection)");
    super::stats::bump(&shared.stats.tasks_failed_injected);
    let e = task_error(&plan.code, plan.message.clone(), task_type, &record.uuid.to_string());
    fail(shared, record, session, serde_json::to_value(&e).unwrap_or(Value::Null));
}

/// Records a task failure and delivers the error.
pub(crate) fn fail(shared: &Shared, record: &TaskRecord, session: Option<&Session>, error: Value) {
    let json: Arc<str> = Arc::from(error.to_string());
    record.fail(error);
    if let Some(s) = session {
        s.deliver(Queued { json, is_error: true, index: 0, total: 1, buffered: false }, &shared.stats);
    }
}
