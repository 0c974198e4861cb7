//! Server-side checks of raw task JSON, with Runware-style error codes. The Kontext
//! rules themselves are `protocol::kontext::rules`, shared with the client.

// `ApiError` is large, but an error here is the end of a task's path: no hot loop
// carries it, so boxing would only add noise.
#![allow(clippy::result_large_err)]

use runware_ws::protocol::kontext::{MODEL, rules};
use runware_ws::protocol::{
    ApiError, DeliveryMethod, ErrorParameter, KontextSize, OutputFormat, OutputType, ReferenceImage,
};
use runware_ws::protocol::{Violation, tag};
use serde_json::{Map, Value, json};
use uuid::Uuid;

const DOCS: &str = "https://runware.ai/docs/models/bfl-flux-1-kontext-pro";
const ENHANCE_DOCS: &str = "https://runware.ai/docs/en/utilities/prompt-enhancer";

/// The `promptEnhance` task type (a raw task type for the client).
pub(crate) const PROMPT_ENHANCE: &str = "promptEnhance";
/// `promptVersions`: 1–5, default 1.
const PROMPT_VERSIONS: (i128, i128, i128) = (1, 5, 1);
/// `promptMaxLength`: 12–400, default 380.
const PROMPT_MAX_LENGTH: (i128, i128, i128) = (12, 400, 380);
/// The longest `prompt` of `promptEnhance` accepted.
const ENHANCE_PROMPT_MAX: usize = 3000;

/// A `promptEnhance` task that passed every check.
#[derive(Clone, Debug)]
pub(crate) struct EnhanceParams {
    pub task_uuid: Uuid,
    pub prompt: String,
    pub versions: u32,
    pub max_length: usize,
    pub include_cost: bool,
    pub delivery: DeliveryMethod,
}

/// A Kontext `imageInference` task that passed every check.
#[derive(Clone, Debug)]
pub(crate) struct InferenceParams {
    pub task_uuid: Uuid,
    pub width: u32,
    pub height: u32,
    pub seed: Option<u64>,
    pub number_results: u32,
    pub output_type: OutputType,
    pub output_format: OutputFormat,
    pub output_quality: u8,
    pub delivery: DeliveryMethod,
    pub webhook_url: Option<String>,
    pub upload_endpoint: Option<String>,
    pub ttl: Option<u64>,
    pub include_cost: bool,
    pub references: Vec<ReferenceImage>,
}

/// An error for task `uuid` of type `task_type`.
pub(crate) fn task_error(code: &str, message: impl Into<String>, task_type: &str, uuid: &str) -> ApiError {
    ApiError::new(code, message).for_task(task_type, uuid)
}

/// The task's `taskUUID`, or `missingTaskUUID` / `invalidTaskUUID`.
pub(crate) fn task_uuid(obj: &Map<String, Value>, task_type: &str) -> Result<Uuid, ApiError> {
    let err = |code: &str, message: String| {
        let mut e = ApiError::new(code, message).with_parameter("taskUUID");
        e.task_type = Some(task_type.to_string());
        e
    };
    match obj.get("taskUUID") {
        None | Some(Value::Null) => Err(err("missingTaskUUID", "taskUUID is required".into())),
        Some(Value::String(s)) => Uuid::parse_str(s).map_err(|_| {
            let mut e = err("invalidTaskUUID", format!("taskUUID must be a UUID v4 (got {s:?})"));
            e.task_uuid = Some(s.clone());
            e
        }),
        Some(other) => Err(err("invalidTaskUUID", format!("taskUUID must be a UUID string (got {other})"))),
    }
}

/// An integer, also from an integral float; `Err` for any other JSON type.
pub(crate) fn integer(v: &Value) -> Result<i128, ()> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i128::from(i))
            } else if let Some(u) = n.as_u64() {
                Ok(i128::from(u))
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e30 => Ok(f as i128),
                    _ => Err(()),
                }
            }
        }
        _ => Err(()),
    }
}

struct Checker<'a> {
    obj: &'a Map<String, Value>,
    uuid: Uuid,
    task_type: &'static str,
    docs: &'static str,
}

