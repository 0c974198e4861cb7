//! FLUX.1 Kontext \[pro\] (`bfl:3@1`): the nine sizes, the rules of the model page,
//! and a builder that checks every rule before a request leaves the process.
//!
//! ```
//! use runware_ws::{Kontext, KontextSize};
//!
//! let task = Kontext::builder()
//!     .prompt("Turn the sky into a violet dusk")
//!     .size(KontextSize::R3x2)
//!     .seed(42)
//!     .reference_image("https://example.com/in.jpg")
//!     .build()
//!     .expect("valid request");
//! assert_eq!((task.width, task.height), (Some(1248), Some(832)));
//!
//! let err = Kontext::builder().prompt("x").dimensions(1000, 1000).build().unwrap_err();
//! assert_eq!(err.parameters(), ["positivePrompt", "width"]);
//! ```

use super::inference::{
    BflSettings, DeliveryMethod, ImageInference, Inputs, OutputFormat, OutputType, ProviderSettings, Safety, SafetyMode,
};
use super::reference::ReferenceImage;
use super::tag;
use super::validation::{ValidationError, Violation};
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use uuid::Uuid;

/// The model AIR of FLUX.1 Kontext \[pro\].
pub const MODEL: &str = "bfl:3@1";
/// Price of one image, in USD.
pub const PRICE_PER_IMAGE: f64 = 0.04;

/// The nine sizes Kontext \[pro\] accepts, by aspect ratio.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KontextSize {
    /// 21:9, 1568×672
    R21x9,
    /// 16:9, 1392×752
    R16x9,
    /// 4:3, 1184×880
    R4x3,
    /// 3:2, 1248×832
    R3x2,
    /// 1:1, 1024×1024
    R1x1,
    /// 2:3, 832×1248
    R2x3,
    /// 3:4, 880×1184
    R3x4,
    /// 9:16, 752×1392
    R9x16,
    /// 9:21, 672×1568
    R9x21,
}

impl KontextSize {
    /// All nine, widest first.
    pub const ALL: [KontextSize; 9] = [
        KontextSize::R21x9,
        KontextSize::R16x9,
        KontextSize::R4x3,
        KontextSize::R3x2,
        KontextSize::R1x1,
        KontextSize::R2x3,
        KontextSize::R3x4,
        KontextSize::R9x16,
        KontextSize::R9x21,
    ];

    /// (width, height) in pixels.
    pub const fn dimensions(self) -> (u32, u32) {
        match self {
            KontextSize::R21x9 => (1568, 672),
            KontextSize::R16x9 => (1392, 752),
            KontextSize::R4x3 => (1184, 880),
            KontextSize::R3x2 => (1248, 832),
            KontextSize::R1x1 => (1024, 1024),
            KontextSize::R2x3 => (832, 1248),
            KontextSize::R3x4 => (880, 1184),
            KontextSize::R9x16 => (752, 1392),
            KontextSize::R9x21 => (672, 1568),
        }
    }

    /// The aspect ratio, `"3:2"`.
    pub const fn aspect(self) -> &'static str {
        match self {
            KontextSize::R21x9 => "21:9",
            KontextSize::R16x9 => "16:9",
            KontextSize::R4x3 => "4:3",
            KontextSize::R3x2 => "3:2",
            KontextSize::R1x1 => "1:1",
            KontextSize::R2x3 => "2:3",
            KontextSize::R3x4 => "3:4",
            KontextSize::R9x16 => "9:16",
            KontextSize::R9x21 => "9:21",
        }
    }

    /// The size with these pixel dimensions, if it is one of the nine.
    pub fn from_dimensions(width: u32, height: u32) -> Option<KontextSize> {
        Self::ALL.into_iter().find(|s| s.dimensions() == (width, height))
    }

    /// The size with this aspect ratio (`"3:2"`, `"3/2"`), if it is one of the nine.
    pub fn from_aspect(aspect: &str) -> Option<KontextSize> {
        let norm = aspect.trim().replace('/', ":");
        Self::ALL.into_iter().find(|s| s.aspect() == norm)
    }

    /// The list of allowed sizes, for messages: `1568×672, 1392×752, …`.
    pub fn allowed_list() -> String {
        Self::ALL.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for KontextSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (w, h) = self.dimensions();
        write!(f, "{w}×{h}")
    }
}

