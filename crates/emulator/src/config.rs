//! The emulator's builder, its defaults and its latency model.

use super::error::EmulatorError;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// How long a task takes before its results appear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latency {
    /// Every task takes exactly this long.
    Fixed(Duration),
    /// Each task takes a duration drawn uniformly from `min..=max` (seeded RNG).
    Range(Duration, Duration),
}

impl Default for Latency {
    fn default() -> Self {
        Latency::Range(Duration::from_secs(2), Duration::from_secs(5))
    }
}

/// Entry point: `Emulator::builder()…start().await`.
#[derive(Debug)]
pub struct Emulator;

impl Emulator {
    /// A builder with the defaults: key `test-key`, latency 2–5 s, sessions kept 120 s,
    /// idle connections closed after 120 s, results answerable by `getResponse` for 1 h
    /// (at most 100 000 tasks), bound to `127.0.0.1:0`.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }
}

/// Configures and starts an emulator.
#[derive(Clone, Debug)]
pub struct EmulatorBuilder {
    pub(crate) api_keys: Vec<String>,
    pub(crate) latency: Latency,
    pub(crate) session_ttl: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) result_retention: Duration,
    pub(crate) max_retained_tasks: usize,
    pub(crate) max_retained_bytes: usize,
    pub(crate) max_sessions: usize,
    pub(crate) max_connections: usize,
    pub(crate) seed: Option<u64>,
    pub(crate) bind: SocketAddr,
    pub(crate) render_divisor: u32,
    pub(crate) quirks: Vec<Quirk>,
}

impl Default for EmulatorBuilder {
    fn default() -> Self {
        EmulatorBuilder {
            api_keys: Vec::new(),
            latency: Latency::default(),
            session_ttl: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(120),
            result_retention: Duration::from_secs(3600),
            max_retained_tasks: 100_000,
            max_retained_bytes: 1 << 30,
            max_sessions: 10_000,
            max_connections: 10_000,
            seed: None,
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            render_divisor: 1,
            quirks: Vec::new(),
        }
    }
}

impl EmulatorBuilder {
    /// Accepts this API key (repeatable). With none, `test-key` is accepted.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_keys.push(key.into());
        self
    }
    /// The latency of every task (default `Range(2s, 5s)`).
    pub fn latency(mut self, latency: Latency) -> Self {
        self.latency = latency;
        self
    }
    /// How long undelivered results wait for a resume (default 120 s).
    pub fn session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self
    }
    /// Closes a connection after this long without any client message (default 120 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }
    /// How long `getResponse` answers for a finished task (default 1 h).
    pub fn result_retention(mut self, retention: Duration) -> Self {
        self.result_retention = retention;
        self
    }
    /// The most tasks the store keeps; the oldest are forgotten first (default 100 000).
    pub fn max_retained_tasks(mut self, max: usize) -> Self {
        self.max_retained_tasks = max.max(1);
        self
    }
    /// The most result bytes the store keeps (default 1 GiB); the oldest tasks are
    /// forgotten first.
    pub fn max_retained_bytes(mut self, max: usize) -> Self {
        self.max_retained_bytes = max.max(1);
        self
    }
    /// The most sessions kept at once (default 10 000).
    pub fn max_sessions(mut self, max: usize) -> Self {
        self.max_sessions = max.max(1);
        self
    }
    /// The most open WebSocket connections; more get HTTP 503 (default 10 000).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }
    /// Seeds the RNG behind random seeds, latencies and UUIDs (default: from entropy).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    /// The address to listen on (default `127.0.0.1:0`).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Renders output images at width/`n` × height/`n` (at least 1×1; default 1).
    ///
    /// A speed knob for big tests: encoding a full-size picture dominates the cost of
    /// a task. It breaks size faithfulness (the decoded image is smaller than the
    /// requested `width`×`height`); the result items themselves are unchanged.
    pub fn render_divisor(mut self, n: u32) -> Self {
        self.render_divisor = n.max(1);
        self
    }

    /// Departs from the behaviour the client's guarantees assume, in one way
    /// (repeatable): a server that differs, for `runware conformance` to detect.
    pub fn quirk(mut self, quirk: Quirk) -> Self {
        if !self.quirks.contains(&quirk) {
            self.quirks.push(quirk);
        }
        self
    }

    /// The configuration this builder describes (defaults filled in), or why it
    /// is not usable.
    pub(crate) fn into_config(mut self) -> Result<Config, EmulatorError> {
        if let Latency::Range(min, max) = self.latency
            && min > max
        {
            return Err(EmulatorError::Config(format!("latency range {min:?}..{max:?} is empty")));
        }
        if self.api_keys.is_empty() {
            self.api_keys.push("test-key".to_string());
        }
        Ok(Config {
            api_keys: self.api_keys,
            latency: self.latency,
            session_ttl: self.session_ttl,
            idle_timeout: self.idle_timeout,
            result_retention: self.result_retention,
            max_retained_tasks: self.max_retained_tasks,
            max_retained_bytes: self.max_retained_bytes,
            max_sessions: self.max_sessions,
            max_connections: self.max_connections,
            seed: self.seed,
            bind: self.bind,
            render_divisor: self.render_divisor,
            quirks: self.quirks,
        })
    }
}

