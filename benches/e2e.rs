//! End to end over loopback: `Client` against a minimal answering server
//! (`common::Server`: answers auth, and one canned URL item per task, a frame's
//! replies batched into one frame), and the hand-written baseline client
//! (`common::Baseline`) against the same server, in the same run, at 1, 64, 512
//! and 4,096 tasks in flight.
//!
//! `cargo bench --bench e2e`
//!
//! Prints a table with the ratios to the baseline (throughput, p50/p99 latency,
//! CPU per task from `getrusage(RUSAGE_SELF)` minus the server thread's CPU clock)
//! and writes `target/bench-latency.json`. `RUNWARE_BENCH_RUNTIME=current` runs the
//! clients on a current-thread runtime; `RUNWARE_BENCH_ONLY=client,512,20000` does
//! one plain run for a profiler; `RUNWARE_BENCH_PAIRED=512,4096` only the paired
//! runs at those concurrencies.

mod common;

use common::{Reply, Server, sweep};

fn main() {
    let rt = sweep::runtime();
    let server = Server::start(Reply::Url);
    let target = server.target();
    if let Ok(spec) = std::env::var("RUNWARE_BENCH_ONLY") {
        return sweep::only(&rt, &target, &spec);
    }
    if let Some(levels) = sweep::paired_only() {
        let paired = sweep::paired_at(&rt, &target, false, &levels);
        return sweep::report_paired(&paired);
    }
    let mut c = sweep::criterion();
    let results = sweep::run(&mut c, &rt, "e2e", &target);
    let paired = if sweep::wants_paired() { sweep::paired(&rt, &target, false) } else { Vec::new() };
    sweep::report("end to end over loopback, minimal server", &results, &paired, "bench-latency.json");
    c.final_summary();
}
