//! What a store records of a job, in the JSON of the batch journal (format 2):
//! the attempt before it is sent, each image as it arrives, the failures the
//! server reported, the outcome, and the references uploaded once. Every store
//! keeps these same records; [`JobState`] is what they say of one job.

use crate::identity::JobKey;
use runware_ws::client::ImageResult;
use serde::{Deserialize, Serialize};
use std::path::Path;
use uuid::Uuid;

/// `ok` or `error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every result arrived and was saved.
    Ok,
    /// The line or the task failed.
    Error,
}

/// One image of a task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `imageUUID`
    #[serde(rename = "imageUUID")]
    pub image_uuid: String,
    /// `imageURL`, for URL results.
    #[serde(rename = "imageURL", default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    /// Where the image was saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The seed used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Cost in USD (with `includeCost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    /// The server flagged the image (`NSFWContent`).
    #[serde(rename = "NSFWContent", default, skip_serializing_if = "Option::is_none")]
    pub nsfw_content: Option<bool>,
}

impl ImageRecord {
    /// The record of an image saved at `path` (if it was).
    pub fn new(img: &ImageResult, path: Option<&Path>) -> ImageRecord {
        ImageRecord {
            image_uuid: img.image_uuid.to_string(),
            image_url: img.item.image_url.as_ref().map(|u| u.to_string()),
            path: path.map(|p| p.display().to_string()),
            seed: img.seed,
            cost: img.cost,
            nsfw_content: img.nsfw_content,
        }
    }
}

/// The first record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    /// The format version ([`FORMAT_VERSION`](crate::store::journal::FORMAT_VERSION)).
    pub version: u32,
    /// Made on the first run; part of every derived taskUUID.
    pub batch_id: Uuid,
    /// The URL, or [`EMBEDDED_ENDPOINT`](crate::store::journal::EMBEDDED_ENDPOINT).
    pub endpoint: String,
    /// When the batch was created (Unix milliseconds).
    pub created_at_ms: u64,
}

/// An attempt, journaled before it is sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRecord {
    /// The line's identity.
    pub key: JobKey,
    /// The line number when it was sent (for people; identity is `key`).
    pub line: usize,
    /// 1-based.
    pub attempt: u32,
    /// The attempt's taskUUID.
    #[serde(rename = "taskUUID")]
    pub task_uuid: Uuid,
    /// Results the attempt asks for.
    pub number_results: u32,
    /// The attempt's seed, when the line sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// When it was first sent (Unix milliseconds).
    pub sent_at_ms: u64,
}

/// An image, journaled as soon as it is saved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageEntry {
    /// The line's identity.
    pub key: JobKey,
    /// The line number.
    pub line: usize,
    /// The attempt that produced it.
    pub attempt: u32,
    /// The attempt's taskUUID.
    #[serde(rename = "taskUUID")]
    pub task_uuid: Uuid,
    /// The image.
    #[serde(flatten)]
    pub image: ImageRecord,
}

/// The server reported that an attempt failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptFailed {
    /// The line's identity.
    pub key: JobKey,
    /// The line number.
    pub line: usize,
    /// The attempt.
    pub attempt: u32,
    /// Its taskUUID.
    #[serde(rename = "taskUUID")]
    pub task_uuid: Uuid,
    /// The server's code.
    pub code: String,
    /// The server's message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// A line's outcome (format 1's record, with the line's identity).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The line's identity (absent in format 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<JobKey>,
    /// The input line number (1-based).
    pub line: usize,
    /// The taskUUID of the last attempt.
    #[serde(rename = "taskUUID")]
    pub task_uuid: Uuid,
    /// `ok` or `error`.
    pub status: Status,
    /// Attempts made (absent in format 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Every image of the line, over all its attempts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageRecord>,
    /// Result items of other task types, as received.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<serde_json::Value>,
    /// The error code (the server's, or `invalidJson` / `invalidParameter` / … for bad lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The parameter at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
    /// From the first submission in this run to the last result.
    #[serde(rename = "latencyMs", default, skip_serializing_if = "Option::is_none")]
    /// Milliseconds, to the microsecond (three decimals; whole numbers in older journals).
    pub latency_ms: Option<f64>,
    /// True when running the line again as it is cannot help (bad input, refused
    /// content): a resumed batch skips it.
    #[serde(rename = "final", default, skip_serializing_if = "std::ops::Not::not")]
    pub is_final: bool,
}

impl Record {
    /// An `ok` record.
    pub fn ok(key: JobKey, line: usize, task_uuid: Uuid) -> Record {
        Record {
            key: Some(key),
            line,
            task_uuid,
            status: Status::Ok,
            attempts: None,
            images: Vec::new(),
            results: Vec::new(),
            code: None,
            message: None,
            parameter: None,
            latency_ms: None,
            is_final: false,
        }
    }

    /// An `error` record.
    pub fn error(
        key: JobKey,
        line: usize,
        task_uuid: Uuid,
        code: impl Into<String>,
        message: impl Into<String>,
        parameter: Option<String>,
        is_final: bool,
    ) -> Record {
        Record {
            status: Status::Error,
            code: Some(code.into()),
            message: Some(message.into()),
            parameter,
            is_final,
            ..Record::ok(key, line, task_uuid)
        }
    }