impl Checker<'_> {
    fn error(&self, code: &str, message: impl Into<String>, parameter: &str) -> ApiError {
        let mut e = task_error(code, message, self.task_type, &self.uuid.to_string()).with_parameter(parameter);
        e.documentation = Some(self.docs.to_string());
        e
    }

    /// An optional integer field within `min..=max` (`default` when absent).
    fn int_in(&self, name: &str, code: &str, (min, max, default): (i128, i128, i128)) -> Result<i128, ApiError> {
        let v = self.opt_int(name, code)?.unwrap_or(default);
        if !(min..=max).contains(&v) {
            let mut e = self.error(code, format!("{name} must be between {min} and {max} (got {v})"), name);
            e.extra.insert("min".into(), json!(min));
            e.extra.insert("max".into(), json!(max));
            return Err(e);
        }
        Ok(v)
    }

    fn violation(&self, code: &str, v: Violation) -> ApiError {
        let parameter = v.parameter.clone();
        self.error(code, v.to_string(), &parameter)
    }

    /// A present, non-null field.
    fn field(&self, name: &str) -> Option<&Value> {
        self.obj.get(name).filter(|v| !v.is_null())
    }

    fn opt_int(&self, name: &str, code: &str) -> Result<Option<i128>, ApiError> {
        match self.field(name) {
            None => Ok(None),
            Some(v) => {
                integer(v).map(Some).map_err(|_| self.error(code, format!("{name} must be an integer (got {v})"), name))
            }
        }
    }

    fn opt_str(&self, v: Option<&Value>, name: &str, code: &str) -> Result<Option<String>, ApiError> {
        match v.filter(|v| !v.is_null()) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.error(code, format!("{name} must be a string (got {v})"), name)),
        }
    }

    fn opt_bool(&self, v: Option<&Value>, name: &str, code: &str) -> Result<Option<bool>, ApiError> {
        match v.filter(|v| !v.is_null()) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.error(code, format!("{name} must be a boolean (got {v})"), name)),
        }
    }

    fn opt_object<'v>(
        &self,
        v: Option<&'v Value>,
        name: &str,
        code: &str,
    ) -> Result<Option<&'v Map<String, Value>>, ApiError> {
        match v.filter(|v| !v.is_null()) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(v) => Err(self.error(code, format!("{name} must be an object (got {v})"), name)),
        }
    }

    /// A string field with a fixed set of values (matched case-insensitively).
    fn choice<T: Copy>(&self, name: &str, code: &str, allowed: &[(&str, T)]) -> Result<Option<T>, ApiError> {
        let Some(s) = self.opt_str(self.field(name), name, code).map_err(|e| with_allowed(e, allowed))? else {
            return Ok(None);
        };
        allowed.iter().find(|(n, _)| n.eq_ignore_ascii_case(&s)).map(|(_, t)| Some(*t)).ok_or_else(|| {
            let names: Vec<_> = allowed.iter().map(|(n, _)| *n).collect();
            with_allowed(
                self.error(code, format!("{name} must be one of {} (got {s:?})", names.join(", ")), name),
                allowed,
            )
        })
    }

    fn dimensions_error(&self, code: &str, message: String) -> ApiError {
        let mut e = self.error(code, message, "width");
        e.parameter = Some(ErrorParameter::Many(vec!["width".into(), "height".into()]));
        e.allowed_values = Some(json!(
            KontextSize::ALL
                .iter()
                .map(|s| {
                    let (w, h) = s.dimensions();
                    format!("{w}x{h}")
                })
                .collect::<Vec<_>>()
        ));
        e
    }
}

fn with_allowed<T>(mut e: ApiError, allowed: &[(&str, T)]) -> ApiError {
    e.allowed_values = Some(json!(allowed.iter().map(|(n, _)| *n).collect::<Vec<_>>()));
    e
}

