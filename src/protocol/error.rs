//! Server errors ([`ApiError`]) in every shape Runware sends, and their
//! classification into [`ErrorKind`]s that say whether a retry can help.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// `parameter` of an error: one name, or several for cross-field errors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ErrorParameter {
    /// `"parameter":"positivePrompt"`
    One(String),
    /// `"parameter":["width","height"]`
    Many(Vec<String>),
}

impl ErrorParameter {
    /// The names, one or several.
    pub fn names(&self) -> Vec<&str> {
        match self {
            ErrorParameter::One(s) => vec![s.as_str()],
            ErrorParameter::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }

    /// True if `name` is among the names.
    pub fn contains(&self, name: &str) -> bool {
        self.names().contains(&name)
    }
}

impl fmt::Display for ErrorParameter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(", "))
    }
}

/// An error item as the server sends it. Fields the server adds that this type
/// does not know (`type`, `context`, `min`, `max`, …) are kept in `extra`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// Machine-readable code (`invalidPositivePrompt`); empty in the legacy shape.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub code: String,
    /// Human-readable message (`errorMessage` in the legacy shape).
    #[serde(default, alias = "errorMessage", skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The parameter(s) at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter: Option<ErrorParameter>,
    /// The task type the error belongs to.
    #[serde(rename = "taskType", default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
    /// The task the error belongs to; absent for connection-level errors.
    #[serde(rename = "taskUUID", default, skip_serializing_if = "Option::is_none")]
    pub task_uuid: Option<String>,
    /// A documentation link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documentation: Option<String>,
    /// Allowed values: an array, or an object keyed by index.
    #[serde(rename = "allowedValues", default, skip_serializing_if = "Option::is_none")]
    pub allowed_values: Option<Value>,
    /// Legacy numeric error id (`errorId`).
    #[serde(rename = "errorId", default, skip_serializing_if = "Option::is_none")]
    pub error_id: Option<i64>,
    /// Everything else the server sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ApiError {
    /// An error with a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError { code: code.into(), message: message.into(), ..Default::default() }
    }

    /// Sets the parameter.
    pub fn with_parameter(mut self, parameter: impl Into<String>) -> Self {
        self.parameter = Some(ErrorParameter::One(parameter.into()));
        self
    }

    /// Sets the task.
    pub fn for_task(mut self, task_type: impl Into<String>, task_uuid: impl Into<String>) -> Self {
        self.task_type = Some(task_type.into());
        self.task_uuid = Some(task_uuid.into());
        self
    }

    /// The error's kind, from its code (and the legacy id or message when there is no code).
    pub fn kind(&self) -> ErrorKind {
        if !self.code.is_empty() {
            return ErrorKind::of_code(&self.code);
        }
        let msg = self.message.to_ascii_lowercase();
        if self.error_id == Some(19) || msg.contains("api key") || msg.contains("apikey") {
            ErrorKind::Auth
        } else {
            ErrorKind::Unknown
        }
    }

    /// The task UUID, if present and well-formed.
    pub fn task_uuid(&self) -> Option<uuid::Uuid> {
        self.task_uuid.as_deref().and_then(|s| uuid::Uuid::parse_str(s).ok())
    }

    /// Replaces every occurrence of `secret` in the error's text (message, code,
    /// parameter, documentation, extra fields) with `***`, for a server that
    /// echoes the API key back.
    pub fn redact(&mut self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        let scrub = |s: &mut String| {
            if s.contains(secret) {
                *s = s.replace(secret, "***");
            }
        };
        scrub(&mut self.code);
        scrub(&mut self.message);
        for s in [&mut self.task_type, &mut self.task_uuid, &mut self.documentation].into_iter().flatten() {
            scrub(s);
        }
        match &mut self.parameter {
            Some(ErrorParameter::One(p)) => scrub(p),
            Some(ErrorParameter::Many(ps)) => ps.iter_mut().for_each(scrub),
            None => {}
        }
        fn walk(v: &mut Value, secret: &str) {
            match v {
                Value::String(s) if s.contains(secret) => *s = s.replace(secret, "***"),
                Value::Array(a) => a.iter_mut().for_each(|x| walk(x, secret)),
                Value::Object(o) => o.values_mut().for_each(|x| walk(x, secret)),
                _ => {}
            }
        }
        if let Some(v) = &mut self.allowed_values {
            walk(v, secret);
        }
        self.extra.values_mut().for_each(|v| walk(v, secret));
    }

    /// True for `conflictTaskUUID`: the server already knows this task.
    pub fn is_conflict(&self) -> bool {
        self.kind() == ErrorKind::Conflict
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = if self.code.is_empty() { "error" } else { self.code.as_str() };
        write!(f, "{code}")?;
        if let Some(p) = &self.parameter {
            write!(f, " [{p}]")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// What kind of failure a server error code stands for. Each kind says what a
/// retry would do ([`ErrorKind::retry_advice`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A parameter broke a rule (`invalid*`, `missing*`, `unsupported*`, …). Never
    /// retry: the same request fails the same way.
    Validation,
    /// The API key was refused. Fix the key; nothing else can succeed until then.
    Auth,
    /// Out of credits or quota. Fix the account; nothing else can succeed until then.
    Quota,
    /// The content was refused by a safety check. Never retry.
    Safety,
    /// Too many requests. The server did not run the task: retry under a **new**
    /// taskUUID after backing off (and send less at once).
    RateLimit,
    /// The server or provider timed out (`timeoutProvider`, `inferenceTimeout`)
    /// and reported the task failed: retry under a **new** taskUUID.
    Timeout,
    /// The inference provider failed the task: retry under a **new** taskUUID.
    Provider,
    /// The server failed the task (`serviceUnavailable`, …): retry under a **new**
    /// taskUUID.
    Server,
    /// The task is unknown or its results expired. Never retry.
    NotFound,
    /// The task UUID is already known to the server (`conflictTaskUUID`): its
    /// outcome is there to be fetched with `getResponse` under the **same** UUID.
    Conflict,
    /// A code this client does not know. Not retried.
    Unknown,
}

/// What retrying a failed task would do, and how to do it safely. A task is paid
/// for when it runs, so the line between the first two is the line between one
/// bill and two.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryAdvice {
    /// The server reported that the task failed (provider error or timeout, server
    /// error, rate limit): a new attempt under a **new** taskUUID is safe and may
    /// succeed, after a backoff.
    NewTaskUuid,
    /// The outcome is unknown (client deadline, lost connection, a reply this
    /// client could not use, a taskUUID the server already has): the task may have
    /// run. Recover it under the **same** taskUUID (resend: the server answers
    /// `conflictTaskUUID`, then `getResponse`); a new taskUUID could run it twice.
    SameTaskUuid,
    /// Nothing reached the server (every in-flight slot was taken): send the same
    /// request again.
    Resubmit,
    /// The account must be fixed first (key refused, no credits, quota exceeded).
    FixAccount,
    /// Final: the same request fails the same way.
    Never,
}

