//! The `imageInference` task, with every field of the FLUX.1 Kontext \[pro\] model page.

use super::reference::ReferenceImage;
use super::tag;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// How results are returned: `URL` (default), `base64Data` or `dataURI`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OutputType {
    /// A URL the server hosts (for `ttl` seconds).
    #[default]
    #[serde(rename = "URL")]
    Url,
    /// Bare base64 image data in `imageBase64Data`.
    #[serde(rename = "base64Data")]
    Base64Data,
    /// A data URI in `imageDataURI`.
    #[serde(rename = "dataURI")]
    DataUri,
}

/// The image file format: `JPG` (default), `PNG` or `WEBP`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum OutputFormat {
    /// JPEG.
    #[default]
    Jpg,
    /// PNG.
    Png,
    /// WebP.
    Webp,
}

impl OutputFormat {
    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Jpg => "jpg",
            OutputFormat::Png => "png",
            OutputFormat::Webp => "webp",
        }
    }

    /// The MIME type.
    pub fn mime(self) -> &'static str {
        match self {
            OutputFormat::Jpg => "image/jpeg",
            OutputFormat::Png => "image/png",
            OutputFormat::Webp => "image/webp",
        }
    }
}

/// `sync` (default): results on the socket; `async`: an acknowledgement, then `getResponse`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMethod {
    /// Results arrive on the socket.
    #[default]
    Sync,
    /// An immediate acknowledgement; results are fetched with `getResponse`.
    Async,
}

/// `safety.mode`: `none` (default) or `fast`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SafetyMode {
    /// No check.
    #[default]
    None,
    /// A single check.
    Fast,
}

/// The `safety` object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Safety {
    /// `safety.checkContent`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_content: Option<bool>,
    /// `safety.mode`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SafetyMode>,
}

/// The `inputs` object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inputs {
    /// `inputs.referenceImages`
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reference_images: Vec<ReferenceImage>,
}

/// `providerSettings.bfl`
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BflSettings {
    /// `providerSettings.bfl.promptUpsampling`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_upsampling: Option<bool>,
    /// `providerSettings.bfl.safetyTolerance` (0–6)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_tolerance: Option<u8>,
}

/// The `providerSettings` object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProviderSettings {
    /// Black Forest Labs settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfl: Option<BflSettings>,
    /// Other providers' settings, kept as sent.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// An `imageInference` task.
///
/// Build Kontext \[pro\] requests with [`crate::Kontext::builder`], which validates
/// every rule; this struct is the wire form and accepts any model. Fields it does
/// not know are kept in `extra` and sent back as they were.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageInference {
    /// Always `imageInference`.
    #[serde(rename = "taskType")]
    pub task_type: tag::ImageInference,
    /// The task's UUID v4.
    #[serde(rename = "taskUUID")]
    pub task_uuid: Uuid,
    /// The model AIR, `bfl:3@1` for Kontext \[pro\].
    pub model: String,
    /// What to make.
    #[serde(rename = "positivePrompt")]
    pub positive_prompt: String,
    /// Width in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Height in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// The seed (0 to 2^63-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// How many images (1–20).
    #[serde(rename = "numberResults", default, skip_serializing_if = "Option::is_none")]
    pub number_results: Option<u32>,
    /// URL, base64Data or dataURI.
    #[serde(rename = "outputType", default, skip_serializing_if = "Option::is_none")]
    pub output_type: Option<OutputType>,
    /// JPG, PNG or WEBP.
    #[serde(rename = "outputFormat", default, skip_serializing_if = "Option::is_none")]
    pub output_format: Option<OutputFormat>,
    /// 20–99.
    #[serde(rename = "outputQuality", default, skip_serializing_if = "Option::is_none")]
    pub output_quality: Option<u32>,
    /// sync or async.
    #[serde(rename = "deliveryMethod", default, skip_serializing_if = "Option::is_none")]
    pub delivery_method: Option<DeliveryMethod>,
    /// Where the server POSTs each result.
    #[serde(rename = "webhookURL", default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Where the server PUTs each image's bytes.
    #[serde(rename = "uploadEndpoint", default, skip_serializing_if = "Option::is_none")]
    pub upload_endpoint: Option<String>,
    /// Seconds URL outputs stay available (≥ 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// Ask for `cost` in each result.
    #[serde(rename = "includeCost", default, skip_serializing_if = "Option::is_none")]
    pub include_cost: Option<bool>,
    /// Content safety checking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety: Option<Safety>,
    /// Reference images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Inputs>,
    /// Provider settings.
    #[serde(rename = "providerSettings", default, skip_serializing_if = "Option::is_none")]
    pub provider_settings: Option<ProviderSettings>,
    /// Fields this type does not model, sent as given.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ImageInference {
    /// How many results the task produces (`numberResults`, default 1).
    pub fn expected_results(&self) -> u32 {
        self.number_results.unwrap_or(1)
    }

    /// The output type (default URL).
    pub fn output_type(&self) -> OutputType {
        self.output_type.unwrap_or_default()
    }

    /// The output format (default JPG).
    pub fn output_format(&self) -> OutputFormat {
        self.output_format.unwrap_or_default()
    }

    /// The delivery method (default sync).
    pub fn delivery_method(&self) -> DeliveryMethod {
        self.delivery_method.unwrap_or_default()
    }

    /// The reference images, if any.
    pub fn reference_images(&self) -> &[ReferenceImage] {
        self.inputs.as_ref().map(|i| i.reference_images.as_slice()).unwrap_or(&[])
    }
}
