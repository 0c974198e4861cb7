//! `runware ping`: what it measures, on a client of its own (one connection) —
//! 1. connect: TCP + TLS + WebSocket handshake;
//! 2. auth: the `authentication` round trip;
//! 3. ping: `--count` application pings (`{"taskType":"ping","ping":true}` → `pong`),
//!    each round trip timed.

use super::EXIT_OK;
use super::args::{ApiArgs, PingArgs};
use super::embedded::Endpoint;
use super::error::CliError;
use super::output::Output;
use runware_ws::client::ConnectionState;
use std::time::Duration;

/// How long to wait for any one pong.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(api: ApiArgs, args: PingArgs, out: &Output) -> Result<u8, CliError> {
    let endpoint = Endpoint::resolve(&api, out).await?;
    let result = ping(&endpoint, &args, out).await;
    endpoint.shutdown().await;
    result
}

async fn ping(endpoint: &Endpoint, args: &PingArgs, out: &Output) -> Result<u8, CliError> {
    let url = endpoint.url.clone();
    // One client, one connection, no reconnects: a ping measures this socket.
    let client = endpoint.connect(|b| b.max_in_flight(1)).await?;
    let timings = client.diagnostics().last_connect.unwrap_or_default();
    let (connect, auth_time) = (timings.handshake, timings.authentication);
    let session = match &*client.state().borrow() {
        ConnectionState::Connected { session } => session.clone(),
        other => other.to_string(),
    };
    let mut rtts = Vec::with_capacity(args.count as usize);
    for _ in 0..args.count {
        match client.ping(REPLY_TIMEOUT).await {
            Ok(rtt) => rtts.push(rtt),
            Err(e) => {
                client.close(Duration::ZERO).await;
                return Err(CliError::Connect { url, reason: e.to_string() });
            }
        }
    }
    client.close(Duration::from_secs(1)).await;

    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    let pings: Vec<f64> = rtts.iter().copied().map(ms).collect();
    let min = pings.iter().copied().fold(f64::INFINITY, f64::min);
    let max = pings.iter().copied().fold(0.0, f64::max);
    let avg = pings.iter().sum::<f64>() / pings.len().max(1) as f64;
    if out.json {
        out.json_value(&serde_json::json!({
            "url": url,
            "connectMs": ms(connect),
            "authMs": ms(auth_time),
            "pingMs": pings,
            "minMs": min,
            "avgMs": (avg * 1e3).round() / 1e3,
            "maxMs": max,
        }));
    } else {
        let layers =
            if url.starts_with("wss:") { "TCP + TLS + WebSocket handshake" } else { "TCP + WebSocket handshake" };
        out.line(&format!("connected to {url} in {:.3} ms ({layers})", ms(connect)));
        out.line(&format!("authenticated in {:.3} ms (session {session})", ms(auth_time)));
        for (i, p) in pings.iter().enumerate() {
            out.line(&format!("ping {}: {p:.3} ms", i + 1));
        }
        out.line(&format!("round trip min/avg/max {min:.3}/{avg:.3}/{max:.3} ms"));
    }
    Ok(EXIT_OK)
}