/// Parses `"1248x832"`, `"1248×832"` or an aspect ratio such as `"3:2"`.
impl FromStr for KontextSize {
    type Err = Violation;
    fn from_str(s: &str) -> Result<Self, Violation> {
        let t = s.trim();
        if let Some(size) = KontextSize::from_aspect(t) {
            return Ok(size);
        }
        let dims =
            t.split_once(['x', 'X', '×']).and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)));
        match dims {
            Some((w, h)) => KontextSize::from_dimensions(w, h).ok_or_else(|| rules::size_violation(s)),
            None => Err(Violation::new(
                "width",
                format!("a size is WIDTHxHEIGHT or an aspect ratio, one of {}", aspect_list()),
                s,
            )),
        }
    }
}

fn aspect_list() -> String {
    KontextSize::ALL.iter().map(|s| s.aspect()).collect::<Vec<_>>().join(", ")
}

/// The rules of the model page, one function each, shared by the client's builder
/// and the emulator's server-side validation. Integers come in as `i128` so that
/// negative and oversized values are judged rather than truncated.
pub mod rules {
    use super::*;

    /// Prompt length in characters (not bytes).
    pub const PROMPT_CHARS: std::ops::RangeInclusive<usize> = 2..=3000;
    /// The largest seed.
    pub const SEED_MAX: i128 = i64::MAX as i128;
    /// `numberResults`.
    pub const NUMBER_RESULTS: std::ops::RangeInclusive<i128> = 1..=20;
    /// `outputQuality`.
    pub const OUTPUT_QUALITY: std::ops::RangeInclusive<i128> = 20..=99;
    /// The smallest `ttl`.
    pub const TTL_MIN: i128 = 60;
    /// `providerSettings.bfl.safetyTolerance`.
    pub const SAFETY_TOLERANCE: std::ops::RangeInclusive<i128> = 0..=6;

    fn range(parameter: &str, value: i128, r: &std::ops::RangeInclusive<i128>) -> Result<(), Violation> {
        if r.contains(&value) {
            Ok(())
        } else {
            Err(Violation::new(parameter, format!("must be between {} and {}", r.start(), r.end()), value))
        }
    }

    /// `model` must be `bfl:3@1`.
    pub fn model(model: &str) -> Result<(), Violation> {
        if model == MODEL { Ok(()) } else { Err(Violation::new("model", format!("must be {MODEL}"), model)) }
    }

    /// `positivePrompt`: 2–3000 characters.
    pub fn prompt(prompt: &str) -> Result<(), Violation> {
        let n = prompt.chars().count();
        if PROMPT_CHARS.contains(&n) {
            Ok(())
        } else {
            Err(Violation::new(
                "positivePrompt",
                format!("must be {} to {} characters long", PROMPT_CHARS.start(), PROMPT_CHARS.end()),
                format!("{n} characters"),
            ))
        }
    }

    pub(crate) fn size_violation(value: impl fmt::Display) -> Violation {
        Violation::new(
            "width",
            format!(
                "width×height must be one of {} (or an aspect ratio: {})",
                KontextSize::allowed_list(),
                aspect_list()
            ),
            value,
        )
    }

    /// `width` and `height`: required, together, and one of the nine pairs.
    pub fn dimensions(width: Option<i128>, height: Option<i128>) -> Result<KontextSize, Violation> {
        match (width, height) {
            (None, None) => Err(Violation::new("width", "width and height are required", "neither")),
            (Some(w), None) => {
                Err(Violation::new("height", "must be given together with width", format!("width {w} alone")))
            }
            (None, Some(h)) => {
                Err(Violation::new("width", "must be given together with height", format!("height {h} alone")))
            }
            (Some(w), Some(h)) => u32::try_from(w)
                .ok()
                .zip(u32::try_from(h).ok())
                .and_then(|(w, h)| KontextSize::from_dimensions(w, h))
                .ok_or_else(|| size_violation(format!("{w}×{h}"))),
        }
    }

    /// `seed`: 0 to 9223372036854775807.
    pub fn seed(seed: i128) -> Result<(), Violation> {
        range("seed", seed, &(0..=SEED_MAX))
    }

    /// `numberResults`: 1–20.
    pub fn number_results(n: i128) -> Result<(), Violation> {
        range("numberResults", n, &NUMBER_RESULTS)
    }

    /// `outputQuality`: 20–99.
    pub fn output_quality(q: i128) -> Result<(), Violation> {
        range("outputQuality", q, &OUTPUT_QUALITY)
    }

    /// `ttl`: at least 60 seconds, and only with URL output.
    pub fn ttl(ttl: i128, output_type: OutputType) -> Result<(), Violation> {
        if ttl < TTL_MIN {
            Err(Violation::new("ttl", format!("must be at least {TTL_MIN} seconds"), ttl))
        } else if output_type != OutputType::Url {
            Err(Violation::new(
                "ttl",
                "only applies with outputType URL",
                format!("ttl with outputType {output_type:?}"),
            ))
        } else {
            Ok(())
        }
    }