impl ErrorKind {
    /// Classifies a Runware error code.
    pub fn of_code(code: &str) -> ErrorKind {
        let lower = code.to_ascii_lowercase();
        let has = |s: &str| lower.contains(s);
        if lower == "conflicttaskuuid" || lower.starts_with("conflict") {
            ErrorKind::Conflict
        } else if has("apikey") || lower == "unauthorized" || lower == "forbidden" || has("authentication") {
            ErrorKind::Auth
        } else if has("credit") || has("quota") || has("balance") || has("payment") {
            ErrorKind::Quota
        } else if has("ratelimit") || has("toomanyrequests") || has("throttl") {
            ErrorKind::RateLimit
        } else if has("contentpolicy") || has("nsfw") || has("safety") || has("moderation") {
            ErrorKind::Safety
        } else if has("timeout") || has("timedout") {
            ErrorKind::Timeout
        } else if lower == "tasknotfound" || has("notfound") || lower.ends_with("expired") {
            ErrorKind::NotFound
        } else if lower.starts_with("provider")
            || matches!(lower.as_str(), "inferenceerror" | "taskfailed" | "noavailableserver" | "modelerror")
        {
            ErrorKind::Provider
        } else if has("internalservererror")
            || has("serviceunavailable")
            || has("servererror")
            || has("badgateway")
            || has("overloaded")
        {
            ErrorKind::Server
        } else if lower.starts_with("invalid")
            || lower.starts_with("missing")
            || lower.starts_with("unsupported")
            || lower.starts_with("unknown")
            || has("validation")
            || lower.starts_with("malformed")
        {
            ErrorKind::Validation
        } else {
            ErrorKind::Unknown
        }
    }

