//! Client → server task objects. A frame is a JSON array of these.

use super::api_key::ApiKey;
use super::inference::ImageInference;
use super::tag;
use super::validation::{ValidationError, Violation};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// `{"taskType":"authentication","apiKey":…,"connectionSessionUUID":…}`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Authentication {
    /// Always `authentication`.
    #[serde(rename = "taskType")]
    pub task_type: tag::Authentication,
    /// The API key (redacted in `Debug`).
    #[serde(rename = "apiKey")]
    pub api_key: ApiKey,
    /// The session to resume, if any.
    #[serde(rename = "connectionSessionUUID", default, skip_serializing_if = "Option::is_none")]
    pub connection_session_uuid: Option<String>,
}

impl Authentication {
    /// Authenticates, resuming `session` when given.
    pub fn new(api_key: ApiKey, session: Option<String>) -> Self {
        Authentication { task_type: tag::Authentication, api_key, connection_session_uuid: session }
    }
}

/// `{"taskType":"ping","ping":true}`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ping {
    /// Always `ping`.
    #[serde(rename = "taskType")]
    pub task_type: tag::Ping,
    /// Always true.
    pub ping: bool,
}

impl Default for Ping {
    fn default() -> Self {
        Ping { task_type: tag::Ping, ping: true }
    }
}

/// `{"taskType":"getResponse","taskUUID":…}`: every result of a task so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GetResponse {
    /// Always `getResponse`.
    #[serde(rename = "taskType")]
    pub task_type: tag::GetResponse,
    /// The original task's UUID.
    #[serde(rename = "taskUUID")]
    pub task_uuid: Uuid,
}

impl GetResponse {
    /// Asks for the results of `task_uuid`.
    pub fn new(task_uuid: Uuid) -> Self {
        GetResponse { task_type: tag::GetResponse, task_uuid }
    }
}

/// `{"taskType":"imageUpload","taskUUID":…,"image":…}`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageUpload {
    /// Always `imageUpload`.
    #[serde(rename = "taskType")]
    pub task_type: tag::ImageUpload,
    /// The task's UUID.
    #[serde(rename = "taskUUID")]
    pub task_uuid: Uuid,
    /// A data URI, bare base64 or a URL.
    pub image: String,
}

impl ImageUpload {
    /// Uploads `image` (a data URI, base64 or URL) under a new task UUID.
    pub fn new(image: impl Into<String>) -> Self {
        ImageUpload { task_type: tag::ImageUpload, task_uuid: Uuid::new_v4(), image: image.into() }
    }
}

/// `mediaStorage` operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaOperation {
    /// Store `media`.
    Upload,
    /// Delete the stored media named by `media` (a mediaUUID).
    Delete,
}

/// `{"taskType":"mediaStorage","taskUUID":…,"operation":…,"media":…}`
///
/// Both operations carry `media`: the data to upload, or the mediaUUID to delete — the shape
/// Runware's SDKs send (the JavaScript SDK's `mediaStorage({media, operation})`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MediaStorage {
    /// Always `mediaStorage`.
    #[serde(rename = "taskType")]
    pub task_type: tag::MediaStorage,
    /// The task's UUID.
    #[serde(rename = "taskUUID")]
    pub task_uuid: Uuid,
    /// upload or delete.
    pub operation: MediaOperation,
    /// The media to upload (data URI, base64 or URL), or the mediaUUID to delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<String>,
    /// A mediaUUID given under its own name, as some servers also accept for a delete;
    /// [`MediaStorage::delete`] sends `media` instead and leaves this empty.
    #[serde(rename = "mediaUUID", default, skip_serializing_if = "Option::is_none")]
    pub media_uuid: Option<String>,
}

impl MediaStorage {
    /// Stores `media` under a new task UUID.
    pub fn upload(media: impl Into<String>) -> Self {
        MediaStorage {
            task_type: tag::MediaStorage,
            task_uuid: Uuid::new_v4(),
            operation: MediaOperation::Upload,
            media: Some(media.into()),
            media_uuid: None,
        }
    }

    /// Deletes the stored media `media_uuid` (sent as `media`, as Runware's SDKs do).
    pub fn delete(media_uuid: impl Into<String>) -> Self {
        MediaStorage {
            task_type: tag::MediaStorage,
            task_uuid: Uuid::new_v4(),
            operation: MediaOperation::Delete,
            media: Some(media_uuid.into()),
            media_uuid: None,
        }
    }
}

/// Any other task, as a JSON object with a `taskType` and a UUID `taskUUID`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct RawTask {
    object: Map<String, Value>,
    #[serde(skip)]
    task_uuid: Uuid,
}

impl RawTask {
    /// Checks that `value` is an object with a string `taskType` and a UUID `taskUUID`.
    pub fn new(value: Value) -> Result<RawTask, ValidationError> {
        let Value::Object(object) = value else {
            return Err(Violation::new("task", "must be a JSON object", short_json(&value)).into());
        };
        let mut v = Vec::new();
        match object.get("taskType") {
            Some(Value::String(t)) if !t.is_empty() => {}
            Some(other) => v.push(Violation::new("taskType", "must be a non-empty string", short_json(other))),
            None => v.push(Violation::new("taskType", "is required", "nothing")),
        }
        let task_uuid = match object.get("taskUUID") {
            Some(Value::String(s)) => match Uuid::parse_str(s) {
                Ok(u) => Some(u),
                Err(_) => {
                    v.push(Violation::new("taskUUID", "must be a UUID", s));
                    None
                }
            },
            Some(other) => {
                v.push(Violation::new("taskUUID", "must be a UUID string", short_json(other)));
                None
            }
            None => {
                v.push(Violation::new("taskUUID", "is required", "nothing"));
                None
            }
        };
        ValidationError::from_violations(v)?;
        Ok(RawTask { object, task_uuid: task_uuid.unwrap_or_default() })
    }

