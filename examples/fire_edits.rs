//! Fires N Kontext edits as jobs of one `runware_jobs::Runner` over one
//! multiplexed connection, and prints one JSON line:
//! `{"ok":…,"failed":…,"images":…,"billedUsd":…,"retries":…,"wallS":…}`.
//!
//! ```text
//! cargo run --release --example fire_edits -- --url URL --api-key KEY --n N --concurrency C \
//!     --number-results K [--prompt TEMPLATE] [--retries R] [--store FILE]
//! ```
//!
//! - Job *i*'s key is *i*; `{i}` in TEMPLATE is replaced by *i*.
//! - A failure the server reports is retried (at most R times) under a new
//!   taskUUID, for the missing images only; anything of unknown outcome is
//!   recovered under its own taskUUID. Nothing runs twice.
//! - `--store FILE` records every attempt and image in a JSONL journal: a re-run
//!   counts every job (those an earlier run finished included) and sends nothing
//!   for them; one killed mid-run resumes its open attempts under their taskUUIDs.
//! - Without `--url`, the emulator runs in process (and `--api-key` may be left out).

use runware_emulator::{Emulator, Latency};
use runware_jobs::{Job, JobTask, JournalStore, RetryPolicy, Runner};
use runware_ws::{Client, Kontext, KontextSize, ReconnectPolicy};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The settled command line.
struct Args {
    url: Option<String>,
    api_key: Option<String>,
    n: usize,
    concurrency: usize,
    number_results: u32,
    prompt: String,
    retries: u32,
    store: Option<std::path::PathBuf>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        url: None,
        api_key: None,
        n: 100,
        concurrency: 64,
        number_results: 1,
        prompt: "Edit {i}: repaint the scene at golden hour".into(),
        retries: 3,
        store: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String, rule: &str| v.parse::<u64>().map_err(|_| format!("{flag}: {rule}, got {v:?}"));
        match flag.as_str() {
            "--url" => a.url = Some(value()?),
            "--api-key" => a.api_key = Some(value()?),
            "--n" => a.n = number(value()?, "a count")? as usize,
            "--concurrency" => a.concurrency = number(value()?, "a count of at least 1")?.max(1) as usize,
            "--number-results" => {
                a.number_results = u32::try_from(number(value()?, "1 to 4")?).map_err(|_| "--number-results: 1 to 4")?
            }
            "--prompt" => a.prompt = value()?,
            "--retries" => a.retries = u32::try_from(number(value()?, "a count")?).unwrap_or(u32::MAX),
            "--store" => a.store = Some(value()?.into()),
            "-h" | "--help" => {
                return Err("usage: fire_edits --url URL --api-key KEY --n N --concurrency C --number-results K \
                            [--prompt TEMPLATE] [--retries R] [--store FILE]"
                    .into());
            }
            other => return Err(format!("unknown flag {other} (see --help)")),
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let (url, key, emulator) = match args.url.clone() {
        Some(url) => {
            let key = args.api_key.clone().or_else(|| std::env::var("RUNWARE_API_KEY").ok());
            (url, key.ok_or("--api-key KEY (or RUNWARE_API_KEY) is needed with --url")?, None)
        }
        None => {
            let emu = Emulator::builder()
                .api_key("demo")
                .latency(Latency::Range(Duration::from_millis(200), Duration::from_millis(800)))
                .start()
                .await?;
            eprintln!("No --url: running the emulator in process at {}", emu.ws_url());
            (emu.ws_url(), "demo".to_string(), Some(emu))
        }
    };
    // Outages are waited out: the runner recovers under the same taskUUIDs.
    let reconnect = ReconnectPolicy { max_attempts: None, ..ReconnectPolicy::default() };
    let client = Client::builder()
        .url(url.clone())
        .api_key(key)
        .max_in_flight(args.concurrency)
        .reconnect(reconnect)
        .connect()
        .await?;
    let policy = RetryPolicy { retries: args.retries, ..RetryPolicy::default() };
    let mut runner = Runner::builder(client.clone()).policy(policy);
    let store = match &args.store {
        Some(path) => {
            let endpoint = if emulator.is_some() { "embedded emulator" } else { url.as_str() };
            let store = Arc::new(JournalStore::open(path, endpoint).await?);
            runner = runner.store(store.clone());
            Some(store)
        }
        None => None,
    };
    let runner = runner.build();

    let started = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for i in 0..args.n {
        let edit = Kontext::builder()
            .prompt(args.prompt.replace("{i}", &i.to_string()))
            .size(KontextSize::ALL[i % 9])
            .number_results(args.number_results)
            .include_cost(true)
            .build()?;
        let runner = runner.clone();
        running.spawn(async move { runner.run(Job::new(i.to_string(), JobTask::from(edit))).await });
    }
    let (mut ok, mut failed, mut images, mut billed) = (0u64, 0u64, 0u64, 0.0f64);
    while let Some(joined) = running.join_next().await {
        let (got, is_ok) = match joined? {
            Ok(out) => (out.images, true),
            Err(e) => {
                eprintln!("{e}");
                (e.images, false)
            }
        };
        if is_ok {
            ok += 1;
        } else {
            failed += 1;
        }
        images += got.len() as u64;
        billed += got.iter().filter_map(|i| i.record.cost).sum::<f64>();
    }
    let wall = started.elapsed();
    let retries = runner.status().retries;
    // The fields in the documented order (serde_json's map would sort them).
    println!(
        "{{\"ok\":{ok},\"failed\":{failed},\"images\":{images},\"billedUsd\":{},\"retries\":{retries},\"wallS\":{}}}",
        (billed * 1e6).round() / 1e6,
        (wall.as_secs_f64() * 1000.0).round() / 1000.0
    );
    drop(runner);
    if let Some(store) = store {
        store.finish().await?;
    }
    client.close(Duration::from_secs(5)).await;
    if let Some(emu) = emulator {
        emu.shutdown().await;
    }
    Ok(())
}
