//! Decode and route: inbound frames of result items through `decode_frame` AND the
//! dispatcher (`Shared::dispatch`) into the mailboxes of waiting tasks.
//!
//! `cargo bench --bench route`
//!
//! Each frame's tasks are registered in the pending table (untimed) on top of 1,024
//! tasks that stay pending; the timed part is decode + dispatch of a chunk of
//! frames, which completes every task they name. Throughput is in items.
//! The `route` figures are the routing thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`),
//! not wall time, so that other processes on a shared machine do not inflate them:
//! items/s is "on one core". The `scan_floor` entries time one plain pass over the
//! same 2 MiB payload (UTF-8 validation, a byte search, a copy) as a yardstick.

mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use runware_ws::client::bench_support::Router;
use runware_ws::protocol::SharedStr;
use std::hint::black_box;
use std::time::Duration;
use uuid::Uuid;

/// Tasks that stay in the pending table for the whole run (a realistic in-flight load).
const BACKGROUND: u128 = 1024;

struct Workload {
    frames: Vec<SharedStr>,
    tasks: Vec<Uuid>,
    items: usize,
}

fn workload(batch: usize, frames: usize, base64: bool) -> Workload {
    let payload = common::base64_payload(2 << 20);
    let mut tasks = Vec::new();
    let mut out = Vec::new();
    for f in 0..frames {
        let mut items = Vec::with_capacity(batch);
        for i in 0..batch {
            let n = (f * batch + i) as u128;
            let task = Uuid::from_u128((1 << 64) | n);
            tasks.push(task);
            let image = Uuid::from_u128((2 << 64) | n);
            items.push(if base64 { common::base64_item(task, image, &payload) } else { common::url_item(task, image) });
        }
        out.push(SharedStr::from(format!("{{\"data\":[{}]}}", items.join(","))));
    }
    let items = frames * batch;
    Workload { frames: out, tasks, items }
}

fn router() -> Router {
    let mut r = Router::new();
    for i in 0..BACKGROUND {
        r.register(Uuid::from_u128((3 << 64) | i), 1);
    }
    r
}

/// Times `iters` frames; frames are routed in chunks of `w.frames.len()`, with the
/// chunk's tasks registered (untimed) before each chunk.
fn run(r: &mut Router, w: &Workload, iters: u64) -> Duration {
    let cpu = common::ThreadClock::current();
    let mut left = iters as usize;
    let mut timed = Duration::ZERO;
    while left > 0 {
        let n = left.min(w.frames.len());
        let per_frame = w.items / w.frames.len();
        for uuid in &w.tasks[..n * per_frame] {
            r.register(*uuid, 1);
        }
        let t0 = cpu.read();
        let mut routed = 0;
        for f in &w.frames[..n] {
            routed += r.route(black_box(f));
        }
        timed += cpu.read() - t0;
        assert_eq!(routed, n * per_frame);
        assert_eq!(r.drain(), n * per_frame, "every item reaches its waiting task");
        assert_eq!(r.pending() as u128, BACKGROUND);
        left -= n;
    }
    timed
}

fn bench_route(c: &mut Criterion) {
    let mut g = c.benchmark_group("route");
    g.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    for (kind, base64, batch, chunk) in
        [("url", false, 1, 512), ("url", false, 16, 64), ("base64_2mib", true, 1, 4), ("base64_2mib", true, 16, 1)]
    {
        let w = workload(batch, chunk, base64);
        let mut r = router();
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(BenchmarkId::new(kind, format!("{batch}_per_frame")), |b| {
            b.iter_custom(|iters| run(&mut r, &w, iters))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("scan_floor");
    g.sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    let payload = common::base64_payload(2 << 20);
    g.throughput(Throughput::Bytes(payload.len() as u64));
    g.bench_function("utf8_validate_2mib", |b| b.iter(|| std::str::from_utf8(black_box(payload.as_bytes())).is_ok()));
    g.bench_function("find_backslash_2mib", |b| b.iter(|| black_box(payload.as_str()).contains('\\')));
    g.bench_function("memcpy_2mib", |b| b.iter(|| black_box(payload.as_bytes()).to_vec()));
    g.finish();
}

criterion_group!(benches, bench_route);
criterion_main!(benches);