    /// Like [`RawTask::new`], but first sets a fresh `taskUUID` when none is given.
    pub fn with_generated_uuid(mut value: Value) -> Result<RawTask, ValidationError> {
        if let Value::Object(o) = &mut value {
            o.entry("taskUUID").or_insert_with(|| Value::String(Uuid::new_v4().to_string()));
        }
        RawTask::new(value)
    }

    /// The task's UUID.
    pub fn task_uuid(&self) -> Uuid {
        self.task_uuid
    }

    /// The task type.
    pub fn task_type(&self) -> &str {
        self.object.get("taskType").and_then(Value::as_str).unwrap_or_default()
    }

    /// The JSON object.
    pub fn as_object(&self) -> &Map<String, Value> {
        &self.object
    }

    /// How many results complete the task, by task type:
    ///
    /// | taskType | results |
    /// |---|---|
    /// | `promptEnhance` | `promptVersions` (default 1) |
    /// | `imageInference`, `photoMaker`, `imageCaption`… and any other with `numberResults` | `numberResults` (default 1) |
    /// | anything else | 1 |
    pub fn expected_results(&self) -> u32 {
        let count = |field: &str| {
            self.object.get(field).and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0)
        };
        match self.task_type() {
            "promptEnhance" => count("promptVersions").unwrap_or(1),
            _ => count("numberResults").unwrap_or(1),
        }
    }

    /// True when the task asks for `deliveryMethod: "async"`: its results are
    /// fetched by polling with `getResponse`.
    pub fn is_async(&self) -> bool {
        self.object.get("deliveryMethod").and_then(Value::as_str) == Some("async")
    }
}

impl<'de> Deserialize<'de> for RawTask {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RawTask::new(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

pub(crate) fn short_json(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 { format!("{}…", &s[..s.floor_char_boundary(80)]) } else { s }
}

/// One client task: the typed ones, or any other as raw JSON.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ClientTask {
    /// `authentication`
    Authentication(Authentication),
    /// `ping`
    Ping(Ping),
    /// `imageInference`
    ImageInference(Box<ImageInference>),
    /// `imageUpload`
    ImageUpload(ImageUpload),
    /// `mediaStorage`
    MediaStorage(MediaStorage),
    /// `getResponse`
    GetResponse(GetResponse),
    /// Anything else.
    Raw(RawTask),
}

impl ClientTask {
    /// The task's UUID (`None` for authentication and ping).
    pub fn task_uuid(&self) -> Option<Uuid> {
        match self {
            ClientTask::Authentication(_) | ClientTask::Ping(_) => None,
            ClientTask::ImageInference(t) => Some(t.task_uuid),
            ClientTask::ImageUpload(t) => Some(t.task_uuid),
            ClientTask::MediaStorage(t) => Some(t.task_uuid),
            ClientTask::GetResponse(t) => Some(t.task_uuid),
            ClientTask::Raw(t) => Some(t.task_uuid()),
        }
    }

    /// The wire name of the task type.
    pub fn task_type(&self) -> &str {
        match self {
            ClientTask::Authentication(_) => tag::Authentication::NAME,
            ClientTask::Ping(_) => tag::Ping::NAME,
            ClientTask::ImageInference(_) => tag::ImageInference::NAME,
            ClientTask::ImageUpload(_) => tag::ImageUpload::NAME,
            ClientTask::MediaStorage(_) => tag::MediaStorage::NAME,
            ClientTask::GetResponse(_) => tag::GetResponse::NAME,
            ClientTask::Raw(t) => t.task_type(),
        }
    }

    /// Decodes one task object by its `taskType`; unknown types become [`ClientTask::Raw`].
    pub fn from_value(value: Value) -> Result<ClientTask, serde_json::Error> {
        use serde::de::Error as _;
        let kind = value.get("taskType").and_then(Value::as_str).unwrap_or_default().to_owned();
        Ok(match kind.as_str() {
            tag::Authentication::NAME => ClientTask::Authentication(serde_json::from_value(value)?),
            tag::Ping::NAME => ClientTask::Ping(serde_json::from_value(value)?),
            tag::ImageInference::NAME => ClientTask::ImageInference(Box::new(serde_json::from_value(value)?)),
            tag::ImageUpload::NAME => ClientTask::ImageUpload(serde_json::from_value(value)?),
            tag::MediaStorage::NAME => ClientTask::MediaStorage(serde_json::from_value(value)?),
            tag::GetResponse::NAME => ClientTask::GetResponse(serde_json::from_value(value)?),
            _ => ClientTask::Raw(RawTask::new(value).map_err(serde_json::Error::custom)?),
        })
    }
}

impl<'de> Deserialize<'de> for ClientTask {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ClientTask::from_value(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl From<ImageInference> for ClientTask {
    fn from(t: ImageInference) -> Self {
        ClientTask::ImageInference(Box::new(t))
    }
}

impl From<super::KontextTask> for ClientTask {
    fn from(t: super::KontextTask) -> Self {
        ClientTask::ImageInference(Box::new(t.into_inner()))
    }
}

/// Serializes tasks as one client frame: a JSON array.
pub fn encode_frame(tasks: &[ClientTask]) -> Result<String, serde_json::Error> {
    serde_json::to_string(tasks)
}
