//! End to end over loopback: `Client` against a minimal answering server, and the
//! hand-written baseline client (`common::Baseline`) against the same server, in
//! the same run, at 1, 64, 512 and 4,096 tasks in flight (closed loop).
//!
//! `cargo bench --bench e2e`
//!
//! Criterion times throughput (one iteration = one task) with `iter_custom`; the
//! bench also records every task's latency and the CPU time of the measured runs
//! (`getrusage(RUSAGE_SELF)` minus the server thread's CPU clock), prints a table
//! with the ratios to the baseline and writes `target/bench-latency.json`.
//!
//! `RUNWARE_BENCH_RUNTIME=current` runs the clients on a current-thread runtime
//! (default: a 2-worker multi-thread runtime, as `#[tokio::main]` gives on this machine).

mod common;

use common::{Baseline, Reply, Sample, Server, Summary};
use criterion::{BenchmarkId, Criterion, Throughput};
use runware_ws::Client;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CONCURRENCY: [usize; 4] = [1, 64, 512, 4096];
const SAMPLES: usize = 10;

fn runtime() -> tokio::runtime::Runtime {
    match std::env::var("RUNWARE_BENCH_RUNTIME").as_deref() {
        Ok("current") => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        _ => tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build(),
    }
    .expect("runtime")
}

type Store = Arc<Mutex<Vec<Sample>>>;

/// Criterion's measured calls are the last `SAMPLES` calls (after its warm-up).
fn measured(store: &Store) -> Vec<Sample> {
    let all = store.lock().expect("store");
    all[all.len().saturating_sub(SAMPLES)..].to_vec()
}

fn main() {
    let rt = runtime();
    let server = Arc::new(Server::start(Reply::Url));
    let url = server.url();
    if let Ok(spec) = std::env::var("RUNWARE_BENCH_ONLY") {
        return only(&rt, &server, &spec);
    }
    let mut c = Criterion::default()
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut results: BTreeMap<(usize, &'static str), Summary> = BTreeMap::new();
    {
        let mut g = c.benchmark_group("e2e");
        g.throughput(Throughput::Elements(1));
        for conc in CONCURRENCY {
            // The client, as a user would configure it for this load.
            let client = rt.block_on(async {
                Client::builder().url(url.clone()).api_key("k").max_in_flight(conc).connect().await.expect("connect")
            });
            let store: Store = Arc::default();
            g.bench_function(BenchmarkId::new("client", conc), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let (client, server, store) = (client.clone(), server.clone(), store.clone());
                    async move {
                        let s = common::measure(&server, conc, iters, move || {
                            let client = client.clone();
                            async move {
                                let images = client.kontext(common::kontext_task()).await.expect("task");
                                black_box(images);
                            }
                        })
                        .await;
                        let wall = s.wall;
                        store.lock().expect("store").push(s);
                        wall
                    }
                })
            });
            let m = measured(&store);
            if !m.is_empty() {
                results.insert((conc, "client"), common::summarize(&m));
            }
            rt.block_on(client.close(Duration::from_secs(1)));

            let baseline = rt.block_on(Baseline::connect(&url, "k"));
            let store: Store = Arc::default();
            g.bench_function(BenchmarkId::new("baseline", conc), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let (baseline, server, store) = (baseline.clone(), server.clone(), store.clone());
                    async move {
                        let s = common::measure(&server, conc, iters, move || {
                            let baseline = baseline.clone();
                            async move {
                                black_box(baseline.run().await);
                            }
                        })
                        .await;
                        let wall = s.wall;
                        store.lock().expect("store").push(s);
                        wall
                    }
                })
            });
            let m = measured(&store);
            if !m.is_empty() {
                results.insert((conc, "baseline"), common::summarize(&m));
            }
        }
        g.finish();
    }
    report(&results);
    c.final_summary();
}

