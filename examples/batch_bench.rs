//! Whole-process peers for `benches/batch.sh` (BENCHMARKS.md, "The batch"):
//!
//! - `batch_bench serve` — the benches' zero-latency server (benches/common), one
//!   result per frame, in a process of its own; prints its URL, then `first-task
//!   UNIX_NS` whenever a new connection sends its first task; runs until killed;
//! - `batch_bench bare URL N C` — the benches' baseline client (a bare
//!   tokio-tungstenite loop: no validation, deadlines or recovery), N tasks, C in flight;
//! - `batch_bench library URL N C` — the same load through `runware_ws::Client`;
//! - `batch_bench jobs URL N C` — the same load as jobs of a `runware_jobs::Runner`
//!   (memory store): what the runner's guarantees cost per task over a plain submit.
//!
//! Each process does only its job, so `/usr/bin/time` around it is its CPU.

#[path = "../benches/common/mod.rs"]
mod common;

use common::{Baseline, Reply, Server, closed_loop, kontext_task};
use runware_ws::Client;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    match args.first().map(String::as_str) {
        Some("serve") => {
            let server = Server::start_with(Reply::Url, true);
            println!("{}", server.url());
            // Then, each time a new connection sends its first task: "first-task UNIX_NS".
            let mut last = 0;
            loop {
                let now = server.first_task.load(std::sync::atomic::Ordering::Relaxed);
                if now != last {
                    last = now;
                    println!("first-task {now}");
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        Some(mode @ ("bare" | "library" | "jobs")) if args.len() == 4 => {
            let url = args[1].clone();
            let n: u64 = args[2].parse().expect("N: a number of tasks");
            let c: usize = args[3].parse().expect("C: tasks in flight");
            rt.block_on(async move {
                if mode == "bare" {
                    let base = Baseline::connect(&url, "bench-key").await;
                    closed_loop(c, n, move || {
                        let base = base.clone();
                        async move {
                            base.run().await;
                        }
                    })
                    .await;
                } else if mode == "jobs" {
                    let client =
                        Client::builder().url(url).api_key("bench-key").max_in_flight(c).build().expect("client");
                    client.wait_connected().await.expect("connected");
                    let runner = runware_jobs::Runner::builder(client).keep_outputs(false).build();
                    let task = kontext_task();
                    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
                    closed_loop(c, n, move || {
                        let (runner, task, next) = (runner.clone(), task.clone(), next.clone());
                        async move {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            runner.run(runware_jobs::Job::new(i.to_string(), task)).await.expect("a result");
                        }
                    })
                    .await;
                } else {
                    let client =
                        Client::builder().url(url).api_key("bench-key").max_in_flight(c).build().expect("client");
                    client.wait_connected().await.expect("connected");
                    let task = kontext_task();
                    closed_loop(c, n, move || {
                        let (client, task) = (client.clone(), task.clone());
                        async move {
                            client.kontext(task.with_task_uuid(uuid::Uuid::new_v4())).await.expect("a result");
                        }
                    })
                    .await;
                }
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        }
        _ => {
            eprintln!("usage: batch_bench serve | bare URL N C | library URL N C | jobs URL N C");
            std::process::exit(2);
        }
    }
}
