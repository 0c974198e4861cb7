//! The concurrency sweep shared by `e2e` and `emulator`: the client and the
//! baseline against one server, in the same run, at 1, 64, 512 and 4,096 tasks
//! in flight (closed loop), timed by criterion (`iter_custom`, one iteration =
//! one task), with every task's latency and the CPU time of the measured runs
//! recorded on the side.

use super::{Baseline, Sample, Summary, Target, ThreadClock};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use runware_ws::Client;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const CONCURRENCY: [usize; 4] = [1, 64, 512, 4096];
pub const SAMPLES: usize = 10;

pub type Results = BTreeMap<(usize, &'static str), Summary>;

/// The runtime the clients run on: a 2-worker multi-thread runtime (what
/// `#[tokio::main]` gives on this machine), or a current-thread one with
/// `RUNWARE_BENCH_RUNTIME=current`.
pub fn runtime() -> tokio::runtime::Runtime {
    match std::env::var("RUNWARE_BENCH_RUNTIME").as_deref() {
        Ok("current") => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        _ => tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build(),
    }
    .expect("runtime")
}

pub fn runtime_name() -> &'static str {
    match std::env::var("RUNWARE_BENCH_RUNTIME").as_deref() {
        Ok("current") => "current-thread",
        _ => "multi-thread, 2 workers",
    }
}

pub fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args()
}

type Store = Arc<Mutex<Vec<Sample>>>;

/// Criterion's measured calls are the last `SAMPLES` calls (after its warm-up).
fn measured(store: &Store) -> Vec<Sample> {
    let all = store.lock().expect("store");
    all[all.len().saturating_sub(SAMPLES)..].to_vec()
}

async fn client_for(url: &str, concurrency: usize) -> Client {
    Client::builder().url(url).api_key("k").max_in_flight(concurrency).connect().await.expect("connect")
}

/// `total` Kontext tasks through `client`, `concurrency` at a time.
fn run_client(clock: ThreadClock, client: &Client, concurrency: usize, total: u64) -> impl Future<Output = Sample> {
    let client = client.clone();
    super::measure(clock, concurrency, total, move || {
        let client = client.clone();
        async move {
            black_box(client.kontext(super::kontext_task()).await.expect("task"));
        }
    })
}

/// The same load through the baseline.
fn run_baseline(
    clock: ThreadClock,
    baseline: &Baseline,
    concurrency: usize,
    total: u64,
) -> impl Future<Output = Sample> {
    let baseline = baseline.clone();
    super::measure(clock, concurrency, total, move || {
        let baseline = baseline.clone();
        async move {
            black_box(baseline.run().await);
        }
    })
}

/// Times `run(iters)` with criterion; returns the samples of its measured calls.
fn timed<F, Fut>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    rt: &tokio::runtime::Runtime,
    run: F,
) -> Vec<Sample>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Sample>,
{
    let store: Store = Arc::default();
    g.bench_function(id, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let (sample, store) = (run(iters), store.clone());
            async move {
                let s = sample.await;
                let wall = s.wall;
                store.lock().expect("store").push(s);
                wall
            }
        })
    });
    measured(&store)
}

/// Runs the sweep in criterion group `group`; returns what was measured.
pub fn run(c: &mut Criterion, rt: &tokio::runtime::Runtime, group: &str, target: &Target) -> Results {
    let mut results = Results::new();
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    let clock = target.clock;
    for conc in CONCURRENCY {
        // The client, as a user would configure it for this load.
        let client = rt.block_on(client_for(&target.url, conc));
        let m = timed(&mut g, BenchmarkId::new("client", conc), rt, |iters| run_client(clock, &client, conc, iters));
        if !m.is_empty() {
            let mut s = super::summarize(&m);
            let metrics = client.metrics();
            s.tasks_per_frame_out = metrics.tasks_submitted as f64 / metrics.frames_out.max(1) as f64;
            s.items_per_frame_in = metrics.tasks_completed as f64 / metrics.frames_in.max(1) as f64;
            results.insert((conc, "client"), s);
        }
        rt.block_on(client.close(Duration::from_secs(1)));

        let baseline = rt.block_on(Baseline::connect(&target.url, "k"));
        let m =
            timed(&mut g, BenchmarkId::new("baseline", conc), rt, |iters| run_baseline(clock, &baseline, conc, iters));
        if !m.is_empty() {
            results.insert((conc, "baseline"), super::summarize(&m));
        }
    }
    g.finish();
    results
}

