//! Batch input: one task object per line, in the wire format's field names.
//!
//! - `taskType` defaults to `imageInference`, `model` to `bfl:3@1`.
//! - `id` (optional, a string unique in the file) names the line; it is the
//!   line's identity in the journal and is not sent. Without one, a line's
//!   identity is a hash of its content (see `batch::identity`).
//! - `taskUUID` is optional: it is then the taskUUID of the line's first attempt;
//!   without one, attempts get UUIDs derived from the batch id and the line's identity.
//! - `inputs.referenceImages` may name local files (relative to the input file's
//!   directory); they are sent as data URIs.
//! - `size` (`"1248x832"` or `"3:2"`) may stand for `width` and `height`.
//!
//! `imageInference` lines are parsed as [`ImageInference`] and, for `bfl:3@1`,
//! checked against every Kontext \[pro\] rule; other task types go as [`RawTask`].

/// A task ready to submit: the job runner's task.
pub use runware_jobs::JobTask as Task;
use runware_ws::protocol::kontext::{MODEL, rules};
use runware_ws::protocol::{
    DeliveryMethod, ImageInference, KontextSize, KontextTask, OutputFormat, OutputType, ProviderSettings, RawTask,
    ReferenceImage, Safety, ValidationError, Violation,
};
use serde_json::{Map, Value};
use std::path::Path;
use uuid::Uuid;

/// Why a line cannot run.
#[derive(Clone, Debug, PartialEq)]
pub struct LineError {
    /// `invalidJson`, `invalidTask` or `invalidParameter`.
    pub code: &'static str,
    /// The parameter at fault (the first one when several are).
    pub parameter: Option<String>,
    /// What is wrong, every violation.
    pub message: String,
}

impl LineError {
    fn json(e: &serde_json::Error) -> LineError {
        let text = e.to_string();
        let what = text.rsplit_once(" at line ").map(|(w, _)| w).unwrap_or(&text);
        LineError {
            code: "invalidJson",
            parameter: None,
            message: format!("malformed JSON at column {}: {what}", e.column()),
        }
    }

    pub fn violations(e: ValidationError) -> LineError {
        let parameter = e.violations.first().map(|v| v.parameter.clone());
        let message = e.violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        LineError { code: "invalidParameter", parameter, message }
    }

    /// `line 7: invalid parameter width: …` / `line 3: malformed JSON at column 9: …`
    pub fn describe(&self, line: usize) -> String {
        match self.code {
            "invalidParameter" => format!("line {line}: invalid parameter {}", self.message),
            _ => format!("line {line}: {}", self.message),
        }
    }
}

/// Parses a line's JSON. The value is then given to [`task_uuid_of`] and [`build`].
pub fn parse_json(text: &str) -> Result<Value, LineError> {
    serde_json::from_str(text).map_err(|e| LineError::json(&e))
}

/// The line's own `taskUUID`, if it has a valid one; `Err` if it has an invalid one.
pub fn task_uuid_of(value: &Value) -> Result<Option<Uuid>, LineError> {
    match value.get("taskUUID") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Uuid::parse_str(s)
            .map(Some)
            .map_err(|_| LineError::violations(Violation::new("taskUUID", "must be a UUID", s).into())),
        Some(other) => {
            Err(LineError::violations(Violation::new("taskUUID", "must be a UUID string", short(other)).into()))
        }
    }
}