/// Checks a Kontext `imageInference` task; the first broken rule is the error.
pub(crate) fn inference(obj: &Map<String, Value>, uuid: Uuid) -> Result<InferenceParams, ApiError> {
    let c = Checker { obj, uuid, task_type: tag::ImageInference::NAME, docs: DOCS };

    let model = match c.field("model") {
        None => return Err(c.error("missingModel", "model is required", "model")),
        Some(Value::String(s)) => s,
        Some(v) => return Err(c.error("invalidModel", format!("model must be a string (got {v})"), "model")),
    };
    rules::model(model).map_err(|v| with_allowed(c.violation("unsupportedModel", v), &[(MODEL, ())]))?;

    let prompt = match c.field("positivePrompt") {
        None => return Err(c.error("missingPositivePrompt", "positivePrompt is required", "positivePrompt")),
        Some(Value::String(s)) => s,
        Some(v) => {
            return Err(c.error(
                "invalidPositivePrompt",
                format!("positivePrompt must be a string (got {v})"),
                "positivePrompt",
            ));
        }
    };
    rules::prompt(prompt).map_err(|v| c.violation("invalidPositivePrompt", v))?;

    let dim = |name: &str| match c.field(name) {
        None => Ok(None),
        Some(v) => integer(v)
            .map(Some)
            .map_err(|_| c.dimensions_error("invalidDimensions", format!("{name} must be an integer (got {v})"))),
    };
    let (w, h) = (dim("width")?, dim("height")?);
    let size = rules::dimensions(w, h).map_err(|v| {
        let code = if w.is_some() && h.is_some() { "unsupportedDimensions" } else { "invalidDimensions" };
        c.dimensions_error(code, v.to_string())
    })?;
    let (width, height) = size.dimensions();

    let seed = c.opt_int("seed", "invalidSeed")?;
    if let Some(s) = seed {
        rules::seed(s).map_err(|v| c.violation("invalidSeed", v))?;
    }
    let number_results = c.opt_int("numberResults", "invalidNumberResults")?.unwrap_or(1);
    rules::number_results(number_results).map_err(|v| c.violation("invalidNumberResults", v))?;

    let output_type = c
        .choice(
            "outputType",
            "invalidOutputType",
            &[("URL", OutputType::Url), ("base64Data", OutputType::Base64Data), ("dataURI", OutputType::DataUri)],
        )?
        .unwrap_or_default();
    let output_format = c
        .choice(
            "outputFormat",
            "invalidOutputFormat",
            &[("JPG", OutputFormat::Jpg), ("PNG", OutputFormat::Png), ("WEBP", OutputFormat::Webp)],
        )?
        .unwrap_or_default();
    let output_quality = c.opt_int("outputQuality", "invalidOutputQuality")?.unwrap_or(95);
    rules::output_quality(output_quality).map_err(|v| c.violation("invalidOutputQuality", v))?;
    let delivery = c
        .choice(
            "deliveryMethod",
            "invalidDeliveryMethod",
            &[("sync", DeliveryMethod::Sync), ("async", DeliveryMethod::Async)],
        )?
        .unwrap_or_default();

    let webhook_url = c.opt_str(c.field("webhookURL"), "webhookURL", "invalidWebhookURL")?;
    if let Some(u) = &webhook_url {
        rules::http_url("webhookURL", u).map_err(|v| c.violation("invalidWebhookURL", v))?;
    }
    let upload_endpoint = c.opt_str(c.field("uploadEndpoint"), "uploadEndpoint", "invalidUploadEndpoint")?;
    if let Some(u) = &upload_endpoint {
        rules::http_url("uploadEndpoint", u).map_err(|v| c.violation("invalidUploadEndpoint", v))?;
    }
    let ttl = c.opt_int("ttl", "invalidTtl")?;
    if let Some(t) = ttl {
        rules::ttl(t, output_type).map_err(|v| c.violation("invalidTtl", v))?;
    }
    let include_cost = c.opt_bool(c.field("includeCost"), "includeCost", "invalidIncludeCost")?.unwrap_or(false);

    if let Some(safety) = c.opt_object(c.field("safety"), "safety", "invalidSafety")? {
        c.opt_bool(safety.get("checkContent"), "safety.checkContent", "invalidCheckContent")?;
        if let Some(mode) = c.opt_str(safety.get("mode"), "safety.mode", "invalidSafetyMode")?
            && !matches!(mode.as_str(), "none" | "fast")
        {
            return Err(with_allowed(
                c.error("invalidSafetyMode", format!("safety.mode must be none or fast (got {mode:?})"), "safety.mode"),
                &[("none", ()), ("fast", ())],
            ));
        }
    }

    let mut references = Vec::new();
    if let Some(inputs) = c.opt_object(c.field("inputs"), "inputs", "invalidInputs")? {
        const P: &str = "inputs.referenceImages";
        match inputs.get("referenceImages").filter(|v| !v.is_null()) {
            None => {}
            Some(Value::Array(list)) => {
                for (i, item) in list.iter().enumerate() {
                    let Value::String(s) = item else {
                        return Err(c.error(
                            "invalidReferenceImage",
                            format!("{P}[{i}] must be a string (got {item})"),
                            P,
                        ));
                    };
                    let r = ReferenceImage::parse(s, &format!("{P}[{i}]"))
                        .map_err(|v| c.error("invalidReferenceImage", v.to_string(), P))?;
                    references.push(r);
                }
            }
            Some(v) => {
                return Err(c.error("invalidReferenceImage", format!("{P} must be an array of strings (got {v})"), P));
            }
        }
    }

    if let Some(ps) = c.opt_object(c.field("providerSettings"), "providerSettings", "invalidProviderSettings")?
        && let Some(bfl) = c.opt_object(ps.get("bfl"), "providerSettings.bfl", "invalidProviderSettings")?
    {
        c.opt_bool(bfl.get("promptUpsampling"), "providerSettings.bfl.promptUpsampling", "invalidPromptUpsampling")?;
        const P: &str = "providerSettings.bfl.safetyTolerance";
        if let Some(v) = bfl.get("safetyTolerance").filter(|v| !v.is_null()) {
            let t = integer(v)
                .map_err(|_| c.error("invalidSafetyTolerance", format!("{P} must be an integer (got {v})"), P))?;
            rules::safety_tolerance(t).map_err(|v| c.violation("invalidSafetyTolerance", v))?;
        }
    }

    let to_u32 = |v: i128| u32::try_from(v).unwrap_or(u32::MAX);
    Ok(InferenceParams {
        task_uuid: uuid,
        width,
        height,
        seed: seed.map(|s| u64::try_from(s).unwrap_or(0)),
        number_results: to_u32(number_results),
        output_type,
        output_format,
        output_quality: u8::try_from(output_quality).unwrap_or(95),
        delivery,
        webhook_url,
        upload_endpoint,
        ttl: ttl.map(|t| u64::try_from(t).unwrap_or(u64::MAX)),
        include_cost,
        references,
    })
}