    /// `providerSettings.bfl.safetyTolerance`: 0–6.
    pub fn safety_tolerance(t: i128) -> Result<(), Violation> {
        range("providerSettings.bfl.safetyTolerance", t, &SAFETY_TOLERANCE)
    }

    /// `webhookURL` / `uploadEndpoint`: an absolute http(s) URL.
    pub fn http_url(parameter: &str, value: &str) -> Result<(), Violation> {
        match url::Url::parse(value) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
            _ => Err(Violation::new(parameter, "must be an absolute http(s) URL", value)),
        }
    }
}

/// Checks a typed `imageInference` task against every rule of Kontext \[pro\].
pub fn validate(task: &ImageInference) -> Result<(), ValidationError> {
    let mut v = Vec::new();
    let mut push = |r: Result<(), Violation>| {
        if let Err(e) = r {
            v.push(e);
        }
    };
    push(rules::model(&task.model));
    push(rules::prompt(&task.positive_prompt));
    push(rules::dimensions(task.width.map(i128::from), task.height.map(i128::from)).map(|_| ()));
    if let Some(seed) = task.seed {
        push(rules::seed(i128::from(seed)));
    }
    if let Some(n) = task.number_results {
        push(rules::number_results(i128::from(n)));
    }
    if let Some(q) = task.output_quality {
        push(rules::output_quality(i128::from(q)));
    }
    if let Some(url) = &task.webhook_url {
        push(rules::http_url("webhookURL", url));
    }
    if let Some(url) = &task.upload_endpoint {
        push(rules::http_url("uploadEndpoint", url));
    }
    if let Some(ttl) = task.ttl {
        push(rules::ttl(i128::from(ttl), task.output_type()));
    }
    if let Some(t) = task.provider_settings.as_ref().and_then(|p| p.bfl.as_ref()).and_then(|b| b.safety_tolerance) {
        push(rules::safety_tolerance(i128::from(t)));
    }
    ValidationError::from_violations(v)
}

/// Entry point for Kontext \[pro\] requests: `Kontext::builder()`.
#[derive(Debug)]
pub struct Kontext;

impl Kontext {
    /// A builder with nothing set. `prompt` and a size are required.
    pub fn builder() -> KontextBuilder {
        KontextBuilder::default()
    }
}

#[derive(Clone, Debug)]
enum ReferenceSource {
    Text(String),
    File(PathBuf),
    Ready(ReferenceImage),
}

/// Builds a validated Kontext \[pro\] `imageInference` task.
///
/// Setters only record; [`KontextBuilder::build`] checks every rule and reports all
/// violations together. Unset options are left out of the JSON, so the server's
/// defaults apply (URL output, JPG, quality 95, sync delivery, one result).
#[derive(Clone, Debug, Default)]
pub struct KontextBuilder {
    task_uuid: Option<Uuid>,
    prompt: Option<String>,
    width: Option<i128>,
    height: Option<i128>,
    size_text: Option<String>,
    seed: Option<u64>,
    number_results: Option<u32>,
    output_type: Option<OutputType>,
    output_format: Option<OutputFormat>,
    output_quality: Option<u32>,
    delivery_method: Option<DeliveryMethod>,
    webhook_url: Option<String>,
    upload_endpoint: Option<String>,
    ttl: Option<u64>,
    include_cost: Option<bool>,
    check_content: Option<bool>,
    safety_mode: Option<SafetyMode>,
    prompt_upsampling: Option<bool>,
    safety_tolerance: Option<u32>,
    references: Vec<ReferenceSource>,
    extra: Map<String, Value>,
}

