//! Client configuration: every knob with its documented default.

use crate::protocol::ApiKey;
use std::time::Duration;

/// Production endpoint.
pub const DEFAULT_URL: &str = "wss://ws-api.runware.ai/v1";

/// The `User-Agent` of the WebSocket handshake unless one is set: the crate and its version.
pub const DEFAULT_USER_AGENT: &str = concat!("runware-ws/", env!("CARGO_PKG_VERSION"));

/// How the client reconnects after a drop: exponential backoff with jitter and a
/// budget of attempts per outage (reset by every successful connection).
#[derive(Clone, Debug, PartialEq)]
pub struct ReconnectPolicy {
    /// Delay before the first retry. Default 100 ms.
    pub initial_delay: Duration,
    /// Largest delay between attempts. Default 5 s.
    pub max_delay: Duration,
    /// Growth factor per attempt. Default 2.0.
    pub multiplier: f64,
    /// Random spread, as a fraction of the delay (0.2 = ±20 %). Default 0.2.
    pub jitter: f64,
    /// Attempts per outage before pending tasks fail with a connection error;
    /// `None` retries until each task's deadline. Default `Some(12)`.
    pub max_attempts: Option<u32>,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: 0.2,
            max_attempts: Some(12),
        }
    }
}

impl ReconnectPolicy {
    /// The delay before attempt `attempt` (1-based), without jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exp = self.multiplier.max(1.0).powi(attempt.saturating_sub(1).min(64) as i32);
        let secs = (self.initial_delay.as_secs_f64() * exp).min(self.max_delay.as_secs_f64());
        Duration::from_secs_f64(secs.max(0.0))
    }

    /// The delay before attempt `attempt`, with jitter: `unit_random` is a number in
    /// [0, 1) (the supervisor draws it at random; tests pass fixed values).
    pub fn delay(&self, attempt: u32, unit_random: f64) -> Duration {
        let base = self.base_delay(attempt).as_secs_f64();
        let spread = base * self.jitter.clamp(0.0, 1.0);
        let secs = base - spread + 2.0 * spread * unit_random.clamp(0.0, 1.0);
        Duration::from_secs_f64(secs.max(0.0))
    }

    /// True when attempt number `attempt` is still within the budget.
    pub fn allows(&self, attempt: u32) -> bool {
        self.max_attempts.is_none_or(|max| attempt <= max)
    }
}

/// Application-level keepalive: a `ping` task when the socket has been quiet, and
/// a dead-socket verdict when nothing comes back in time (how half-open TCP
/// connections are found). Any inbound frame counts as life, so a slow server
/// that answers pings is never declared dead.
///
/// It knows whether anyone is waiting: while tasks are in flight the socket is
/// pinged after `busy_idle` of silence and declared dead `busy_timeout` after an
/// unanswered ping (a dead socket is found in about 6 s by default, instead of
/// stalling every task for `idle + timeout`); with nothing in flight it keeps the
/// gentle `idle`/`timeout` cadence, just enough to stay under a server's idle timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// With nothing in flight: ping after this long without any inbound message. Default 15 s.
    pub idle: Duration,
    /// With nothing in flight: declare the socket dead when nothing arrives this long
    /// after a ping. Default 10 s.
    pub timeout: Duration,
    /// With tasks in flight: ping after this long without any inbound message.
    /// Default 2 s (never more than `idle`).
    pub busy_idle: Duration,
    /// With tasks in flight: declare the socket dead when nothing arrives this long
    /// after a ping. Default 4 s (never more than `timeout`).
    pub busy_timeout: Duration,
}

impl Keepalive {
    /// `idle` and `timeout` for an idle socket, with the default busy bounds.
    pub const fn new(idle: Duration, timeout: Duration) -> Keepalive {
        Keepalive { idle, timeout, busy_idle: Duration::from_secs(2), busy_timeout: Duration::from_secs(4) }
    }

    /// `(ping after, dead after)` for a socket with work waiting (`busy`) or not.
    pub fn bounds(&self, busy: bool) -> (Duration, Duration) {
        if busy {
            (self.busy_idle.min(self.idle), self.busy_timeout.min(self.timeout))
        } else {
            (self.idle, self.timeout)
        }
    }

