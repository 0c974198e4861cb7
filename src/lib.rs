//! # runware-ws
//!
//! A WebSocket-first client for the [Runware](https://runware.ai) image-inference
//! API, with FLUX.1 Kontext \[pro\] (`bfl:3@1`) editing as its first-class task.
//!
//! Layers:
//! - [`protocol`]: the wire format — typed, validated tasks; a zero-copy frame decoder.
//! - [`client`]: the connection engine — one multiplexed socket, the dispatcher,
//!   keepalive and the self-healing supervisor.
//! - [`redact`]: removal of the API key from log output, dependencies' traces included.
//!
//! Two more packages live in this workspace: `runware-emulator`, a faithful local
//! Runware server with fault injection (add it as a dev-dependency to test your own
//! service), and `runware-cli`, the `runware` command-line tool.

#![warn(missing_docs)]

pub mod client;
pub mod protocol;
pub mod redact;
mod sync;

pub use client::{
    Client, ClientBuilder, ClientConfig, ClientError, Collect, ConnectTimings, ConnectionState, Diagnostics,
    ImageOutput, ImageResult, Keepalive, KontextStream, Lookup, Metrics, PartialFailure, PollPolicy, Proxy,
    ProxyPolicy, QueueDepths, ReconnectPolicy, ReferenceCache, Submit, Task, TaskStream,
};
pub use protocol::{
    ApiError, ApiKey, ErrorKind, ImageInference, Kontext, KontextBuilder, KontextSize, KontextTask, ReferenceImage,
    ResultItem, RetryAdvice, ValidationError, Violation,
};

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
