//! Where things are printed: results on stdout (text or `--json`), notices and
//! errors on stderr (notices silenced by `-q`).

use runware_jobs::record::ImageRecord;
use runware_ws::redact::Redactor;
use serde::Serialize;
use std::io::Write;
use std::sync::OnceLock;
use uuid::Uuid;

/// The secrets removed from everything this tool prints (set once, in `main`).
static REDACTOR: OnceLock<Redactor> = OnceLock::new();

/// Sets the redactor for all output; later calls change nothing.
pub fn set_redactor(redactor: Redactor) {
    let _ = REDACTOR.set(redactor);
}

/// `text` without any known secret.
fn clean(text: &str) -> std::borrow::Cow<'_, str> {
    match REDACTOR.get() {
        Some(r) => r.redact(text),
        None => std::borrow::Cow::Borrowed(text),
    }
}

/// The output settings of a run.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    /// `--json`: stdout carries JSON only.
    pub json: bool,
    /// `-q`: no notices, no progress.
    pub quiet: bool,
}

impl Output {
    /// Settings from the global flags.
    pub fn new(json: bool, quiet: bool) -> Self {
        Output { json, quiet }
    }

    /// True with `--json`.
    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// A result line on stdout.
    pub fn line(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", clean(text));
        let _ = out.flush();
    }

    /// A JSON document on stdout, on one line.
    pub fn json_value<T: Serialize>(&self, value: &T) {
        match serde_json::to_string(value) {
            Ok(s) => self.line(&s),
            Err(e) => self.error(&format!("cannot encode the output as JSON: {e}")),
        }
    }

    /// A notice on stderr, unless `-q`.
    pub fn notice(&self, text: &str) {
        if !self.quiet {
            eprintln!("{}", clean(text));
        }
    }

    /// An error on stderr (always).
    pub fn error(&self, text: &str) {
        eprintln!("error: {}", clean(text));
    }
}

/// `0.04` → `$0.0400`; dollars with four decimals (Runware prices are in cents and tenths).
pub fn dollars(cost: f64) -> String {
    format!("${cost:.4}")
}

/// A duration in human units: `850 ms`, `12.3 s`, `4 min 05 s`.
pub fn human_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 1.0 {
        format!("{} ms", d.as_millis())
    } else if secs < 60.0 {
        format!("{secs:.1} s")
    } else {
        let whole = d.as_secs();
        if whole < 3600 {
            format!("{} min {:02} s", whole / 60, whole % 60)
        } else {
            format!("{} h {:02} min", whole / 3600, (whole % 3600) / 60)
        }
    }
}

/// One line per image (or one JSON document).
pub fn report(out: &Output, task_uuid: Uuid, images: &[ImageRecord]) {
    if out.json {
        out.json_value(&serde_json::json!({ "taskUUID": task_uuid, "images": images }));
        return;
    }
    for img in images {
        let place = img.path.as_deref().or(img.image_url.as_deref()).unwrap_or("(no file)");
        let mut line = format!("{place}  imageUUID {}", img.image_uuid);
        if let Some(seed) = img.seed {
            line.push_str(&format!("  seed {seed}"));
        }
        if let Some(cost) = img.cost {
            line.push_str(&format!("  cost {}", dollars(cost)));
        }
        out.line(&line);
    }
}
