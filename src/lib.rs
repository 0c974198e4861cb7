//! # runware-ws
//!
//! A WebSocket-first client for the [Runware](https://runware.ai) image-inference
//! API, with FLUX.1 Kontext \[pro\] (`bfl:3@1`) editing as its first-class task.
//!
//! Layers:
//! - [`protocol`]: the wire format — typed, validated tasks; a zero-copy frame decoder.
//! - [`client`]: the connection engine — one multiplexed socket, the dispatcher,
//!   keepalive and the self-healing supervisor.
//! - `emulator` (feature `emulator`, on by default): a local Runware server for tests,
//!   benchmarks and key-less runs.
//! - `cli` (feature `cli`, on by default): the `runware` command-line tool.

#![warn(missing_docs)]

pub mod client;
pub mod protocol;
pub mod redact;

#[cfg(feature = "emulator")]
pub mod emulator;

#[cfg(feature = "cli")]
pub mod cli;

pub use client::{
    Client, ClientBuilder, ClientConfig, ClientError, ConnectionState, ImageOutput, ImageResult, Keepalive,
    KontextStream, Lookup, Metrics, PartialFailure, PollPolicy, QueueDepths, ReconnectPolicy, TaskStream,
};
pub use protocol::{
    ApiError, ApiKey, ErrorKind, ImageInference, Kontext, KontextBuilder, KontextSize, ReferenceImage, ResultItem,
    RetryAdvice, ValidationError, Violation,
};
