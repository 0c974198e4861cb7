//! The Runware wire format (`docs/protocol.md` in the repository): client tasks, server envelopes,
//! result items and errors, exact to the field name, shared by the client and the
//! emulator.

mod api_key;
mod decode;
mod error;
mod inference;
pub mod kontext;
pub mod pricing;
mod reference;
mod result;
mod shared_str;
pub mod tag;
mod task;
mod validation;
mod wire;

pub use api_key::ApiKey;
pub use decode::{DecodeError, Frame, MalformedItem, decode_frame};
pub use error::{ApiError, ErrorKind, ErrorParameter, RetryAdvice};
pub use inference::{
    BflSettings, DeliveryMethod, ImageInference, Inputs, OutputFormat, OutputType, ProviderSettings, Safety, SafetyMode,
};
pub use kontext::{Kontext, KontextBuilder, KontextSize, KontextTask};
pub use reference::{ReferenceImage, sniff_image_mime};
pub use result::{ResultItem, TaskStatus};
pub use shared_str::SharedStr;
pub use task::{
    Authentication, ClientTask, GetResponse, ImageUpload, MediaOperation, MediaStorage, Ping, RawTask, encode_frame,
};
pub use validation::{ValidationError, Violation};
