//! A faithful local emulator of the Runware WebSocket API (the wire contract is
//! `docs/protocol.md` in the repository), for testing a service without an account,
//! with faults on demand; also the benchmark peer of `runware-ws` and the `runware`
//! CLI's key-less default.
//!
//! Add it as a dev-dependency and point your client at [`EmulatorHandle::ws_url`].
//! A test of how a service handles a provider timeout and a dropped socket:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use runware_emulator::{Emulator, FailMatch, FailRule, Fault, Latency};
//! use runware_ws::{Client, Kontext, KontextSize, RetryAdvice};
//! use std::time::Duration;
//!
//! let emu = Emulator::builder()
//!     .api_key("test-key")
//!     .latency(Latency::Fixed(Duration::from_millis(5)))
//!     .render_divisor(16) // small pictures: fast tests
//!     .start()
//!     .await?;
//! // The first task whose prompt contains "flaky" fails on the server.
//! emu.inject(Fault::FailTasks(
//!     FailRule::new("timeoutProvider", FailMatch::PromptContains("flaky".into())).times(1),
//! ));
//! let client = Client::builder().url(emu.ws_url()).api_key("test-key").connect().await?;
//! let edit = || Kontext::builder().prompt("a flaky edit").size(KontextSize::R1x1).build();
//!
//! let failed = client.kontext(edit()?).await.unwrap_err();
//! assert_eq!(failed.error.retry_advice(), RetryAdvice::NewTaskUuid);
//!
//! emu.inject(Fault::Drop); // the client reconnects and resends under the same taskUUID
//! let images = client.kontext(edit()?).await?;
//! assert_eq!(images.len(), 1);
//! assert_eq!(emu.stats().double_executed, 0); // nothing ran twice
//! emu.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Task types served: `imageInference` (FLUX.1 Kontext \[pro\]), `promptEnhance`,
//! `imageUpload`, `mediaStorage`, `getResponse`, plus `authentication` and `ping`.
//!
//! **Faults** ([`Fault`]): connection faults (drops, close frames, half-open sockets,
//! refused or slow handshakes, an [`Fault::Outage`]), protocol noise (stray errors,
//! garbage, duplicate results) and task faults: [`Fault::FailTasks`] arms a
//! [`FailRule`] that fails accepted tasks on the server (by taskUUID, by prompt, at
//! random, or the next N), possibly after some of their results, as Runware does
//! (protocol §7.1); [`Fault::Nsfw`] flags results `NSFWContent`.
//!
//! **Billing** ([`Stats::images_billed`], [`Stats::billed_micro_usd`]): every image
//! produced is billed at $0.04, also when its task later fails; duplicates and
//! replays are not. [`EmulatorHandle::task_stats`] (and `GET /stats/tasks`) gives
//! each task's executions, billed images and status; `GET /stats` the totals.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use runware_emulator::{Emulator, FailMatch, FailRule, Fault};
//!
//! let emu = Emulator::builder().render_divisor(8).start().await?;
//! // The first task of each prompt containing "line" times out after one result.
//! emu.inject(Fault::FailTasks(
//!     FailRule::new("timeoutProvider", FailMatch::PromptContains("line".into())).after(1).times(1),
//! ));
//! # Ok(()) }
//! ```
//!
//! Modules, in layers (each imports only from the layers below it; `tests/layers.rs`
//! in the workspace root checks that no two modules import each other):
//!
//! 1. the ground: [`config`] (builder and defaults), `error`, `stats` (counters),
//!    `sync` (the one lock policy), `render` (pictures), `validate` (server-side
//!    Kontext and `promptEnhance` checks);
//! 2. stores, which know nothing of connections: `session` (sessions and their
//!    buffered results), `tasks` (the per-key task store behind conflicts and
//!    `getResponse`), `media` (served images and uploads), `failures` (which task a
//!    [`FailRule`] fails), `faults` (armed faults);
//! 3. `link` (a connection as others reach it: its queue, its authentication, the
//!    registry) and `state` (the stores together, behind one `Arc`);
//! 4. work over the state: `imaging` (rendering and fetching images), `references`,
//!    `webhook`, `inference` (running an image task, billing, failing a task),
//!    `enhance` (a `promptEnhance` task), `handlers` (one function per task type);
//! 5. the top: `connection` (one socket: reader, writer, supervisor), `inject`
//!    (applying a fault), `server` (HTTP routes, the WebSocket upgrade, the handle).

#![warn(missing_docs)]

pub mod config;
mod connection;
mod enhance;
mod error;
mod failures;
mod faults;
mod handlers;
mod imaging;
mod inference;
mod inject;
mod link;
mod media;
pub mod proxy;
mod references;
mod render;
mod server;
mod session;
mod state;
mod stats;
mod sync;
mod tasks;
mod validate;
mod webhook;

pub use config::{Emulator, EmulatorBuilder, Latency, Quirk};
pub use error::EmulatorError;
pub use failures::{FailMatch, FailRule};
pub use faults::Fault;
pub use server::EmulatorHandle;
pub use stats::{Stats, TaskStats};