    /// What retrying a task the server failed with this kind would do.
    pub fn retry_advice(self) -> RetryAdvice {
        match self {
            ErrorKind::RateLimit | ErrorKind::Timeout | ErrorKind::Provider | ErrorKind::Server => {
                RetryAdvice::NewTaskUuid
            }
            ErrorKind::Conflict => RetryAdvice::SameTaskUuid,
            ErrorKind::Auth | ErrorKind::Quota => RetryAdvice::FixAccount,
            ErrorKind::Validation | ErrorKind::Safety | ErrorKind::NotFound | ErrorKind::Unknown => RetryAdvice::Never,
        }
    }

    /// True when the server reported the task failed in a way a new attempt, under
    /// a new taskUUID, may get past.
    pub fn is_retryable_with_new_uuid(self) -> bool {
        self.retry_advice() == RetryAdvice::NewTaskUuid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified() {
        use ErrorKind::*;
        for (code, kind) in [
            ("invalidPositivePrompt", Validation),
            ("missingPositivePrompt", Validation),
            ("unsupportedDimensions", Validation),
            ("unknownParameter", Validation),
            ("invalidApiKey", Auth),
            ("missingApiKey", Auth),
            ("unauthorized", Auth),
            ("insufficientCredits", Quota),
            ("contentPolicyViolation", Safety),
            ("requestRateLimitExceeded", RateLimit),
            ("inferenceTimeout", Timeout),
            ("providerError", Provider),
            ("inferenceError", Provider),
            ("taskFailed", Provider),
            ("noAvailableServer", Provider),
            ("internalServerError", Server),
            ("serviceUnavailable", Server),
            ("taskNotFound", NotFound),
            ("resultExpired", NotFound),
            ("conflictTaskUUID", Conflict),
            ("somethingNew", Unknown),
        ] {
            assert_eq!(ErrorKind::of_code(code), kind, "{code}");
        }
    }

    #[test]
    fn retry_advice_by_kind() {
        use RetryAdvice::*;
        for (code, advice) in [
            ("timeoutProvider", NewTaskUuid),
            ("inferenceTimeout", NewTaskUuid),
            ("requestRateLimitExceeded", NewTaskUuid),
            ("serviceUnavailable", NewTaskUuid),
            ("providerError", NewTaskUuid),
            ("conflictTaskUUID", SameTaskUuid),
            ("insufficientCredits", FixAccount),
            ("invalidApiKey", FixAccount),
            ("contentPolicyViolation", Never),
            ("invalidPositivePrompt", Never),
            ("taskNotFound", Never),
            ("somethingNew", Never),
        ] {
            assert_eq!(ErrorKind::of_code(code).retry_advice(), advice, "{code}");
        }
        assert!(ErrorKind::RateLimit.is_retryable_with_new_uuid());
        assert!(!ErrorKind::Conflict.is_retryable_with_new_uuid());
    }

    #[test]
    fn every_error_variant_parses() {
        let e: ApiError = serde_json::from_str(
            r#"{"code":"invalidDimensions","message":"bad","parameter":["width","height"],"allowedValues":{"0":"1024x1024"},"min":1,"type":"x"}"#,
        )
        .unwrap();
        assert!(e.parameter.as_ref().unwrap().contains("height"));
        assert_eq!(e.extra.get("min"), Some(&serde_json::json!(1)));
        assert_eq!(e.kind(), ErrorKind::Validation);
        let legacy: ApiError = serde_json::from_str(r#"{"errorId":19,"errorMessage":"Invalid api key"}"#).unwrap();
        assert_eq!(legacy.kind(), ErrorKind::Auth);
        assert_eq!(legacy.message, "Invalid api key");
    }
}
