//! Where a command connects: the Runware API with the user's key, or — with no key
//! and no `--url` — an emulator started inside this process on 127.0.0.1.

use super::args::{ApiArgs, LatencyArg, parse_latency};
use super::error::CliError;
use super::output::{Output, human_duration};
use runware_emulator::{Emulator, EmulatorHandle, Latency};
use runware_ws::client::{Client, ClientBuilder, DEFAULT_URL};
use runware_ws::protocol::ApiKey;
use std::time::Duration;

/// Default `--connect-timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The embedded emulator's latency unless `RUNWARE_EMULATOR_LATENCY` says otherwise.
const EMBEDDED_LATENCY: Latency = Latency::Range(Duration::from_secs(2), Duration::from_secs(5));

/// A resolved endpoint: URL, key, and the embedded emulator when there is one
/// (kept alive as long as this value).
pub struct Endpoint {
    /// The WebSocket URL.
    pub url: String,
    api_key: ApiKey,
    connect_timeout: Duration,
    embedded: Option<EmulatorHandle>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("url", &self.url).field("embedded", &self.embedded.is_some()).finish()
    }
}

/// What a batch journal records as the endpoint: the URL a run will use, or
/// `embedded emulator` when it will start one (no key and no `--url`).
pub fn endpoint_id(api: &ApiArgs) -> String {
    match (&api.url, &api.api_key) {
        (None, None) => runware_jobs::store::journal::EMBEDDED_ENDPOINT.to_string(),
        (url, _) => url.clone().unwrap_or_else(|| DEFAULT_URL.to_string()),
    }
}

/// True when a run with these flags uses the embedded emulator.
pub fn is_embedded(api: &ApiArgs) -> bool {
    api.url.is_none() && api.api_key.is_none()
}

impl Endpoint {
    /// The API with the user's key, or the embedded emulator when there is neither
    /// a key nor a URL (one notice line on stderr says so).
    pub async fn resolve(api: &ApiArgs, out: &Output) -> Result<Endpoint, CliError> {
        let connect_timeout = api.connect_timeout.unwrap_or(CONNECT_TIMEOUT);
        match (&api.url, &api.api_key) {
            (url, Some(key)) => Ok(Endpoint {
                url: url.clone().unwrap_or_else(|| DEFAULT_URL.to_string()),
                api_key: ApiKey::new(key.clone()),
                connect_timeout,
                embedded: None,
            }),
            (Some(_), None) => {
                Err(CliError::Usage("--url needs an API key: set RUNWARE_API_KEY or pass --api-key".to_string()))
            }
            (None, None) => {
                let key = format!("embedded-{}", uuid::Uuid::new_v4());
                let latency = embedded_latency()?;
                let handle = Emulator::builder()
                    .api_key(key.clone())
                    .latency(latency)
                    .start()
                    .await
                    .map_err(|e| CliError::Other(format!("cannot start the embedded emulator: {e}")))?;
                let url = handle.ws_url();
                out.notice(&format!(
                    "No RUNWARE_API_KEY set: using the embedded Runware emulator at {url} (images are synthetic)"
                ));
                Ok(Endpoint { url, api_key: ApiKey::new(key), connect_timeout, embedded: Some(handle) })
            }
        }
    }

    /// Connects and authenticates, within the connect timeout.
    pub async fn connect(&self, configure: impl FnOnce(ClientBuilder) -> ClientBuilder) -> Result<Client, CliError> {
        let agent = format!("runware-cli/{} {}", env!("CARGO_PKG_VERSION"), runware_ws::client::DEFAULT_USER_AGENT);
        let mut builder = Client::builder().url(self.url.clone()).api_key(self.api_key.clone()).user_agent(agent);
        for der in super::ca::roots() {
            builder = builder.add_root_certificate(der.clone());
        }
        let builder = configure(builder);
        let client = builder.build().map_err(|e| CliError::from_client(e, &self.url))?;
        match tokio::time::timeout(self.connect_timeout, client.wait_connected()).await {
            Ok(Ok(())) => Ok(client),
            Ok(Err(e)) => {
                client.close(Duration::ZERO).await;
                Err(connect_error(e, &self.url))
            }
            Err(_) => {
                let state = client.state().borrow().to_string();
                client.close(Duration::ZERO).await;
                Err(CliError::Connect {
                    url: self.url.clone(),
                    reason: format!(
                        "no authenticated connection within {} (last state: {state})",
                        human_duration(self.connect_timeout)
                    ),
                })
            }
        }
    }

    /// The key (never print it).
    pub fn key(&self) -> &ApiKey {
        &self.api_key
    }

    /// True when this is the embedded emulator.
    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    /// A connection for a batch or a worker: `concurrency` tasks in flight, each
    /// given `timeout`, reconnecting for ever (an outage of any length is waited
    /// out; the caller bounds it).
    pub async fn connect_batch(&self, concurrency: usize, timeout: Duration) -> Result<Client, CliError> {
        let reconnect = runware_ws::client::ReconnectPolicy {
            max_attempts: None,
            max_delay: Duration::from_secs(5),
            ..Default::default()
        };
        self.connect(|b| {
            b.max_in_flight(concurrency).task_timeout(timeout).max_tasks_per_frame(32).reconnect(reconnect)
        })
        .await
    }

    /// Stops the embedded emulator, if any.
    pub async fn shutdown(self) {
        if let Some(h) = self.embedded {
            h.shutdown().await;
        }
    }
}

/// A failure to connect, always with exit code 3 (or 2 for a bad configuration).
fn connect_error(e: runware_ws::client::ClientError, url: &str) -> CliError {
    match CliError::from_client(e, url) {
        CliError::Task(other) => CliError::Connect { url: url.to_string(), reason: other.to_string() },
        classified => classified,
    }
}

fn embedded_latency() -> Result<Latency, CliError> {
    match std::env::var("RUNWARE_EMULATOR_LATENCY") {
        Ok(s) if !s.trim().is_empty() => match parse_latency(&s) {
            Ok(LatencyArg::Fixed(d)) => Ok(Latency::Fixed(d)),
            Ok(LatencyArg::Range(a, b)) => Ok(Latency::Range(a, b)),
            Err(e) => Err(CliError::Usage(format!("RUNWARE_EMULATOR_LATENCY: {e}"))),
        },
        _ => Ok(EMBEDDED_LATENCY),
    }
}