    /// How often the writer checks the socket: a quarter of the shortest bound.
    pub(crate) fn check_every(&self) -> Duration {
        let (bi, bt) = self.bounds(true);
        (self.idle.min(self.timeout).min(bi).min(bt) / 4).clamp(Duration::from_millis(5), Duration::from_secs(1))
    }
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive::new(Duration::from_secs(15), Duration::from_secs(10))
    }
}

/// Polling of `getResponse` (async delivery, and recovery after a reconnect).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollPolicy {
    /// First poll after an async acknowledgement. Default 250 ms.
    pub initial: Duration,
    /// Longest interval between polls. Default 2 s.
    pub max: Duration,
    /// After a resend on a resumed session is answered with `conflictTaskUUID`,
    /// wait this long for the session to deliver before polling. Default 2 s.
    pub resume_grace: Duration,
}

impl Default for PollPolicy {
    fn default() -> Self {
        PollPolicy {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(2),
            resume_grace: Duration::from_secs(2),
        }
    }
}

impl PollPolicy {
    /// The interval before poll number `n` (0-based): ×1.5 per poll up to `max`.
    pub fn interval(&self, n: u32) -> Duration {
        let secs = self.initial.as_secs_f64() * 1.5f64.powi(n.min(32) as i32);
        Duration::from_secs_f64(secs.min(self.max.as_secs_f64()))
    }
}

/// Everything a [`crate::Client`] needs; built by [`crate::ClientBuilder`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// WebSocket URL. Default [`DEFAULT_URL`].
    pub url: String,
    /// The API key (never printed).
    pub api_key: ApiKey,
    /// Most tasks outstanding at once; callers wait for a slot. Default 1024.
    pub max_in_flight: usize,
    /// Default deadline of a task, from submission to its last result. Default 5 min.
    pub task_timeout: Duration,
    /// Time allowed for TCP + TLS + WebSocket handshake. Default 10 s.
    pub connect_timeout: Duration,
    /// Time allowed for the authentication reply. Default 10 s.
    pub auth_timeout: Duration,
    /// Reconnect policy.
    pub reconnect: ReconnectPolicy,
    /// Keepalive policy.
    pub keepalive: Keepalive,
    /// getResponse polling policy.
    pub poll: PollPolicy,
    /// Largest inbound message. Default 64 MiB.
    pub max_message_size: usize,
    /// Most tasks sent together in one JSON-array frame. Default 32; 1 sends one per frame.
    pub max_tasks_per_frame: usize,
    /// Extra trusted CA certificates (DER), on top of the webpki roots.
    pub extra_roots: Vec<Vec<u8>>,
    /// Trust only `extra_roots`, not the webpki roots. Default false.
    pub only_extra_roots: bool,
    /// `User-Agent` of the WebSocket handshake. Default [`DEFAULT_USER_AGENT`].
    pub user_agent: String,
    /// HTTP CONNECT proxy. Default: from `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` and
    /// `NO_PROXY`, read at each connect.
    pub proxy: super::proxy::ProxyPolicy,
}

impl ClientConfig {
    /// The defaults, for `api_key`.
    pub fn new(api_key: ApiKey) -> Self {
        ClientConfig {
            url: DEFAULT_URL.to_string(),
            api_key,
            max_in_flight: 1024,
            task_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(10),
            reconnect: ReconnectPolicy::default(),
            keepalive: Keepalive::default(),
            poll: PollPolicy::default(),
            max_message_size: 64 << 20,
            max_tasks_per_frame: 32,
            extra_roots: Vec::new(),
            only_extra_roots: false,
            user_agent: DEFAULT_USER_AGENT.to_string(),
            proxy: super::proxy::ProxyPolicy::FromEnvironment,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters_within_bounds() {
        let p = ReconnectPolicy::default();
        assert_eq!(p.base_delay(1), Duration::from_millis(100));
        assert_eq!(p.base_delay(2), Duration::from_millis(200));
        assert_eq!(p.base_delay(30), Duration::from_secs(5));
        for r in [0.0, 0.5, 0.999] {
            let d = p.delay(3, r);
            assert!(d >= Duration::from_millis(320) && d <= Duration::from_millis(480), "{d:?}");
        }
        assert!(p.allows(12) && !p.allows(13));
    }

    #[test]
    fn debug_hides_the_key() {
        let c = ClientConfig::new(ApiKey::new("sk-secret-value"));
        assert!(!format!("{c:?}").contains("sk-secret-value"));
    }
}