/// Builds the task of a parsed line under `task_uuid`; local reference images are
/// read relative to `base_dir` (blocking).
pub fn build(value: Value, task_uuid: Uuid, base_dir: &Path) -> Result<Task, LineError> {
    let Value::Object(mut obj) = value else {
        return Err(LineError {
            code: "invalidTask",
            parameter: None,
            message: format!("a line must be a JSON object, got {}", short(&value)),
        });
    };
    let task_type = match obj.get("taskType") {
        None | Some(Value::Null) => "imageInference".to_string(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(other) => {
            let v = Violation::new("taskType", "must be a non-empty string", short(other));
            return Err(LineError::violations(v.into()));
        }
    };
    // `id` names the line for the journal; it is not part of the task.
    obj.remove("id");
    obj.insert("taskType".into(), Value::String(task_type.clone()));
    obj.insert("taskUUID".into(), Value::String(task_uuid.to_string()));
    if task_type != "imageInference" {
        return RawTask::new(Value::Object(obj)).map(Task::Raw).map_err(LineError::violations);
    }
    obj.entry("model").or_insert_with(|| Value::String(MODEL.to_string()));
    // The batch reports what it spent: the server says what each image cost unless
    // the line says otherwise.
    obj.entry("includeCost").or_insert(Value::Bool(true));
    let kontext = obj.get("model").and_then(Value::as_str) == Some(MODEL);
    let mut v = Vec::new();
    expand_size(&mut obj, &mut v);
    resolve_references(&mut obj, base_dir, &mut v);
    check_types(&obj, kontext, &mut v);
    if !v.is_empty() {
        return Err(LineError::violations(ValidationError { violations: v }));
    }
    let task: ImageInference = serde_json::from_value(Value::Object(obj)).map_err(|e| {
        let text = e.to_string();
        let parameter = text
            .split_once("missing field `")
            .and_then(|(_, rest)| rest.split_once('`'))
            .map(|(field, _)| field.to_string())
            .unwrap_or_else(|| "task".to_string());
        LineError::violations(Violation::new(parameter, text, "the line").into())
    })?;
    if kontext {
        let task = KontextTask::try_from(task).map_err(LineError::violations)?;
        Ok(Task::Kontext(Box::new(task)))
    } else {
        Ok(Task::Inference(Box::new(task)))
    }
}

/// `size: "1248x832" | "3:2"` → `width`, `height`.
fn expand_size(obj: &mut Map<String, Value>, v: &mut Vec<Violation>) {
    let Some(size) = obj.remove("size") else { return };
    let Some(text) = size.as_str() else {
        v.push(Violation::new("size", "must be a string such as \"1248x832\" or \"3:2\"", short(&size)));
        return;
    };
    match text.parse::<KontextSize>() {
        Ok(_) if obj.contains_key("width") || obj.contains_key("height") => {
            v.push(Violation::new("size", "give either size or width and height, not both", text));
        }
        Ok(k) => {
            let (w, h) = k.dimensions();
            obj.insert("width".into(), w.into());
            obj.insert("height".into(), h.into());
        }
        Err(mut violation) => {
            violation.parameter = "size".into();
            v.push(violation);
        }
    }
}

/// Local files in `inputs.referenceImages` become data URIs; other strings are checked.
fn resolve_references(obj: &mut Map<String, Value>, base_dir: &Path, v: &mut Vec<Violation>) {
    let Some(inputs) = obj.get_mut("inputs") else { return };
    let Some(inputs) = inputs.as_object_mut() else {
        v.push(Violation::new("inputs", "must be an object", "a non-object"));
        return;
    };
    let Some(list) = inputs.get_mut("referenceImages") else { return };
    let Some(list) = list.as_array_mut() else {
        v.push(Violation::new("inputs.referenceImages", "must be an array of strings", "a non-array"));
        return;
    };
    for (i, item) in list.iter_mut().enumerate() {
        let parameter = format!("inputs.referenceImages[{i}]");
        let Some(text) = item.as_str() else {
            v.push(Violation::new(&parameter, "must be a string", short(item)));
            continue;
        };
        match resolve_reference(text, base_dir, &parameter) {
            Ok(r) => *item = Value::String(r.as_wire().into_owned()),
            Err(violation) => v.push(violation),
        }
    }
}

/// A UUID, URL, data URI or base64 as it is; anything else is a file path.
pub fn resolve_reference(text: &str, base_dir: &Path, parameter: &str) -> Result<ReferenceImage, Violation> {
    if is_remote_or_inline(text) {
        return ReferenceImage::parse(text, parameter);
    }
    if let Ok(r) = ReferenceImage::parse(text, parameter) {
        return Ok(r);
    }
    let path = Path::new(text.trim());
    let full = if path.is_absolute() { path.to_path_buf() } else { base_dir.join(path) };
    ReferenceImage::from_path(&full, parameter)
}

/// JSON types and ranges, so that every broken field is named (serde would stop
/// at the first and often without its name).
fn check_types(obj: &Map<String, Value>, kontext: bool, v: &mut Vec<Violation>) {
    match obj.get("positivePrompt") {
        Some(Value::String(_)) => {}
        None => v.push(Violation::new("positivePrompt", "is required", "nothing")),
        Some(other) => v.push(Violation::new("positivePrompt", "must be a string", short(other))),
    }
    if let Some(m) = obj.get("model").filter(|m| !m.is_string()) {
        v.push(Violation::new("model", "must be a string", short(m)));
    }
    let int = |name: &str, v: &mut Vec<Violation>| -> Option<i128> {
        let value = obj.get(name)?;
        match value.as_i64().map(i128::from).or_else(|| value.as_u64().map(i128::from)) {
            Some(n) => Some(n),
            None => {
                v.push(Violation::new(name, "must be an integer", short(value)));
                None
            }
        }
    };
    let fits = |name: &str, n: i128, max: i128, v: &mut Vec<Violation>| {
        if !(0..=max).contains(&n) {
            v.push(Violation::new(name, format!("must be between 0 and {max}"), n));
        }
    };
    let (w, h) = (int("width", v), int("height", v));
    let (seed, n, q, ttl) = (int("seed", v), int("numberResults", v), int("outputQuality", v), int("ttl", v));
    let mut push = |r: Result<(), Violation>| {
        if let Err(e) = r {
            v.push(e);
        }
    };
    if kontext {
        if w.is_some() || h.is_some() {
            push(rules::dimensions(w, h).map(|_| ()));
        }
        if let Some(s) = seed {
            push(rules::seed(s));
        }
        if let Some(n) = n {
            push(rules::number_results(n));
        }
        if let Some(q) = q {
            push(rules::output_quality(q));
        }
        if let Some(t) = ttl.filter(|t| *t < rules::TTL_MIN) {
            push(Err(Violation::new("ttl", format!("must be at least {} seconds", rules::TTL_MIN), t)));
        }
    }
    for (name, value, max) in [
        ("width", w, i128::from(u32::MAX)),
        ("height", h, i128::from(u32::MAX)),
        ("seed", seed, rules::SEED_MAX),
        ("numberResults", n, i128::from(u32::MAX)),
        ("outputQuality", q, i128::from(u32::MAX)),
        ("ttl", ttl, i128::from(u64::MAX)),
    ] {
        if let Some(x) = value
            && !v.iter().any(|seen| seen.parameter == name)
        {
            fits(name, x, max, v);
        }
    }
    enum_field::<OutputType>(obj, "outputType", "URL, base64Data or dataURI", v);
    enum_field::<OutputFormat>(obj, "outputFormat", "JPG, PNG or WEBP", v);
    enum_field::<DeliveryMethod>(obj, "deliveryMethod", "sync or async", v);
    for name in ["webhookURL", "uploadEndpoint"] {
        if let Some(x) = obj.get(name).filter(|x| !x.is_string()) {
            v.push(Violation::new(name, "must be a string", short(x)));
        }
    }
    if let Some(x) = obj.get("includeCost").filter(|x| !x.is_boolean()) {
        v.push(Violation::new("includeCost", "must be true or false", short(x)));
    }
    if let Some(x) = obj.get("safety")
        && let Err(e) = serde_json::from_value::<Safety>(x.clone())
    {
        v.push(Violation::new("safety", format!("must be {{checkContent: bool, mode: none|fast}} ({e})"), short(x)));
    }
    if let Some(x) = obj.get("providerSettings") {
        let tolerance = x.pointer("/bfl/safetyTolerance");
        let tolerance_int = tolerance.and_then(|t| t.as_i64().map(i128::from).or_else(|| t.as_u64().map(i128::from)));
        match (tolerance, tolerance_int) {
            (Some(_), Some(t)) if kontext => push_all(v, rules::safety_tolerance(t)),
            (Some(_), Some(t)) if !(0..=255).contains(&t) => {
                v.push(Violation::new("providerSettings.bfl.safetyTolerance", "must be between 0 and 255", t))
            }
            (Some(t), None) => {
                v.push(Violation::new("providerSettings.bfl.safetyTolerance", "must be an integer", short(t)))
            }
            _ => {}
        }
        if !v.iter().any(|seen| seen.parameter.starts_with("providerSettings"))
            && let Err(e) = serde_json::from_value::<ProviderSettings>(x.clone())
        {
            v.push(Violation::new("providerSettings", format!("is malformed ({e})"), short(x)));
        }
    }
}

fn push_all(v: &mut Vec<Violation>, r: Result<(), Violation>) {
    if let Err(e) = r {
        v.push(e);
    }
}

fn enum_field<T: serde::de::DeserializeOwned>(
    obj: &Map<String, Value>,
    name: &str,
    allowed: &str,
    v: &mut Vec<Violation>,
) {
    if let Some(x) = obj.get(name)
        && serde_json::from_value::<T>(x.clone()).is_err()
    {
        v.push(Violation::new(name, format!("must be {allowed}"), short(x)));
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 { format!("{}…", &s[..s.floor_char_boundary(60)]) } else { s }
}

/// URLs, data URIs and image UUIDs go to the API as they are; anything else is a local file.
pub fn is_remote_or_inline(image: &str) -> bool {
    let t = image.trim();
    let lower = t.get(..8).unwrap_or(t).to_ascii_lowercase();
    lower.starts_with("http://")
        || lower.starts_with("https://")
        || lower.starts_with("data:")
        || (t.len() == 36 && Uuid::parse_str(t).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn build_line(value: Value) -> Result<Task, LineError> {
        build(value, Uuid::new_v4(), Path::new("."))
    }

    #[test]
    fn defaults_are_applied_and_rules_checked() {
        let t = build_line(json!({"positivePrompt":"make it snow","size":"3:2","numberResults":2})).unwrap();
        let Task::Kontext(t) = t else { panic!("kontext") };
        assert_eq!((t.width, t.height, t.model.as_str()), (Some(1248), Some(832), MODEL));
        assert_eq!(t.expected_results(), 2);

        let e = build_line(json!({"positivePrompt":"make it snow","width":1000,"height":1000})).unwrap_err();
        assert_eq!(e.parameter.as_deref(), Some("width"));
        let e = build_line(json!({"positivePrompt":"make it snow","size":"7x7"})).unwrap_err();
        assert_eq!(e.parameter.as_deref(), Some("size"));
        let e = build_line(json!({"positivePrompt":"ok ok","size":"1:1","outputQuality":"high"})).unwrap_err();
        assert_eq!(e.parameter.as_deref(), Some("outputQuality"));
        let e = build_line(json!({"positivePrompt":"ok ok","size":"1:1","numberResults":0})).unwrap_err();
        assert_eq!(e.parameter.as_deref(), Some("numberResults"));
        let e = build_line(json!({"size":"1:1"})).unwrap_err();
        assert_eq!(e.parameter.as_deref(), Some("positivePrompt"));
        let e = build_line(
            json!({"positivePrompt":"ok ok","size":"1:1","inputs":{"referenceImages":["nope/missing.png"]}}),
        )
        .unwrap_err();
        assert_eq!(e.parameter.as_deref(), Some("inputs.referenceImages[0]"));
        assert!(e.message.contains("does not exist"), "{}", e.message);
        let e =
            build_line(json!({"positivePrompt":"ok ok","size":"1:1","providerSettings":{"bfl":{"safetyTolerance":9}}}))
                .unwrap_err();
        assert_eq!(e.parameter.as_deref(), Some("providerSettings.bfl.safetyTolerance"));
    }

    #[test]
    fn other_task_types_go_raw_and_json_errors_name_the_column() {
        let t = build_line(json!({"taskType":"imageUpload","image":"https://example.com/a.png"})).unwrap();
        assert!(matches!(t, Task::Raw(_)));
        let e = parse_json("{\"positivePrompt\": nope}").unwrap_err();
        assert_eq!(e.code, "invalidJson");
        assert!(e.message.contains("column"), "{}", e.message);
        assert!(!e.describe(4).contains("line 1"), "{}", e.describe(4));
    }
}
