//! `--metrics-addr HOST:PORT`: the engine's metrics (`runware_ws::client::telemetry`) and,
//! under `runware serve`, the emulator's, as Prometheus text at `http://HOST:PORT/metrics`.
//!
//! The recorder is metrics-exporter-prometheus's; the HTTP side is a few lines of our own
//! on the runtime (one GET per connection, `Connection: close`), so port 0 works and the
//! bound address is printed.

use super::error::CliError;
use super::output::Output;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Histogram buckets (seconds): sub-millisecond on loopback up to a slow Kontext edit.
const BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
/// Most scrapes served at once.
const MAX_CONNECTIONS: usize = 16;
/// A request's head must arrive within this.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The running endpoint; it stops when dropped.
pub struct MetricsServer {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Installs the Prometheus recorder and serves it at `addr`; says where on stderr.
pub async fn start(addr: &str, out: &Output) -> Result<MetricsServer, CliError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::Usage(format!("--metrics-addr {addr}: cannot listen there: {e}")))?;
    let bound = listener.local_addr().map_err(|e| CliError::Other(format!("--metrics-addr {addr}: {e}")))?;
    let handle = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .map_err(|e| CliError::Other(format!("metrics buckets: {e}")))?
        .install_recorder()
        .map_err(|e| CliError::Other(format!("cannot install the metrics recorder: {e}")))?;
    let task = tokio::spawn(serve(listener, handle));
    out.notice(&format!("Metrics (Prometheus) at http://{bound}/metrics"));
    Ok(MetricsServer { task })
}

async fn serve(listener: TcpListener, handle: PrometheusHandle) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut upkeep = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                // Over the bound, the connection is closed unanswered.
                let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
                let handle = handle.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let _ = tokio::time::timeout(READ_TIMEOUT, answer(stream, &handle)).await;
                });
            }
            _ = upkeep.tick() => handle.run_upkeep(),
        }
    }
}

async fn answer(mut stream: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = path.split(|b| *b == b'?').next().unwrap_or_default();
    let (status, body) = match (method, path) {
        (b"GET", b"/metrics" | b"/") => ("200 OK", handle.render()),
        (b"GET", _) => ("404 Not Found", "not found: the metrics are at /metrics\n".to_string()),
        _ => ("405 Method Not Allowed", "GET /metrics\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Stops the task it holds when dropped.
pub struct ExportOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for ExportOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Under `runware serve`: the emulator's counters, copied into the recorder every second.
pub fn export_emulator_stats(
    stats: impl Fn() -> runware_emulator::Stats + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let s = stats();
            for (name, value) in [
                ("runware_emulator_connections_total", s.connections),
                ("runware_emulator_auths_total", s.auths),
                ("runware_emulator_auth_failures_total", s.auth_failures),
                ("runware_emulator_tasks_received_total", s.tasks_received),
                ("runware_emulator_executions_total", s.executions_total),
                ("runware_emulator_double_executed_total", s.double_executed),
                ("runware_emulator_conflicts_total", s.conflicts),
                ("runware_emulator_results_delivered_total", s.results_delivered),
                ("runware_emulator_pings_total", s.pings),
                ("runware_emulator_get_responses_total", s.get_responses),
                ("runware_emulator_faults_injected_total", s.faults_injected),
                ("runware_emulator_images_billed_total", s.images_billed),
                ("runware_emulator_uploads_total", s.uploads),
            ] {
                metrics::counter!(name).absolute(value);
            }
            metrics::gauge!("runware_emulator_open_connections").set(s.open_connections as f64);
            metrics::gauge!("runware_emulator_outstanding_tasks").set(s.outstanding as f64);
        }
    })
}
