//! One client frame in, replies out: a function per task type. Nothing here waits:
//! slow work (tasks, uploads) is spawned, and replies are queued on the connection.

use super::config::Quirk;
use super::enhance;
use super::failures::{Candidate, FailPlan};
use super::inference;
use super::link::{Authed, ConnShared, envelope};
use super::media::Upload;
use super::references;
use super::session::Queued;
use super::state::Shared;
use super::stats;
use super::validate::{self, PROMPT_ENHANCE, task_error};
use rand::Rng as _;
use runware_ws::protocol::{ApiError, DeliveryMethod, sniff_image_mime, tag};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use uuid::Uuid;

/// Replies to one client frame, sent as one frame (plus separate empty
/// `getResponse` answers).
#[derive(Default)]
struct Reply {
    data: Vec<Arc<str>>,
    errors: Vec<Arc<str>>,
    extra: Vec<String>,
    /// `Quirk::ErrorsWithoutTaskUuid`.
    anonymous_errors: bool,
}

impl Reply {
    fn data(&mut self, v: Value) {
        self.data.push(Arc::from(v.to_string()));
    }
    fn error(&mut self, mut e: ApiError) {
        if self.anonymous_errors {
            e.task_uuid = None;
        }
        self.errors.push(Arc::from(serde_json::to_string(&e).unwrap_or_default()));
    }
    fn flush(&mut self, conn: &ConnShared) {
        if !self.data.is_empty() || !self.errors.is_empty() {
            conn.push_text(envelope(&self.data, &self.errors));
            self.data.clear();
            self.errors.clear();
        }
        for f in self.extra.drain(..) {
            conn.push_text(f);
        }
    }
}

fn frame_error(conn: &ConnShared, code: &str, message: String) {
    conn.push_text(json!({"errors":[{"code":code,"message":message}]}).to_string());
}

/// A binary frame: the protocol is text only.
pub(crate) fn on_binary(conn: &ConnShared) {
    frame_error(conn, "invalidJSON", "binary frames are not supported: send a JSON array of tasks as text".into());
}

/// A text frame: a JSON array of task objects.
pub(crate) fn on_text(shared: &Arc<Shared>, conn: &Arc<ConnShared>, text: &str) {
    let tasks = match serde_json::from_str::<Value>(text) {
        Err(e) => return frame_error(conn, "invalidJSON", format!("the frame is not valid JSON: {e}")),
        Ok(Value::Array(tasks)) => tasks,
        Ok(_) => {
            return frame_error(conn, "invalidJSON", "a frame must be a JSON array of task objects".into());
        }
    };
    // The size of an inference task as sent (a frame's size over its task count:
    // exact for a frame of one task, the mean for a batch).
    if !tasks.is_empty() && tasks.iter().all(|t| t["taskType"] == tag::ImageInference::NAME) {
        let per_task = (text.len() / tasks.len()) as u64;
        shared.stats.largest_inference_in.fetch_max(per_task, std::sync::atomic::Ordering::Relaxed);
    }
    let mut reply = Reply { anonymous_errors: shared.cfg.has(Quirk::ErrorsWithoutTaskUuid), ..Reply::default() };
    if tasks.is_empty() {
        reply.error(ApiError::new("invalidJSON", "the frame is an empty array: send at least one task"));
    }
    for task in tasks {
        on_task(shared, conn, task, &mut reply);
    }
    reply.flush(conn);
}

