//! The task of a job, and the task of each of its attempts.

use runware_ws::protocol::pricing;
use runware_ws::protocol::{ImageInference, KontextTask, RawTask, ValidationError};
use serde_json::Value;
use uuid::Uuid;

/// `task` under `task_uuid`, asking for `count` results, with `seed` when given.
fn adjusted(task: &ImageInference, task_uuid: Uuid, count: u32, seed: Option<u64>) -> ImageInference {
    let mut t = task.clone();
    t.task_uuid = task_uuid;
    if count != t.expected_results() {
        t.number_results = Some(count);
    }
    if seed.is_some() {
        t.seed = seed;
    }
    t
}

/// The task of a job: what each of its attempts sends, under the attempt's
/// taskUUID, for the results still missing.
#[derive(Clone, Debug)]
pub enum JobTask {
    /// `imageInference` for `bfl:3@1`, every Kontext rule checked.
    Kontext(Box<KontextTask>),
    /// `imageInference` for another model.
    Inference(Box<ImageInference>),
    /// Any other task type.
    Raw(RawTask),
}

impl JobTask {
    /// The file extension to use when an image's bytes are not recognised.
    pub fn fallback_ext(&self) -> &'static str {
        match self {
            JobTask::Kontext(t) => t.output_format().extension(),
            JobTask::Inference(t) => t.output_format().extension(),
            JobTask::Raw(r) => {
                match r.as_object().get("outputFormat").and_then(Value::as_str).map(str::to_ascii_uppercase).as_deref()
                {
                    Some("PNG") => "png",
                    Some("WEBP") => "webp",
                    _ => "jpg",
                }
            }
        }
    }

    /// How many results the line asks for (`numberResults`, or what the task type
    /// counts for a raw task).
    pub fn wanted(&self) -> u32 {
        match self {
            JobTask::Kontext(t) => t.expected_results(),
            JobTask::Inference(t) => t.expected_results(),
            JobTask::Raw(r) => r.expected_results(),
        }
    }

    /// The model, for image tasks.
    pub fn model(&self) -> Option<&str> {
        match self {
            JobTask::Kontext(t) => Some(&t.model),
            JobTask::Inference(t) => Some(&t.model),
            JobTask::Raw(r) if r.task_type() == "imageInference" => r.as_object().get("model").and_then(Value::as_str),
            JobTask::Raw(_) => None,
        }
    }

    /// The estimated cost of `count` results, USD; `None` when the model's price is
    /// unknown (see `runware_ws::protocol::pricing`).
    pub fn estimate(&self, count: u32) -> Option<f64> {
        self.model().and_then(pricing::price_per_image).map(|p| p * f64::from(count))
    }

    /// `WxH`, for image tasks that state both.
    pub fn size(&self) -> Option<String> {
        let (w, h) = match self {
            JobTask::Kontext(t) => (t.width, t.height),
            JobTask::Inference(t) => (t.width, t.height),
            JobTask::Raw(r) => {
                let o = r.as_object();
                let dim = |k: &str| o.get(k).and_then(Value::as_u64).and_then(|v| u32::try_from(v).ok());
                (dim("width"), dim("height"))
            }
        };
        Some(format!("{}x{}", w?, h?))
    }

    /// The seed the line sets, if any.
    pub fn seed(&self) -> Option<u64> {
        match self {
            JobTask::Kontext(t) => t.seed,
            JobTask::Inference(t) => t.seed,
            JobTask::Raw(r) => r.as_object().get("seed").and_then(Value::as_u64),
        }
    }

    /// The task of one attempt: the line's task under `task_uuid`, asking for
    /// `count` results, with `seed` when the line sets one.
    pub fn for_attempt(&self, task_uuid: Uuid, count: u32, seed: Option<u64>) -> Result<JobTask, ValidationError> {
        match self {
            // Only the taskUUID changes: the validated task stays validated.
            JobTask::Kontext(t) if count == t.expected_results() && seed.is_none() => {
                Ok(JobTask::Kontext(Box::new(t.as_ref().clone().with_task_uuid(task_uuid))))
            }
            // A new count or seed is checked against the rules again.
            JobTask::Kontext(t) => KontextTask::try_from(adjusted(t.as_inference(), task_uuid, count, seed))
                .map(|t| JobTask::Kontext(Box::new(t))),
            JobTask::Inference(t) => Ok(JobTask::Inference(Box::new(adjusted(t, task_uuid, count, seed)))),
            JobTask::Raw(r) => {
                let mut obj = r.as_object().clone();
                obj.insert("taskUUID".into(), Value::String(task_uuid.to_string()));
                if count != r.expected_results() {
                    let field = if obj.contains_key("promptVersions") { "promptVersions" } else { "numberResults" };
                    obj.insert(field.into(), Value::from(count));
                }
                if let Some(s) = seed.filter(|_| obj.contains_key("seed")) {
                    obj.insert("seed".into(), Value::from(s));
                }
                RawTask::new(Value::Object(obj)).map(JobTask::Raw)
            }
        }
    }
}

impl From<KontextTask> for JobTask {
    fn from(t: KontextTask) -> Self {
        JobTask::Kontext(Box::new(t))
    }
}

impl From<ImageInference> for JobTask {
    fn from(t: ImageInference) -> Self {
        JobTask::Inference(Box::new(t))
    }
}

impl From<RawTask> for JobTask {
    fn from(t: RawTask) -> Self {
        JobTask::Raw(t)
    }
}

impl From<JobTask> for runware_ws::client::Task {
    fn from(t: JobTask) -> Self {
        match t {
            JobTask::Kontext(k) => (*k).into(),
            JobTask::Inference(i) => (*i).into(),
            JobTask::Raw(r) => r.into(),
        }
    }
}

impl JobTask {
    /// The task's JSON as it would be sent (for stores that keep tasks).
    pub fn to_json(&self) -> Value {
        match self {
            JobTask::Kontext(t) => serde_json::to_value(t.as_inference()).unwrap_or(Value::Null),
            JobTask::Inference(t) => serde_json::to_value(t.as_ref()).unwrap_or(Value::Null),
            JobTask::Raw(r) => Value::Object(r.as_object().clone()),
        }
    }
}