/// The settled configuration.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub api_keys: Vec<String>,
    pub latency: Latency,
    pub session_ttl: Duration,
    pub idle_timeout: Duration,
    pub result_retention: Duration,
    pub max_retained_tasks: usize,
    pub max_retained_bytes: usize,
    pub max_sessions: usize,
    pub max_connections: usize,
    pub seed: Option<u64>,
    pub bind: SocketAddr,
    pub render_divisor: u32,
    pub quirks: Vec<Quirk>,
}

/// An API key's index in [`Config::api_keys`]: tasks and sessions are scoped by it.
pub(crate) type KeyId = usize;

impl Config {
    /// True when the emulator was started with `quirk`.
    pub fn has(&self, quirk: Quirk) -> bool {
        self.quirks.contains(&quirk)
    }

    /// The key's id, if the key is accepted.
    pub fn key_id(&self, key: &str) -> Option<KeyId> {
        self.api_keys.iter().position(|k| k == key)
    }
}

/// A way the emulator can depart from the server behaviours this project's
/// guarantees rest on (each undocumented by Runware, and checked against the real
/// server by `runware conformance`). By default the emulator has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Quirk {
    /// A reconnecting client's `connectionSessionUUID` is ignored: every
    /// authentication starts a new session.
    NoResume,
    /// A resumed session does not replay the results it could not deliver (they
    /// stay available through `getResponse`).
    NoReplay,
    /// A taskUUID is unique per session only: sent on another session it runs again.
    NoCrossSessionConflict,
    /// `getResponse` knows only async tasks: for a task delivered on the socket
    /// (sync) it answers no items.
    NoSyncGetResponse,
    /// Application-level pings go unanswered.
    NoPong,
    /// Error objects do not say which task they are about (no `taskUUID`).
    ErrorsWithoutTaskUuid,
}

impl Quirk {
    /// Every quirk, in the order of their names.
    pub const ALL: [Quirk; 6] = [
        Quirk::NoResume,
        Quirk::NoReplay,
        Quirk::NoCrossSessionConflict,
        Quirk::NoSyncGetResponse,
        Quirk::NoPong,
        Quirk::ErrorsWithoutTaskUuid,
    ];

    /// The quirk's name (`runware serve --quirk NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Quirk::NoResume => "no-resume",
            Quirk::NoReplay => "no-replay",
            Quirk::NoCrossSessionConflict => "no-cross-session-conflict",
            Quirk::NoSyncGetResponse => "no-sync-get-response",
            Quirk::NoPong => "no-pong",
            Quirk::ErrorsWithoutTaskUuid => "errors-without-task-uuid",
        }
    }
}

impl std::fmt::Display for Quirk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Quirk {
    type Err = EmulatorError;

    fn from_str(s: &str) -> Result<Quirk, EmulatorError> {
        Quirk::ALL.into_iter().find(|q| q.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Quirk::ALL.iter().map(|q| q.name()).collect();
            EmulatorError::Config(format!("no quirk {s:?} (known: {})", names.join(", ")))
        })
    }
}