fn on_task(shared: &Arc<Shared>, conn: &Arc<ConnShared>, task: Value, reply: &mut Reply) {
    let Value::Object(obj) = task else {
        reply.error(ApiError::new("invalidJSON", format!("each task must be a JSON object (got {task})")));
        return;
    };
    let task_type = match obj.get("taskType") {
        Some(Value::String(t)) => t.clone(),
        other => {
            stats::bump(&shared.stats.tasks_received);
            let (code, msg) = match other {
                None => ("missingTaskType", "taskType is required".to_string()),
                Some(v) => ("invalidTaskType", format!("taskType must be a string (got {v})")),
            };
            let mut e = ApiError::new(code, msg).with_parameter("taskType");
            e.task_uuid = obj.get("taskUUID").and_then(Value::as_str).map(str::to_string);
            reply.error(e);
            return;
        }
    };
    match task_type.as_str() {
        tag::Authentication::NAME => authenticate(shared, conn, &obj, reply),
        tag::Ping::NAME => {
            stats::bump(&shared.stats.pings);
            if !shared.cfg.has(Quirk::NoPong) {
                reply.data(json!({"taskType":"ping","pong":true}));
            }
        }
        _ => {
            stats::bump(&shared.stats.tasks_received);
            let uuid = match validate::task_uuid(&obj, &task_type) {
                Ok(u) => u,
                Err(e) => return reply.error(e),
            };
            let Some(authed) = conn.auth() else {
                let e = task_error(
                    "unauthorized",
                    "authenticate first: send an authentication task",
                    &task_type,
                    &uuid.to_string(),
                );
                return reply.error(e);
            };
            match task_type.as_str() {
                tag::ImageInference::NAME => image_inference(shared, &authed, uuid, &obj, reply),
                PROMPT_ENHANCE => prompt_enhance(shared, &authed, uuid, &obj, reply),
                tag::GetResponse::NAME => get_response(shared, &authed, uuid, reply),
                tag::ImageUpload::NAME => upload(shared, &authed, uuid, &obj, reply, UploadKind::Image),
                tag::MediaStorage::NAME => media_storage(shared, &authed, uuid, &obj, reply),
                other => {
                    let mut e = task_error(
                        "unsupportedTaskType",
                        format!("the emulator does not support taskType {other:?}"),
                        other,
                        &uuid.to_string(),
                    )
                    .with_parameter("taskType");
                    e.allowed_values = Some(json!([
                        tag::ImageInference::NAME,
                        PROMPT_ENHANCE,
                        tag::ImageUpload::NAME,
                        tag::MediaStorage::NAME,
                        tag::GetResponse::NAME
                    ]));
                    reply.error(e);
                }
            }
        }
    }
}

fn invalid_api_key() -> ApiError {
    let mut e = ApiError::new("invalidApiKey", "Invalid API key. Get one at https://my.runware.ai/signup")
        .with_parameter("apiKey");
    e.task_type = Some(tag::Authentication::NAME.into());
    e
}

fn authenticate(shared: &Arc<Shared>, conn: &Arc<ConnShared>, obj: &Map<String, Value>, reply: &mut Reply) {
    let key = match obj.get("apiKey") {
        Some(Value::String(k)) if !k.is_empty() => k,
        _ => {
            stats::bump(&shared.stats.auth_failures);
            let mut e = ApiError::new("missingApiKey", "apiKey is required").with_parameter("apiKey");
            e.task_type = Some(tag::Authentication::NAME.into());
            return reply.error(e);
        }
    };
    let key_id = match shared.cfg.key_id(key) {
        Some(k) if !shared.faults.take_refuse_auth() => k,
        _ => {
            stats::bump(&shared.stats.auth_failures);
            return reply.error(invalid_api_key());
        }
    };
    let ttl = shared.cfg.session_ttl;
    let requested = obj.get("connectionSessionUUID").and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok());
    let requested = requested.filter(|_| !shared.cfg.has(Quirk::NoResume));
    let resumed = requested.and_then(|u| shared.sessions.resume(u, key_id, ttl));
    if let Some(session) = &resumed
        && shared.cfg.has(Quirk::NoReplay)
    {
        session.drop_undelivered();
    }
    let session = resumed.unwrap_or_else(|| shared.sessions.create(shared.new_uuid(), key_id, ttl));
    if let Some(prev) = conn.set_auth(Authed { key: key_id, session: session.clone() })
        && !Arc::ptr_eq(&prev.session, &session)
    {
        prev.session.detach(conn.id, &shared.stats);
    }
    stats::bump(&shared.stats.auths);
    // The reply goes out before any replayed result: flush what came before it, then it.
    reply.data(json!({"taskType":"authentication","connectionSessionUUID": session.uuid}));
    reply.flush(conn);
    if !session.attach(conn.listener(), &shared.stats) {
        tracing::debug!(session = %session.uuid, "session vanished during authentication");
    }
}

/// Where a taskUUID must be unique: the key's whole store, or (under
/// `Quirk::NoCrossSessionConflict`) the session.
fn scope(shared: &Shared, authed: &Authed) -> Option<Uuid> {
    shared.cfg.has(Quirk::NoCrossSessionConflict).then_some(authed.session.uuid)
}