/// `RUNWARE_BENCH_ONLY=who,concurrency,tasks` (who: client or baseline): one
/// plain run without criterion, for profilers (`valgrind --tool=callgrind`, `perf`).
fn only(rt: &tokio::runtime::Runtime, server: &Arc<Server>, spec: &str) {
    let parts: Vec<&str> = spec.split(',').collect();
    let [who, conc, tasks] = parts[..] else { panic!("RUNWARE_BENCH_ONLY=who,concurrency,tasks") };
    let conc: usize = conc.parse().expect("concurrency");
    let tasks: u64 = tasks.parse().expect("tasks");
    let url = server.url();
    let sample = rt.block_on(async {
        match who {
            "client" => {
                let client =
                    Client::builder().url(url).api_key("k").max_in_flight(conc).connect().await.expect("connect");
                let c = client.clone();
                let s = common::measure(server, conc, tasks, move || {
                    let client = c.clone();
                    async move {
                        black_box(client.kontext(common::kontext_task()).await.expect("task"));
                    }
                })
                .await;
                println!("client metrics: {:?}", client.metrics());
                s
            }
            "baseline" => {
                let baseline = Baseline::connect(&url, "k").await;
                common::measure(server, conc, tasks, move || {
                    let baseline = baseline.clone();
                    async move {
                        black_box(baseline.run().await);
                    }
                })
                .await
            }
            other => panic!("unknown client {other:?}"),
        }
    });
    println!("{who} at {conc} in flight: {:?}", common::summarize(&[sample]));
}

fn report(results: &BTreeMap<(usize, &'static str), Summary>) {
    if results.is_empty() {
        return;
    }
    println!("\n== end to end over loopback ({}; runtime: {})", common::machine(), runtime_name());
    println!(
        "{:>6} {:>9} {:>12} {:>10} {:>10} {:>12} {:>12} | {:>8} {:>10} {:>8}",
        "tasks", "client", "tasks/s", "p50 µs", "p99 µs", "cpu µs/task", "srv µs/task", "tput ×", "Δp50 µs", "cpu ×"
    );
    let mut json = serde_json::Map::new();
    for ((conc, who), s) in results {
        let base = results.get(&(*conc, "baseline"));
        let (ratio, dp50, cpu) = match base {
            Some(b) if *who != "baseline" => (
                format!("{:.2}", s.tasks_per_sec / b.tasks_per_sec),
                format!("{:+.1}", s.p50_us - b.p50_us),
                format!("{:.2}", s.cpu_us_per_task / b.cpu_us_per_task),
            ),
            _ => ("".into(), "".into(), "".into()),
        };
        println!(
            "{:>6} {:>9} {:>12.0} {:>10.1} {:>10.1} {:>12.2} {:>12.2} | {:>8} {:>10} {:>8}",
            conc,
            who,
            s.tasks_per_sec,
            s.p50_us,
            s.p99_us,
            s.cpu_us_per_task,
            s.server_cpu_us_per_task,
            ratio,
            dp50,
            cpu
        );
        json.insert(format!("{who}/{conc}"), serde_json::to_value(s).unwrap_or_default());
    }
    let growth =
        |who: &'static str| Some(results.get(&(4096, who))?.cpu_us_per_task / results.get(&(64, who))?.cpu_us_per_task);
    if let Some(g) = growth("client") {
        println!(
            "client CPU per task, 4096 vs 64 in flight: {g:.2}× (baseline: {:.2}×)",
            growth("baseline").unwrap_or(0.0)
        );
    }
    let doc = serde_json::json!({
        "machine": common::machine(),
        "runtime": runtime_name(),
        "results": json,
    });
    let path = common::report_path("bench-latency.json");
    if std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap_or_default()).is_ok() {
        println!("latencies written to {}", path.display());
    }
}

fn runtime_name() -> &'static str {
    match std::env::var("RUNWARE_BENCH_RUNTIME").as_deref() {
        Ok("current") => "current-thread",
        _ => "multi-thread, 2 workers",
    }
}
