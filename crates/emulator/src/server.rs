//! The HTTP side: the WebSocket upgrade on any path, `GET /images/{file}`,
//! `GET /stats`, `GET /stats/tasks`; and the handle that controls a running emulator.

use super::config::{Config, EmulatorBuilder};
use super::connection;
use super::error::EmulatorError;
use super::faults::Fault;
use super::imaging;
use super::inject;
use super::state::Shared;
use super::stats::{Stats, TaskStats};
use super::sync::lock;
use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, State, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Largest inbound WebSocket message (reference images travel inline).
const MAX_MESSAGE: usize = 64 << 20;
/// How often expired sessions, tasks and images are swept.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// A running emulator. Dropping it shuts the emulator down.
pub struct EmulatorHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorHandle").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl EmulatorHandle {
    /// `ws://127.0.0.1:PORT/v1`
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1", self.addr)
    }

    /// `http://127.0.0.1:PORT`
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the emulator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats.snapshot()
    }

    /// How many times `task_uuid` was executed (over every API key); must be 0 or 1.
    pub fn executions(&self, task_uuid: Uuid) -> u32 {
        self.shared.tasks.executions(task_uuid, self.shared.cfg.api_keys.len())
    }

    /// Every retained task's counters and status, by taskUUID (also
    /// `GET /stats/tasks`). Tasks the store has forgotten (past the retention or its
    /// bounds) are not listed.
    pub fn task_stats(&self) -> HashMap<Uuid, TaskStats> {
        self.shared.tasks.task_stats()
    }

    /// How many WebSocket connections are open right now.
    pub fn open_connections(&self) -> usize {
        self.shared.conns.len()
    }

    /// Applies a fault now, or arms it (the "next" kinds).
    pub fn inject(&self, fault: Fault) {
        inject::inject(&self.shared, fault);
    }

    /// Stops serving: drops every connection, stops running tasks, waits for the
    /// server to end (at most a few seconds).
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let tasks: Vec<_> = lock(&self.tasks).drain(..).collect();
        for t in tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), t).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Installs the ring crypto provider for rustls once (an installed one is kept).
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl EmulatorBuilder {
    /// Binds and starts serving.
    pub async fn start(self) -> Result<EmulatorHandle, EmulatorError> {
        start(self.into_config()?).await
    }
}

/// Binds, builds the shared state and spawns the server.
async fn start(cfg: Config) -> Result<EmulatorHandle, EmulatorError> {
    let listener = tokio::net::TcpListener::bind(cfg.bind)
        .await
        .map_err(|source| EmulatorError::Bind { addr: cfg.bind, source })?;
    let addr = listener.local_addr().map_err(|source| EmulatorError::Bind { addr: cfg.bind, source })?;
    install_crypto_provider();
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(EmulatorError::HttpClient)?;
    let (tx, rx) = watch::channel(false);
    let shared = Arc::new(Shared::new(cfg, format!("http://{addr}"), http, rx));

    let app = Router::new()
        .route("/images/{file}", get(image))
        .route("/stats", get(stats))
        .route("/stats/tasks", get(task_stats))
        .fallback(upgrade)
        .with_state(shared.clone());
    let down = shared.clone();
    let server = tokio::spawn(async move {
        let result =
            axum::serve(listener, app).with_graceful_shutdown(async move { down.shutdown_signal().await }).await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "emulator server ended with an error");
        }
    });
    let sweeper = tokio::spawn(sweep(shared.clone()));
    tracing::info!(%addr, "Runware emulator listening");
    Ok(EmulatorHandle { shared, addr, shutdown: tx, tasks: Mutex::new(vec![server, sweeper]) })
}

async fn sweep(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.shutdown_signal() => return,
        }
        shared.sessions.sweep(shared.cfg.session_ttl);
        shared.tasks.sweep(shared.cfg.result_retention);
        shared.media.sweep();
    }
}

/// Any path: a WebSocket upgrade (subject to the handshake faults), else 404.
async fn upgrade(
    State(shared): State<Arc<Shared>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return (StatusCode::NOT_FOUND, "Runware emulator: connect with a WebSocket on any path\n").into_response();
    };
    if shared.faults.in_outage() {
        return (StatusCode::SERVICE_UNAVAILABLE, "service unavailable (outage, fault injection)\n").into_response();
    }
    if shared.faults.take_refuse_handshake() {
        return (StatusCode::SERVICE_UNAVAILABLE, "handshake refused (fault injection)\n").into_response();
    }
    if let Some(until) = shared.faults.handshake_hold() {
        tokio::time::sleep_until(until).await;
    }
    if let Some(delay) = shared.faults.take_slow_handshake() {
        tokio::time::sleep(delay).await;
    }
    if shared.conns.len() >= shared.cfg.max_connections || shared.is_shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections\n").into_response();
    }
    ws.max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| connection::run(shared, socket))
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<Stats> {
    Json(shared.stats.snapshot())
}

async fn task_stats(State(shared): State<Arc<Shared>>) -> Json<HashMap<Uuid, TaskStats>> {
    Json(shared.tasks.task_stats())
}

/// `GET /images/{uuid}.{ext}`: an uploaded or generated image.
async fn image(State(shared): State<Arc<Shared>>, Path(file): Path<String>) -> Response {
    let stem = file.split('.').next().unwrap_or_default();
    let Ok(uuid) = Uuid::parse_str(stem) else {
        return (StatusCode::NOT_FOUND, "no such image\n").into_response();
    };
    match imaging::fetch(&shared, uuid).await {
        Some(Ok((bytes, mime))) => ([(header::CONTENT_TYPE, mime)], bytes).into_response(),
        Some(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        None => (StatusCode::NOT_FOUND, "no such image (or it expired)\n").into_response(),
    }
}