/// Paired runs: for each concurrency, `ROUNDS` alternating client / baseline runs
/// (fresh connections), so that a burst of load from elsewhere on the machine hits
/// both sides of a pair. Ratios are the medians of the per-pair ratios.
pub const ROUNDS: usize = 7;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Paired {
    pub concurrency: usize,
    pub tasks_per_run: u64,
    pub throughput_ratio: f64,
    pub cpu_ratio: f64,
    pub p50_delta_us: f64,
    pub client_cpu_us_per_task: f64,
    pub baseline_cpu_us_per_task: f64,
    pub pair_throughput_ratios: Vec<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `slow_server`: fewer tasks per run (the emulator does ~50 k tasks/s, not ~500 k).
pub fn paired(rt: &tokio::runtime::Runtime, target: &Target, slow_server: bool) -> Vec<Paired> {
    paired_at(rt, target, slow_server, &CONCURRENCY)
}

/// `RUNWARE_BENCH_PAIRED=512,4096`: only the paired pass, at those concurrencies
/// (no criterion sweep): the quick before/after check of a change.
pub fn paired_only() -> Option<Vec<usize>> {
    let spec = std::env::var("RUNWARE_BENCH_PAIRED").ok()?;
    Some(spec.split(',').map(|c| c.trim().parse().expect("RUNWARE_BENCH_PAIRED=concurrency,…")).collect())
}

/// The paired pass at the given concurrencies.
pub fn paired_at(rt: &tokio::runtime::Runtime, target: &Target, slow_server: bool, levels: &[usize]) -> Vec<Paired> {
    let clock = target.clock;
    let mut out = Vec::new();
    for &conc in levels {
        let tasks: u64 = match (slow_server, conc) {
            (false, 1) => 3_000,
            (false, _) => (conc as u64 * 40).max(30_000),
            (true, 1) => 300,
            (true, _) => (conc as u64 * 8).max(5_000),
        };
        let (client, baseline) = rt.block_on(async {
            let c = client_for(&target.url, conc).await;
            let b = Baseline::connect(&target.url, "k").await;
            (c, b)
        });
        let (mut tput, mut cpu, mut dp50, mut cc, mut bc) = (vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..ROUNDS {
            let cs = super::summarize(&[rt.block_on(run_client(clock, &client, conc, tasks))]);
            let bs = super::summarize(&[rt.block_on(run_baseline(clock, &baseline, conc, tasks))]);
            tput.push(cs.tasks_per_sec / bs.tasks_per_sec);
            cpu.push(cs.cpu_us_per_task / bs.cpu_us_per_task);
            dp50.push(cs.p50_us - bs.p50_us);
            cc.push(cs.cpu_us_per_task);
            bc.push(bs.cpu_us_per_task);
        }
        rt.block_on(client.close(Duration::from_secs(1)));
        out.push(Paired {
            concurrency: conc,
            tasks_per_run: tasks,
            throughput_ratio: median(tput.clone()),
            cpu_ratio: median(cpu),
            p50_delta_us: median(dp50),
            client_cpu_us_per_task: median(cc),
            baseline_cpu_us_per_task: median(bc),
            pair_throughput_ratios: tput,
        });
    }
    out
}

/// Prints the paired table.
pub fn report_paired(paired: &[Paired]) {
    if paired.is_empty() {
        return;
    }
    println!(
        "\n== paired runs ({}): {ROUNDS} alternating client/baseline runs per row, medians of the pair ratios",
        runtime_name()
    );
    println!(
        "{:>6} {:>8} | {:>7} {:>9} {:>6} | {:>9} {:>9} | pair throughput ratios",
        "flight", "tasks", "tput ×", "Δp50 µs", "cpu ×", "cpu µs cl", "cpu µs bl"
    );
    for p in paired {
        let pairs: Vec<String> = p.pair_throughput_ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "{:>6} {:>8} | {:>7.2} {:>+9.1} {:>6.2} | {:>9.2} {:>9.2} | {}",
            p.concurrency,
            p.tasks_per_run,
            p.throughput_ratio,
            p.p50_delta_us,
            p.cpu_ratio,
            p.client_cpu_us_per_task,
            p.baseline_cpu_us_per_task,
            pairs.join(" ")
        );
    }
    let cpu = |c: usize| paired.iter().find(|p| p.concurrency == c).map(|p| p.client_cpu_us_per_task);
    if let (Some(a), Some(b)) = (cpu(4096), cpu(64)) {
        println!("client CPU per task at 4096 vs 64 in flight (paired medians): {:.2}×", a / b);
    }
}

/// Prints the table with the ratios to the baseline and writes `json_name`.
pub fn report(title: &str, results: &Results, paired: &[Paired], json_name: &str) {
    report_paired(paired);
    if results.is_empty() {
        return;
    }
    println!("\n== {title} ({}; runtime: {})", super::machine(), runtime_name());
    println!(
        "{:>6} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} | {:>7} {:>9} {:>6}",
        "flight", "who", "tasks/s", "p50 µs", "p99 µs", "cpu µs", "srv µs", "tput ×", "Δp50 µs", "cpu ×"
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
            _ => (String::new(), String::new(), String::new()),
        };
        println!(
            "{:>6} {:>9} {:>10.0} {:>10.1} {:>10.1} {:>10.2} {:>10.2} | {:>7} {:>9} {:>6}",
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
    println!("(cpu µs: client-process CPU per task, server thread excluded; srv µs: the server thread's)");
    for ((conc, who), s) in results {
        if *who == "client" {
            println!(
                "client at {conc:>4} in flight: {:.1} tasks per outbound frame, {:.1} items per inbound frame",
                s.tasks_per_frame_out, s.items_per_frame_in
            );
        }
    }
    let growth =
        |who: &'static str| Some(results.get(&(4096, who))?.cpu_us_per_task / results.get(&(64, who))?.cpu_us_per_task);
    if let Some(g) = growth("client") {
        println!(
            "CPU per task at 4096 vs 64 in flight: client {g:.2}×, baseline {:.2}×",
            growth("baseline").unwrap_or(f64::NAN)
        );
    }
    let doc = serde_json::json!({
        "title": title,
        "machine": super::machine(),
        "runtime": runtime_name(),
        "results": json,
        "paired": paired,
    });
    let path = super::report_path(json_name);
    if std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap_or_default()).is_ok() {
        println!("latencies written to {}", path.display());
    }
}

/// `RUNWARE_BENCH_ONLY=who,concurrency,tasks` (who: client or baseline): one
/// plain run without criterion, for profilers (`valgrind --tool=callgrind`, `perf`).
pub fn only(rt: &tokio::runtime::Runtime, target: &Target, spec: &str) {
    let parts: Vec<&str> = spec.split(',').collect();
    let [who, conc, tasks] = parts[..] else { panic!("RUNWARE_BENCH_ONLY=who,concurrency,tasks") };
    let conc: usize = conc.parse().expect("concurrency");
    let tasks: u64 = tasks.parse().expect("tasks");
    let clock = target.clock;
    let sample = rt.block_on(async {
        match who {
            "client" => {
                let client = client_for(&target.url, conc).await;
                let s = run_client(clock, &client, conc, tasks).await;
                println!("client metrics: {:?}", client.metrics());
                s
            }
            "baseline" => run_baseline(clock, &Baseline::connect(&target.url, "k").await, conc, tasks).await,
            other => panic!("unknown client {other:?}"),
        }
    });
    println!("{who} at {conc} in flight: {:?}", super::summarize(&[sample]));
}

/// The paired pass runs after a full sweep (`cargo bench --bench e2e`), not when
/// criterion only lists, tests or runs a filtered subset.
pub fn wants_paired() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flags_ok = !args.iter().any(|a| a == "--list" || a == "--test" || a == "--profile-time");
    let filtered = args.iter().any(|a| !a.starts_with('-'));
    flags_ok && !filtered && std::env::var_os("RUNWARE_BENCH_NO_PAIRS").is_none()
}
