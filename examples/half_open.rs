//! The half-open scenario of RELIABILITY.md, side by side in one run: this client
//! and a minimal SDK-free tokio-tungstenite loop against the same fault schedule.
//!
//! `cargo run --release --example half_open -- [TASKS] [IN_FLIGHT] [RUNS]`
//!
//! Each run starts a fresh in-process emulator (latency 0.5–1.5 s). Three seconds
//! into the run the server goes half-open (it stops reading and writing; TCP stays
//! up) and holds every new WebSocket handshake for 10 s. The run fires TASKS
//! Kontext edits (default 500) at IN_FLIGHT at a time (default 100) and reports the
//! wall time, latency percentiles and how many taskUUIDs the emulator executed
//! twice (must be 0 for both). A third row runs this client with the keepalive
//! it had before it knew about waiting tasks (15 s to a ping, 10 s to dead).
//!
//! The minimal loop is what a careful engineer writes without an SDK: one socket,
//! a ping after 2 s of silence while work is outstanding, the socket declared dead
//! after 6 s of silence, then a reconnect that resumes the session and resends
//! every unanswered task under its own taskUUID (a `conflictTaskUUID` answer is
//! ignored: the resumed session delivers the result).

use futures::{SinkExt, StreamExt};
use runware_emulator::{Emulator, Fault, Latency};
use runware_ws::{Client, Keepalive, Kontext, KontextSize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

const KEY: &str = "half-open-demo";
const FAULT_AT: Duration = Duration::from_secs(3);
const HOLD: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let tasks: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(500);
    let in_flight: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100);
    let runs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1);
    println!(
        "half-open at {FAULT_AT:?}, handshakes held {HOLD:?}, {tasks} tasks, {in_flight} in flight, latency 0.5-1.5 s"
    );
    for run in 1..=runs {
        let client = scenario(tasks, |url| run_client(url, tasks, in_flight, Keepalive::default())).await?;
        let minimal = scenario(tasks, |url| run_minimal(url, tasks, in_flight)).await?;
        // The keepalive before it knew about waiting tasks: the idle bounds always.
        let d = Keepalive::default();
        let old = Keepalive { busy_idle: d.idle, busy_timeout: d.timeout, ..d };
        let before = scenario(tasks, |url| run_client(url, tasks, in_flight, old)).await?;
        println!("run {run}: runware-ws           {client}");
        println!("run {run}: minimal loop         {minimal}");
        println!("run {run}: runware-ws, 15 s/10 s {before}");
    }
    Ok(())
}

/// What one side of a run measured.
struct Outcome {
    wall: Duration,
    latencies: Vec<Duration>,
    executed_twice: u64,
    connections: u64,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut l = self.latencies.clone();
        l.sort();
        let pct = |p: f64| {
            let i = ((l.len() as f64 * p).ceil() as usize).saturating_sub(1).min(l.len().saturating_sub(1));
            l.get(i).copied().unwrap_or_default().as_secs_f64()
        };
        write!(
            f,
            "wall {:5.1} s  p50 {:5.2} s  p99 {:5.2} s  max {:5.2} s  ({} done, {} connections, {} executed twice)",
            self.wall.as_secs_f64(),
            pct(0.50),
            pct(0.99),
            pct(1.0),
            l.len(),
            self.connections,
            self.executed_twice
        )
    }
}

/// Starts an emulator, schedules the fault, runs `side` against it.
async fn scenario<F, Fut>(tasks: usize, side: F) -> Result<Outcome, Box<dyn std::error::Error>>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Duration>, Box<dyn std::error::Error>>>,
{
    let emu = Emulator::builder()
        .api_key(KEY)
        .latency(Latency::Range(Duration::from_millis(500), Duration::from_millis(1500)))
        .start()
        .await?;
    let started = Instant::now();
    let fault = async {
        tokio::time::sleep(FAULT_AT).await;
        // The hold first, so no reconnect slips in between.
        emu.inject(Fault::HoldHandshakes(HOLD));
        emu.inject(Fault::HalfOpen);
    };
    let (latencies, ()) = tokio::join!(side(emu.ws_url()), fault);
    let latencies = latencies?;
    let wall = started.elapsed();
    let stats = emu.stats();
    emu.shutdown().await;
    if latencies.len() != tasks {
        return Err(format!("{} of {tasks} tasks finished", latencies.len()).into());
    }
    Ok(Outcome { wall, latencies, executed_twice: stats.double_executed, connections: stats.connections })
}