impl KontextBuilder {
    /// The task UUID (default: a new UUID v4). Reuse one only to re-attach to a task.
    pub fn task_uuid(mut self, uuid: Uuid) -> Self {
        self.task_uuid = Some(uuid);
        self
    }
    /// `positivePrompt` (2–3000 characters).
    pub fn prompt(mut self, prompt: impl Into<String>) -> Self {
        self.prompt = Some(prompt.into());
        self
    }
    /// One of the nine sizes.
    pub fn size(mut self, size: KontextSize) -> Self {
        let (w, h) = size.dimensions();
        self.width = Some(w.into());
        self.height = Some(h.into());
        self
    }
    /// A size as text: `"1248x832"` or an aspect ratio such as `"3:2"`; checked at build.
    pub fn size_str(mut self, size: impl Into<String>) -> Self {
        self.size_text = Some(size.into());
        self
    }
    /// `width` and `height` in pixels; must be one of the nine pairs.
    pub fn dimensions(mut self, width: u32, height: u32) -> Self {
        self.width = Some(width.into());
        self.height = Some(height.into());
        self
    }
    /// `width` alone (must be paired with `height`).
    pub fn width(mut self, width: u32) -> Self {
        self.width = Some(width.into());
        self
    }
    /// `height` alone (must be paired with `width`).
    pub fn height(mut self, height: u32) -> Self {
        self.height = Some(height.into());
        self
    }
    /// `seed` (0 to 9223372036854775807).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    /// `numberResults` (1–20).
    pub fn number_results(mut self, n: u32) -> Self {
        self.number_results = Some(n);
        self
    }
    /// `outputType`.
    pub fn output_type(mut self, t: OutputType) -> Self {
        self.output_type = Some(t);
        self
    }
    /// `outputFormat`.
    pub fn output_format(mut self, f: OutputFormat) -> Self {
        self.output_format = Some(f);
        self
    }
    /// `outputQuality` (20–99).
    pub fn output_quality(mut self, q: u32) -> Self {
        self.output_quality = Some(q);
        self
    }
    /// `deliveryMethod`.
    pub fn delivery_method(mut self, d: DeliveryMethod) -> Self {
        self.delivery_method = Some(d);
        self
    }
    /// `webhookURL` (absolute http(s) URL).
    pub fn webhook_url(mut self, url: impl Into<String>) -> Self {
        self.webhook_url = Some(url.into());
        self
    }
    /// `uploadEndpoint` (absolute http(s) URL).
    pub fn upload_endpoint(mut self, url: impl Into<String>) -> Self {
        self.upload_endpoint = Some(url.into());
        self
    }
    /// `ttl` in seconds (≥ 60, URL output only).
    pub fn ttl(mut self, seconds: u64) -> Self {
        self.ttl = Some(seconds);
        self
    }
    /// `includeCost`.
    pub fn include_cost(mut self, yes: bool) -> Self {
        self.include_cost = Some(yes);
        self
    }
    /// `safety.checkContent`.
    pub fn check_content(mut self, yes: bool) -> Self {
        self.check_content = Some(yes);
        self
    }
    /// `safety.mode`.
    pub fn safety_mode(mut self, mode: SafetyMode) -> Self {
        self.safety_mode = Some(mode);
        self
    }
    /// `providerSettings.bfl.promptUpsampling`.
    pub fn prompt_upsampling(mut self, yes: bool) -> Self {
        self.prompt_upsampling = Some(yes);
        self
    }
    /// `providerSettings.bfl.safetyTolerance` (0–6).
    pub fn safety_tolerance(mut self, t: u32) -> Self {
        self.safety_tolerance = Some(t);
        self
    }
    /// A reference image as text: a UUID, an http(s) URL, a data URI or base64; checked at build.
    pub fn reference_image(mut self, image: impl Into<String>) -> Self {
        self.references.push(ReferenceSource::Text(image.into()));
        self
    }
    /// A reference image already classified.
    pub fn reference(mut self, image: ReferenceImage) -> Self {
        self.references.push(ReferenceSource::Ready(image));
        self
    }
    /// A local image file, sent as a data URI with the MIME type of its content.
    /// The file is read (synchronously) at build.
    pub fn reference_image_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.references.push(ReferenceSource::File(path.into()));
        self
    }
    /// Any other field, sent as given (not validated).
    pub fn extra(mut self, key: impl Into<String>, value: Value) -> Self {
        self.extra.insert(key.into(), value);
        self
    }

    /// Checks every rule and returns the task, or every violation at once.
    pub fn build(self) -> Result<KontextTask, ValidationError> {
        let mut violations = Vec::new();
        let (mut width, mut height) = (self.width, self.height);
        if let Some(text) = &self.size_text {
            match text.parse::<KontextSize>() {
                Ok(size) => {
                    let (w, h) = size.dimensions();
                    width = Some(w.into());
                    height = Some(h.into());
                }
                Err(v) => violations.push(v),
            }
        }
        let prompt = match self.prompt {
            Some(p) => p,
            None => {
                violations.push(Violation::new("positivePrompt", "is required", "nothing"));
                String::new()
            }
        };
        let mut references = Vec::with_capacity(self.references.len());
        for (i, source) in self.references.into_iter().enumerate() {
            let parameter = format!("inputs.referenceImages[{i}]");
            let parsed = match source {
                ReferenceSource::Text(s) => ReferenceImage::parse(&s, &parameter),
                ReferenceSource::File(p) => ReferenceImage::from_path(&p, &parameter),
                ReferenceSource::Ready(r) => Ok(r),
            };
            match parsed {
                Ok(r) => references.push(r),
                Err(v) => violations.push(v),
            }
        }
        let safety = (self.check_content.is_some() || self.safety_mode.is_some())
            .then_some(Safety { check_content: self.check_content, mode: self.safety_mode });
        let bfl = (self.prompt_upsampling.is_some() || self.safety_tolerance.is_some()).then(|| BflSettings {
            prompt_upsampling: self.prompt_upsampling,
            safety_tolerance: self.safety_tolerance.map(|t| u8::try_from(t).unwrap_or(u8::MAX)),
        });
        if let Some(Err(v)) = self.safety_tolerance.map(|t| rules::safety_tolerance(i128::from(t))) {
            violations.push(v);
        }
        let dims_ok = |v: Option<i128>| v.map(|x| u32::try_from(x).unwrap_or(u32::MAX));
        let task = ImageInference {
            task_type: tag::ImageInference,
            task_uuid: self.task_uuid.unwrap_or_else(Uuid::new_v4),
            model: MODEL.to_string(),
            positive_prompt: prompt,
            width: dims_ok(width),
            height: dims_ok(height),
            seed: self.seed,
            number_results: self.number_results,
            output_type: self.output_type,
            output_format: self.output_format,
            output_quality: self.output_quality,
            delivery_method: self.delivery_method,
            webhook_url: self.webhook_url,
            upload_endpoint: self.upload_endpoint,
            ttl: self.ttl,
            include_cost: self.include_cost,
            safety,
            inputs: (!references.is_empty()).then_some(Inputs { reference_images: references }),
            provider_settings: bfl.map(|b| ProviderSettings { bfl: Some(b), other: Map::new() }),
            extra: self.extra,
        };
        if let Err(e) = validate(&task) {
            // A safety tolerance too large for u8 was already reported above.
            for v in e.violations {
                if !violations.iter().any(|seen: &Violation| seen.parameter == v.parameter) {
                    violations.push(v);
                }
            }
        }
        violations.sort_by_key(|v| parameter_order(&v.parameter));
        ValidationError::from_violations(violations)?;
        Ok(KontextTask(task))
    }
}