fn conflict(shared: &Shared, task_type: &str, uuid: Uuid) -> ApiError {
    stats::bump(&shared.stats.conflicts);
    task_error(
        "conflictTaskUUID",
        format!("A task with taskUUID {uuid} was already received: taskUUIDs must be unique"),
        task_type,
        &uuid.to_string(),
    )
    .with_parameter("taskUUID")
}

fn image_inference(shared: &Arc<Shared>, authed: &Authed, uuid: Uuid, obj: &Map<String, Value>, reply: &mut Reply) {
    let params = match validate::inference(obj, uuid) {
        Ok(p) => p,
        Err(e) => return reply.error(e),
    };
    let Some(record) = shared.tasks.register(authed.key, uuid, tag::ImageInference::NAME, scope(shared, authed)) else {
        return reply.error(conflict(shared, tag::ImageInference::NAME, uuid));
    };
    let prompt = obj.get("positivePrompt").and_then(Value::as_str).unwrap_or_default();
    let plan = fail_plan(shared, uuid, prompt);
    shared.stats.task_started();
    if params.delivery == DeliveryMethod::Sync {
        record.set_sync();
    }
    let session = accept(authed, tag::ImageInference::NAME, uuid, params.delivery, reply);
    tokio::spawn(inference::run(shared.clone(), record, params, session, plan));
}

fn prompt_enhance(shared: &Arc<Shared>, authed: &Authed, uuid: Uuid, obj: &Map<String, Value>, reply: &mut Reply) {
    let params = match validate::prompt_enhance(obj, uuid) {
        Ok(p) => p,
        Err(e) => return reply.error(e),
    };
    let Some(record) = shared.tasks.register(authed.key, uuid, PROMPT_ENHANCE, scope(shared, authed)) else {
        return reply.error(conflict(shared, PROMPT_ENHANCE, uuid));
    };
    let plan = fail_plan(shared, uuid, &params.prompt);
    shared.stats.task_started();
    if params.delivery == DeliveryMethod::Sync {
        record.set_sync();
    }
    let session = accept(authed, PROMPT_ENHANCE, uuid, params.delivery, reply);
    tokio::spawn(enhance::run(shared.clone(), record, params, session, plan));
}

/// Whether an armed fail rule fails this newly accepted task.
fn fail_plan(shared: &Shared, uuid: Uuid, prompt: &str) -> Option<FailPlan> {
    shared.faults.fail_rules.check(Candidate { uuid, prompt }, || shared.with_rng(|r| r.random::<f64>()))
}

/// Acknowledges an async task at once (its results are for `getResponse`); a sync
/// task's results go to the session.
fn accept(
    authed: &Authed,
    task_type: &str,
    uuid: Uuid,
    delivery: DeliveryMethod,
    reply: &mut Reply,
) -> Option<Arc<super::session::Session>> {
    match delivery {
        DeliveryMethod::Async => {
            reply.data(json!({"taskType": task_type, "taskUUID": uuid}));
            None
        }
        DeliveryMethod::Sync => Some(authed.session.clone()),
    }
}