    /// True when a resumed batch must not run this line again.
    pub fn is_done(&self) -> bool {
        self.status == Status::Ok || self.is_final
    }
}

/// One journal line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Entry {
    /// The first record.
    Header(Header),
    /// An attempt about to be sent.
    Attempt(AttemptRecord),
    /// An image saved.
    Image(ImageEntry),
    /// An attempt the server failed.
    AttemptFailed(AttemptFailed),
    /// A line's outcome.
    Result(Record),
    /// A reference image uploaded once for the batch (`imageUpload`).
    Upload(UploadRecord),
}

impl Entry {
    /// The job the entry is about (`None` for the header, uploads and format-1 records).
    pub fn key(&self) -> Option<&str> {
        match self {
            Entry::Attempt(a) => Some(&a.key),
            Entry::Image(i) => Some(&i.key),
            Entry::AttemptFailed(f) => Some(&f.key),
            Entry::Result(r) => r.key.as_deref(),
            Entry::Header(_) | Entry::Upload(_) => None,
        }
    }
}

/// An entry serialized from a borrow: the same JSON as its [`Entry`].
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub(crate) enum EntryRef<'a> {
    Attempt(&'a AttemptRecord),
}

/// A reference uploaded for the batch: its content key and the imageUUID the
/// server gave it. A later run references it instead of uploading again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadRecord {
    /// `ReferenceCache::key` of the reference's content.
    pub key: Uuid,
    /// The imageUUID the server gave the upload.
    #[serde(rename = "imageUUID")]
    pub image_uuid: Uuid,
    /// When it was uploaded (ms since the epoch).
    pub at_ms: u64,
}

/// What a store's records say of one job.
#[derive(Clone, Debug, Default)]
pub struct JobState {
    /// Its latest attempt.
    pub attempt: Option<AttemptRecord>,
    /// The attempt numbers the server reported failed.
    pub failed: Vec<u32>,
    /// Its images, over all attempts, each once.
    pub images: Vec<ImageRecord>,
    /// Its latest outcome.
    pub result: Option<Record>,
}

impl JobState {
    /// The latest attempt, when its outcome is not known (sent, and neither failed
    /// nor finished): a run resends it under the same taskUUID.
    pub fn open_attempt(&self) -> Option<&AttemptRecord> {
        self.attempt.as_ref().filter(|a| !self.failed.contains(&a.attempt))
    }

    /// What `entry`, a record of this job, changes (for stores that keep their
    /// state in memory: an outcome's images are merged, not kept twice).
    pub fn note(&mut self, entry: &Entry) {
        match entry {
            Entry::Attempt(a) => {
                if self.attempt.as_ref().is_none_or(|old| a.attempt >= old.attempt) {
                    self.attempt = Some(a.clone());
                }
                if self.result.as_ref().is_some_and(|r| !r.is_done()) {
                    self.result = None;
                }
            }
            Entry::Image(i) => {
                if !self.images.iter().any(|have| have.image_uuid == i.image.image_uuid) {
                    self.images.push(i.image.clone());
                }
            }
            Entry::AttemptFailed(f) => {
                if !self.failed.contains(&f.attempt) {
                    self.failed.push(f.attempt);
                }
            }
            Entry::Result(r) => {
                for img in &r.images {
                    if !self.images.iter().any(|have| have.image_uuid == img.image_uuid) {
                        self.images.push(img.clone());
                    }
                }
                self.result = Some(Record {
                    key: r.key.clone(),
                    line: r.line,
                    task_uuid: r.task_uuid,
                    status: r.status,
                    attempts: r.attempts,
                    images: Vec::new(),
                    results: r.results.clone(),
                    code: r.code.clone(),
                    message: r.message.clone(),
                    parameter: r.parameter.clone(),
                    latency_ms: r.latency_ms,
                    is_final: r.is_final,
                });
            }
            Entry::Header(_) | Entry::Upload(_) => {}
        }
    }

    /// True when the job is over: done, or failed for good.
    pub fn is_done(&self) -> bool {
        self.result.as_ref().is_some_and(Record::is_done)
    }

    /// What `entry` (a record of this job) changes.
    pub fn apply(&mut self, entry: Entry) {
        match entry {
            Entry::Attempt(a) => {
                // A newer attempt supersedes the outcome of an earlier run.
                if self.attempt.as_ref().is_none_or(|old| a.attempt >= old.attempt) {
                    self.attempt = Some(a);
                }
                if self.result.as_ref().is_some_and(|r| !r.is_done()) {
                    self.result = None;
                }
            }
            Entry::Image(i) => {
                if !self.images.iter().any(|have| have.image_uuid == i.image.image_uuid) {
                    self.images.push(i.image);
                }
            }
            Entry::AttemptFailed(f) => {
                if !self.failed.contains(&f.attempt) {
                    self.failed.push(f.attempt);
                }
            }
            Entry::Result(r) => {
                for img in &r.images {
                    if !self.images.iter().any(|have| have.image_uuid == img.image_uuid) {
                        self.images.push(img.clone());
                    }
                }
                self.result = Some(r);
            }
            Entry::Header(_) | Entry::Upload(_) => {}
        }
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
