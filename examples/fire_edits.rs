//! Fires a few hundred Kontext edits at the in-process emulator over one
//! multiplexed connection and prints a summary.
//!
//! `cargo run --release --example fire_edits -- [TASKS] [IN_FLIGHT]`
//!
//! Point it at Runware instead with `RUNWARE_API_KEY` set (and optionally
//! `RUNWARE_URL`): the same code, a real server.

use futures::StreamExt;
use runware_emulator::{Emulator, Latency};
use runware_ws::{Client, Kontext, KontextSize};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let tasks: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(300);
    let in_flight: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);

    let (url, key, emulator) = match std::env::var("RUNWARE_API_KEY") {
        Ok(key) => (std::env::var("RUNWARE_URL").unwrap_or_else(|_| runware_ws::client::DEFAULT_URL.into()), key, None),
        Err(_) => {
            let emu = Emulator::builder()
                .api_key("demo")
                .latency(Latency::Range(Duration::from_millis(200), Duration::from_millis(800)))
                .start()
                .await?;
            eprintln!("No RUNWARE_API_KEY: using the in-process emulator at {}", emu.ws_url());
            (emu.ws_url(), "demo".to_string(), Some(emu))
        }
    };

    let client = Client::builder().url(url).api_key(key).max_in_flight(in_flight).connect().await?;
    let started = Instant::now();
    let mut runs = futures::stream::iter(0..tasks)
        .map(|i| {
            let client = client.clone();
            async move {
                let task = Kontext::builder()
                    .prompt(format!("Edit {i}: repaint the scene at golden hour"))
                    .size(KontextSize::ALL[i % 9])
                    .number_results(1 + (i % 3) as u32)
                    .include_cost(true)
                    .build()?;
                let t0 = Instant::now();
                let images = client.kontext(task).await?;
                Ok::<_, runware_ws::ClientError>((images, t0.elapsed()))
            }
        })
        .buffer_unordered(in_flight);

    let (mut ok, mut failed, mut images, mut cost) = (0usize, 0usize, 0usize, 0.0f64);
    let mut latencies = Vec::with_capacity(tasks);
    while let Some(r) = runs.next().await {
        match r {
            Ok((imgs, latency)) => {
                ok += 1;
                images += imgs.len();
                cost += imgs.iter().filter_map(|i| i.cost).sum::<f64>();
                latencies.push(latency);
            }
            Err(e) => {
                failed += 1;
                eprintln!("task failed: {e}");
            }
        }
    }
    let wall = started.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(i).copied().unwrap_or_default()
    };
    let m = client.metrics();
    println!("tasks      {ok} ok, {failed} failed ({in_flight} in flight over one connection)");
    println!("images     {images}, total cost ${cost:.2}");
    println!("wall time  {wall:.2?} ({:.1} tasks/s)", ok as f64 / wall.as_secs_f64());
    println!("latency    p50 {:?}  p95 {:?}  p99 {:?}", pct(0.50), pct(0.95), pct(0.99));
    println!(
        "connection {} connections, {} reconnects, {} duplicates dropped",
        m.connections, m.reconnects, m.duplicates_dropped
    );
    client.close(Duration::from_secs(5)).await;
    if let Some(emu) = emulator {
        let s = emu.stats();
        println!("emulator   {} executions, {} executed twice", s.executions_total, s.double_executed);
        emu.shutdown().await;
    }
    Ok(())
}