fn get_response(shared: &Shared, authed: &Authed, uuid: Uuid, reply: &mut Reply) {
    stats::bump(&shared.stats.get_responses);
    let record = shared.tasks.get(authed.key, uuid);
    let record = record.filter(|r| !(r.is_sync() && shared.cfg.has(Quirk::NoSyncGetResponse)));
    let items = record.map(|r| r.get_response_items()).unwrap_or_default();
    if items.is_empty() {
        reply.extra.push(r#"{"data":[]}"#.to_string());
    }
    for item in items {
        reply.data(item);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum UploadKind {
    Image,
    Media,
}

fn upload(
    shared: &Arc<Shared>,
    authed: &Authed,
    uuid: Uuid,
    obj: &Map<String, Value>,
    reply: &mut Reply,
    kind: UploadKind,
) {
    let (task_type, field) = match kind {
        UploadKind::Image => (tag::ImageUpload::NAME, "image"),
        UploadKind::Media => (tag::MediaStorage::NAME, "media"),
    };
    let text = match obj.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        other => {
            let code = if other.is_none() {
                format!("missing{}", capitalise(field))
            } else {
                format!("invalid{}", capitalise(field))
            };
            let e = task_error(
                &code,
                format!("{field} must be a data URI, base64 data or a URL"),
                task_type,
                &uuid.to_string(),
            )
            .with_parameter(field);
            return reply.error(e);
        }
    };
    let Some(record) = shared.tasks.register(authed.key, uuid, task_type, scope(shared, authed)) else {
        return reply.error(conflict(shared, task_type, uuid));
    };
    stats::bump(&shared.stats.uploads);
    let shared = shared.clone();
    let session = authed.session.clone();
    tokio::spawn(async move {
        let result = references::resolve_text(&shared, &text, field).await;
        let (json, is_error) = match result {
            Ok(bytes) => {
                let mime = sniff_image_mime(&bytes);
                if kind == UploadKind::Image && mime.is_none() {
                    let e = task_error(
                        "invalidImage",
                        "the image is not a JPEG, PNG, WEBP, GIF or BMP",
                        task_type,
                        &uuid.to_string(),
                    )
                    .with_parameter(field);
                    (serde_json::to_value(&e).unwrap_or(Value::Null), true)
                } else {
                    let mime = mime.unwrap_or("application/octet-stream");
                    let ext = mime.rsplit('/').next().map(|e| if e == "jpeg" { "jpg" } else { e }).unwrap_or("bin");
                    let media_uuid = shared.new_uuid();
                    let url = format!("{}/images/{media_uuid}.{ext}", shared.http_url);
                    shared.media.add_upload(media_uuid, Upload { bytes, mime });
                    let item = match kind {
                        UploadKind::Image => {
                            json!({"taskType": task_type, "taskUUID": uuid, "imageUUID": media_uuid, "imageURL": url})
                        }
                        UploadKind::Media => {
                            json!({"taskType": task_type, "taskUUID": uuid, "operation": "upload", "mediaUUID": media_uuid, "mediaURL": url})
                        }
                    };
                    (item, false)
                }
            }
            Err(message) => {
                let code = if kind == UploadKind::Image { "invalidImage" } else { "invalidMedia" };
                let e = task_error(code, message, task_type, &uuid.to_string()).with_parameter(field);
                (serde_json::to_value(&e).unwrap_or(Value::Null), true)
            }
        };
        let text: Arc<str> = Arc::from(json.to_string());
        if is_error {
            record.fail(json);
        } else {
            record.push_item(text.clone());
        }
        record.finish();
        session.deliver(Queued { json: text, is_error, index: 0, total: 1, buffered: false }, &shared.stats);
    });
}

fn media_storage(shared: &Arc<Shared>, authed: &Authed, uuid: Uuid, obj: &Map<String, Value>, reply: &mut Reply) {
    let task_type = tag::MediaStorage::NAME;
    match obj.get("operation").and_then(Value::as_str) {
        Some("upload") => upload(shared, authed, uuid, obj, reply, UploadKind::Media),
        Some("delete") => {
            // Runware's SDKs send the mediaUUID to delete as `media`; `mediaUUID` is taken too.
            let field = if obj.contains_key("media") { "media" } else { "mediaUUID" };
            let target = obj.get(field).and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok());
            let Some(target) = target else {
                let e = task_error(
                    "invalidMediaUUID",
                    format!("{field} must be the UUID of stored media"),
                    task_type,
                    &uuid.to_string(),
                )
                .with_parameter(field);
                return reply.error(e);
            };
            if shared.tasks.register(authed.key, uuid, task_type, scope(shared, authed)).is_none() {
                return reply.error(conflict(shared, task_type, uuid));
            }
            if shared.media.delete_upload(target) {
                reply
                    .data(json!({"taskType": task_type, "taskUUID": uuid, "operation": "delete", "mediaUUID": target}));
            } else {
                let e = task_error(
                    "mediaNotFound",
                    format!("no stored media has the UUID {target}"),
                    task_type,
                    &uuid.to_string(),
                )
                .with_parameter(field);
                reply.error(e);
            }
        }
        _ => {
            let mut e =
                task_error("invalidOperation", "operation must be upload or delete", task_type, &uuid.to_string())
                    .with_parameter("operation");
            e.allowed_values = Some(json!(["upload", "delete"]));
            reply.error(e);
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}
