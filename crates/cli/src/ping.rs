//! `runware ping`: what it measures, on a connection of its own —
//! 1. connect: TCP + TLS + WebSocket handshake;
//! 2. auth: the `authentication` round trip;
//! 3. ping: `--count` application pings (`{"taskType":"ping","ping":true}` → `pong`),
//!    each round trip timed.

use super::EXIT_OK;
use super::args::{ApiArgs, PingArgs};
use super::embedded::Endpoint;
use super::error::CliError;
use super::output::Output;
use futures::{SinkExt, StreamExt};
use runware_ws::protocol::{Authentication, ClientTask, Ping, SharedStr, decode_frame, encode_frame};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// How long to wait for any one reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(api: ApiArgs, args: PingArgs, out: &Output) -> Result<u8, CliError> {
    let endpoint = Endpoint::resolve(&api, out).await?;
    let result = ping(&endpoint, &args, out).await;
    endpoint.shutdown().await;
    result
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ping(endpoint: &Endpoint, args: &PingArgs, out: &Output) -> Result<u8, CliError> {
    let url = endpoint.url.clone();
    let conn_err = |reason: String| CliError::Connect { url: url.clone(), reason };
    let t0 = Instant::now();
    let (mut ws, _) = tokio::time::timeout(endpoint.connect_timeout(), tokio_tungstenite::connect_async(url.as_str()))
        .await
        .map_err(|_| conn_err(format!("no connection within {:?}", endpoint.connect_timeout())))?
        .map_err(|e| conn_err(describe(&e)))?;
    let connect = t0.elapsed();

    let auth = ClientTask::Authentication(Authentication::new(endpoint.api_key().clone(), None));
    let frame = encode_frame(std::slice::from_ref(&auth)).map_err(|e| CliError::Other(e.to_string()))?;
    let t1 = Instant::now();
    ws.send(Message::Text(frame.into())).await.map_err(|e| conn_err(describe(&e)))?;
    let session = loop {
        let frame = next_frame(&mut ws, &url).await?;
        if let Some(mut err) = frame.errors.into_iter().next() {
            err.redact(endpoint.api_key().expose());
            return Err(CliError::Auth { url: url.clone(), reason: err.to_string() });
        }
        let session = frame
            .items
            .iter()
            .find(|i| i.task_type.as_deref() == Some("authentication"))
            .and_then(|i| i.connection_session_uuid.as_ref().map(ToString::to_string));
        if let Some(s) = session {
            break s;
        }
    };
    let auth_time = t1.elapsed();

    let ping_frame = encode_frame(&[ClientTask::Ping(Ping::default())]).map_err(|e| CliError::Other(e.to_string()))?;
    let mut rtts = Vec::with_capacity(args.count as usize);
    for _ in 0..args.count {
        let t = Instant::now();
        ws.send(Message::Text(ping_frame.clone().into())).await.map_err(|e| conn_err(describe(&e)))?;
        loop {
            let frame = next_frame(&mut ws, &url).await?;
            if frame.items.iter().any(|i| i.pong == Some(true)) {
                break;
            }
        }
        rtts.push(t.elapsed());
    }
    let _ = ws.close(None).await;

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

/// The next decodable text frame, within the reply timeout.
async fn next_frame(ws: &mut Ws, url: &str) -> Result<runware_ws::protocol::Frame, CliError> {
    let conn_err = |reason: String| CliError::Connect { url: url.to_string(), reason };
    loop {
        let msg = tokio::time::timeout(REPLY_TIMEOUT, ws.next())
            .await
            .map_err(|_| conn_err(format!("no reply within {REPLY_TIMEOUT:?}")))?;
        match msg {
            None => return Err(conn_err("the server closed the connection".into())),
            Some(Err(e)) => return Err(conn_err(describe(&e))),
            Some(Ok(Message::Text(t))) => {
                if let Ok(frame) = decode_frame(&SharedStr::from(t)) {
                    return Ok(frame);
                }
            }
            Some(Ok(Message::Close(c))) => {
                let why = c.map(|c| format!(" ({} {})", c.code, c.reason)).unwrap_or_default();
                return Err(conn_err(format!("the server closed the connection{why}")));
            }
            Some(Ok(_)) => {}
        }
    }
}

/// A transport error in a few words (never containing the key: it is not in the URL).
fn describe(e: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Http(resp) => format!("handshake refused with HTTP {}", resp.status()),
        Error::Io(io) => format!("I/O error: {io}"),
        Error::Tls(t) => format!("TLS error: {t}"),
        other => other.to_string(),
    }
}
