//! Through the emulator (`runware_emulator`) at zero latency: the same
//! concurrency sweep as `e2e` (client and baseline, 1 / 64 / 512 / 4,096 in
//! flight), with the emulator in place of the minimal server. The emulator runs
//! on its own thread (a current-thread runtime), so its CPU is measured apart.
//!
//! `cargo bench --bench emulator`
//!
//! Writes `target/bench-latency-emulator.json`.

mod common;

use common::{Target, ThreadClock, sweep};
use runware_emulator::{Emulator, Latency};
use std::time::Duration;

fn start_emulator() -> Target {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("bench-emulator".into())
        .spawn(move || {
            let clock = ThreadClock::current();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let emu = Emulator::builder()
                    .api_key("k")
                    .latency(Latency::Fixed(Duration::ZERO))
                    .seed(1)
                    .start()
                    .await
                    .expect("emulator");
                tx.send(Target { url: emu.ws_url(), clock }).expect("report");
                std::future::pending::<()>().await;
            });
        })
        .expect("emulator thread");
    rx.recv().expect("emulator started")
}

fn main() {
    let rt = sweep::runtime();
    let target = start_emulator();
    if let Ok(spec) = std::env::var("RUNWARE_BENCH_ONLY") {
        return sweep::only(&rt, &target, &spec);
    }
    let mut c = sweep::criterion();
    let results = sweep::run(&mut c, &rt, "emulator", &target);
    let paired = if sweep::wants_paired() { sweep::paired(&rt, &target, true) } else { Vec::new() };
    sweep::report("through the emulator at zero latency", &results, &paired, "bench-latency-emulator.json");
    c.final_summary();
}