/// A Kontext \[pro\] task that passed every rule. Only [`KontextBuilder::build`]
/// and [`KontextTask::try_from`] (for a parsed [`ImageInference`]) make one, and it
/// cannot be changed afterwards, so it is validated exactly once: the client sends
/// it without checking again. It reads as an [`ImageInference`] (`Deref`) and
/// serializes as one.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct KontextTask(ImageInference);

impl KontextTask {
    /// The task's UUID.
    pub fn task_uuid(&self) -> Uuid {
        self.0.task_uuid
    }

    /// The same task under another taskUUID (the UUID is not subject to any rule).
    pub fn with_task_uuid(mut self, uuid: Uuid) -> KontextTask {
        self.0.task_uuid = uuid;
        self
    }

    /// The wire form, to read.
    pub fn as_inference(&self) -> &ImageInference {
        &self.0
    }

    /// The wire form, to change (and validate again through `try_from`).
    pub fn into_inner(self) -> ImageInference {
        self.0
    }
}

impl std::ops::Deref for KontextTask {
    type Target = ImageInference;
    fn deref(&self) -> &ImageInference {
        &self.0
    }
}

impl TryFrom<ImageInference> for KontextTask {
    type Error = ValidationError;

    /// Checks `task` against every Kontext \[pro\] rule (its model must be `bfl:3@1`).
    fn try_from(task: ImageInference) -> Result<KontextTask, ValidationError> {
        validate(&task)?;
        Ok(KontextTask(task))
    }
}

impl From<KontextTask> for ImageInference {
    fn from(task: KontextTask) -> ImageInference {
        task.0
    }
}

/// Wire order of parameters, so that reports read like the request.
fn parameter_order(parameter: &str) -> usize {
    const ORDER: &[&str] = &[
        "model",
        "positivePrompt",
        "width",
        "height",
        "seed",
        "numberResults",
        "outputType",
        "outputFormat",
        "outputQuality",
        "deliveryMethod",
        "webhookURL",
        "uploadEndpoint",
        "ttl",
        "includeCost",
        "safety",
        "inputs",
        "providerSettings",
    ];
    ORDER.iter().position(|p| parameter.starts_with(p)).unwrap_or(ORDER.len())
}