/// Checks a `promptEnhance` task; the first broken rule is the error.
pub(crate) fn prompt_enhance(obj: &Map<String, Value>, uuid: Uuid) -> Result<EnhanceParams, ApiError> {
    let c = Checker { obj, uuid, task_type: PROMPT_ENHANCE, docs: ENHANCE_DOCS };
    let prompt = match c.field("prompt") {
        None => return Err(c.error("missingPrompt", "prompt is required", "prompt")),
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= ENHANCE_PROMPT_MAX => s.clone(),
        Some(Value::String(_)) => {
            return Err(c.error(
                "invalidPrompt",
                format!("prompt must hold 1 to {ENHANCE_PROMPT_MAX} characters"),
                "prompt",
            ));
        }
        Some(v) => return Err(c.error("invalidPrompt", format!("prompt must be a string (got {v})"), "prompt")),
    };
    let versions = c.int_in("promptVersions", "invalidPromptVersions", PROMPT_VERSIONS)?;
    let max_length = c.int_in("promptMaxLength", "invalidPromptMaxLength", PROMPT_MAX_LENGTH)?;
    let include_cost = c.opt_bool(c.field("includeCost"), "includeCost", "invalidIncludeCost")?.unwrap_or(false);
    let delivery = c
        .choice(
            "deliveryMethod",
            "invalidDeliveryMethod",
            &[("sync", DeliveryMethod::Sync), ("async", DeliveryMethod::Async)],
        )?
        .unwrap_or_default();
    Ok(EnhanceParams {
        task_uuid: uuid,
        prompt,
        versions: u32::try_from(versions).unwrap_or(1),
        max_length: usize::try_from(max_length).unwrap_or(380),
        include_cost,
        delivery,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Map<String, Value> {
        let v = json!({
            "taskType": "imageInference",
            "taskUUID": "59a2edc2-45e6-429f-be5f-7ded59b92046",
            "model": "bfl:3@1",
            "positivePrompt": "a violet dusk",
            "width": 1024,
            "height": 1024
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn code_of(edit: impl FnOnce(&mut Map<String, Value>)) -> (String, Option<ErrorParameter>) {
        let mut m = base();
        edit(&mut m);
        match inference(&m, Uuid::nil()) {
            Ok(_) => ("ok".into(), None),
            Err(e) => (e.code, e.parameter),
        }
    }

    #[test]
    fn valid_task_passes_and_wrong_types_are_errors() {
        assert_eq!(code_of(|_| {}).0, "ok");
        assert_eq!(code_of(|m| drop(m.insert("width".into(), json!("1024")))).0, "invalidDimensions");
        assert_eq!(code_of(|m| drop(m.insert("seed".into(), json!([1])))).0, "invalidSeed");
        assert_eq!(code_of(|m| drop(m.insert("seed".into(), json!(-1)))).0, "invalidSeed");
        assert_eq!(code_of(|m| drop(m.insert("numberResults".into(), json!(1.5)))).0, "invalidNumberResults");
        assert_eq!(
            code_of(|m| drop(m.insert("inputs".into(), json!({"referenceImages": [1]})))).0,
            "invalidReferenceImage"
        );
        assert_eq!(code_of(|m| drop(m.insert("width".into(), json!(1000)))).0, "unsupportedDimensions");
        let (code, p) = code_of(|m| drop(m.remove("height")));
        assert_eq!(code, "invalidDimensions");
        assert!(p.is_some_and(|p| p.contains("height")));
    }

    #[test]
    fn prompt_enhance_checks_name_the_parameter() {
        let check = |v: Value| match v {
            Value::Object(m) => match prompt_enhance(&m, Uuid::nil()) {
                Ok(p) => ("ok".to_string(), Some(p)),
                Err(e) => {
                    assert_eq!(e.task_type.as_deref(), Some(PROMPT_ENHANCE));
                    (format!("{}:{:?}", e.code, e.parameter), None)
                }
            },
            _ => ("not an object".into(), None),
        };
        let (code, p) = check(json!({"prompt": "a cat"}));
        assert_eq!(code, "ok");
        assert!(p.is_some_and(|p| p.versions == 1 && p.max_length == 380 && !p.include_cost));
        assert!(check(json!({})).0.starts_with("missingPrompt:"));
        assert!(check(json!({"prompt": 3})).0.starts_with("invalidPrompt:"));
        assert!(check(json!({"prompt": "  "})).0.starts_with("invalidPrompt:"));
        let bad_versions = check(json!({"prompt": "a cat", "promptVersions": 6})).0;
        assert!(bad_versions.starts_with("invalidPromptVersions:") && bad_versions.contains("promptVersions"));
        assert!(check(json!({"prompt": "a cat", "promptVersions": 0})).0.starts_with("invalidPromptVersions:"));
        assert!(check(json!({"prompt": "a cat", "promptMaxLength": 11})).0.starts_with("invalidPromptMaxLength:"));
        assert!(check(json!({"prompt": "a cat", "promptMaxLength": 401})).0.starts_with("invalidPromptMaxLength:"));
        assert!(check(json!({"prompt": "a cat", "promptMaxLength": "x"})).0.starts_with("invalidPromptMaxLength:"));
        let (code, p) = check(json!({"prompt": "a cat", "promptVersions": 5, "promptMaxLength": 12}));
        assert_eq!(code, "ok");
        assert!(p.is_some_and(|p| p.versions == 5 && p.max_length == 12));
    }
}