fn prompt(i: usize) -> String {
    format!("Edit {i}: repaint the scene at golden hour")
}

/// This client: one `Client`, IN_FLIGHT tasks at a time, default settings but for
/// the keepalive given.
async fn run_client(
    url: String,
    tasks: usize,
    in_flight: usize,
    keepalive: Keepalive,
) -> Result<Vec<Duration>, Box<dyn std::error::Error>> {
    let client =
        Client::builder().url(url).api_key(KEY).max_in_flight(in_flight).keepalive(keepalive).connect().await?;
    let mut runs = futures::stream::iter(0..tasks)
        .map(|i| {
            let client = client.clone();
            async move {
                let task = Kontext::builder().prompt(prompt(i)).size(KontextSize::ALL[i % 9]).build()?;
                let t0 = Instant::now();
                client.kontext(task).await?;
                Ok::<_, runware_ws::ClientError>(t0.elapsed())
            }
        })
        .buffer_unordered(in_flight);
    let mut latencies = Vec::with_capacity(tasks);
    while let Some(r) = runs.next().await {
        latencies.push(r?);
    }
    client.close(Duration::from_secs(2)).await;
    Ok(latencies)
}

/// The minimal loop: see the module doc.
async fn run_minimal(url: String, tasks: usize, in_flight: usize) -> Result<Vec<Duration>, Box<dyn std::error::Error>> {
    const PING_AFTER: Duration = Duration::from_secs(2);
    const DEAD_AFTER: Duration = Duration::from_secs(6);
    let mut next = 0usize;
    let mut pending: HashMap<Uuid, (String, Instant)> = HashMap::new();
    let mut latencies = Vec::with_capacity(tasks);
    let mut session: Option<String> = None;
    let frame = |uuid: Uuid, i: usize| {
        json!([{
            "taskType": "imageInference", "taskUUID": uuid, "model": "bfl:3@1",
            "positivePrompt": prompt(i), "width": KontextSize::ALL[i % 9].dimensions().0,
            "height": KontextSize::ALL[i % 9].dimensions().1, "numberResults": 1,
        }])
        .to_string()
    };
    while latencies.len() < tasks {
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
        let mut auth = json!({"taskType": "authentication", "apiKey": KEY});
        if let Some(s) = &session {
            auth["connectionSessionUUID"] = json!(s);
        }
        ws.send(Message::text(json!([auth]).to_string())).await?;
        let mut last_rx = Instant::now();
        let mut last_ping = Instant::now();
        // Resend what is unanswered, under the same taskUUIDs.
        for (body, _) in pending.values() {
            ws.send(Message::text(body.clone())).await?;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        'socket: loop {
            while pending.len() < in_flight && next < tasks {
                let uuid = Uuid::new_v4();
                let body = frame(uuid, next);
                ws.send(Message::text(body.clone())).await?;
                pending.insert(uuid, (body, Instant::now()));
                next += 1;
            }
            if latencies.len() == tasks {
                break;
            }
            tokio::select! {
                msg = ws.next() => {
                    let Some(Ok(msg)) = msg else { break 'socket };
                    last_rx = Instant::now();
                    let Message::Text(text) = msg else { continue };
                    let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                    for item in v["data"].as_array().into_iter().flatten() {
                        if item["taskType"] == "authentication" {
                            session = item["connectionSessionUUID"].as_str().map(str::to_owned);
                        } else if let Some(uuid) = item["taskUUID"].as_str().and_then(|u| u.parse().ok())
                            && let Some((_, t0)) = pending.remove(&uuid)
                        {
                            latencies.push(t0.elapsed());
                        }
                    }
                    for e in v["errors"].as_array().into_iter().flatten() {
                        if e["code"] != "conflictTaskUUID" {
                            return Err(format!("task failed: {e}").into());
                        }
                    }
                }
                _ = tick.tick() => {
                    let silent = last_rx.elapsed();
                    if !pending.is_empty() && silent >= DEAD_AFTER {
                        break 'socket;
                    }
                    if !pending.is_empty() && silent >= PING_AFTER && last_ping.elapsed() >= PING_AFTER {
                        last_ping = Instant::now();
                        let _ = ws.send(Message::text(r#"[{"taskType":"ping","ping":true}]"#)).await;
                    }
                }
            }
        }
    }
    Ok(latencies)
}
