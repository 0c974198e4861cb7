//! Memory: bytes per pending task with 100,000 tasks in flight, and bytes
//! allocated per 2 MiB base64 result between the socket and the caller.
//!
//! `cargo bench --bench memory`
//!
//! A counting global allocator counts the allocations of the main thread only,
//! where a current-thread runtime runs the whole client (its reader, writer,
//! poller and supervisor tasks); the server runs on its own thread, uncounted.
//! Prints a report and writes `target/bench-memory.json`. No criterion harness.

mod common;

use common::{Reply, Server};
use runware_ws::client::bench_support::{self, Router};
use runware_ws::protocol::SharedStr;
use runware_ws::{Client, ImageOutput};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Counting;

static ALLOCATED: AtomicU64 = AtomicU64::new(0);
static FREED: AtomicU64 = AtomicU64::new(0);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Allocations (or reallocations) of at least 1 MiB.
static BIG: AtomicU64 = AtomicU64::new(0);
/// Bytes moved by reallocations (the old size, an upper bound on the copy).
static REALLOC_MOVED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn counted() -> bool {
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

fn on_alloc(size: usize) {
    ALLOCATED.fetch_add(size as u64, Ordering::Relaxed);
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    if size >= 1 << 20 {
        BIG.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            on_alloc(layout.size());
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if counted() {
            on_alloc(layout.size());
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            FREED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() {
            on_alloc(new_size);
            FREED.fetch_add(layout.size() as u64, Ordering::Relaxed);
            REALLOC_MOVED.fetch_add(layout.size().min(new_size) as u64, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone, Copy, Debug)]
struct Snap {
    allocated: u64,
    freed: u64,
    allocs: u64,
    big: u64,
    realloc_moved: u64,
}

impl Snap {
    fn now() -> Snap {
        Snap {
            allocated: ALLOCATED.load(Ordering::Relaxed),
            freed: FREED.load(Ordering::Relaxed),
            allocs: ALLOCS.load(Ordering::Relaxed),
            big: BIG.load(Ordering::Relaxed),
            realloc_moved: REALLOC_MOVED.load(Ordering::Relaxed),
        }
    }
    fn live(&self) -> i64 {
        self.allocated as i64 - self.freed as i64
    }
}

const PENDING: usize = 100_000;
const MIB2: usize = 2 << 20;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list`: nothing to list.
    }
    COUNTED.with(|c| c.set(true));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    println!("== memory ({})", common::machine());
    for (name, size) in bench_support::sizes() {
        println!("   size_of {name:<20} {size:>5} B");
    }
    rt.block_on(future_sizes());
    let pending = rt.block_on(pending_tasks());
    let base64 = rt.block_on(base64_results());
    let routed = base64_routed();
    let url = rt.block_on(url_round_trip());
    let url_item = url_routed();
    let doc = serde_json::json!({
        "machine": common::machine(),
        "pending": pending,
        "base64_end_to_end": base64,
        "base64_decode_and_route": routed,
        "url_round_trip": url,
        "url_decode_and_route": url_item,
    });
    let path = common::report_path("bench-memory.json");
    if std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap_or_default()).is_ok() {
        println!("report written to {}", path.display());
    }
}

/// The state a caller keeps per task while it waits (the futures are never polled).
async fn future_sizes() {
    let server = Server::start(Reply::Silent);
    let client = Client::builder().url(server.url()).api_key("k").connect().await.expect("connect");
    let kontext = std::mem::size_of_val(&client.kontext(common::kontext_task()));
    let stream = std::mem::size_of_val(&client.kontext_stream(common::kontext_task()));
    println!("   size_of client.kontext(…) future   {kontext:>5} B (kontext_stream(…): {stream} B)");
    client.close(Duration::ZERO).await;
}

/// 100,000 tasks submitted to a server that never answers.
async fn pending_tasks() -> serde_json::Value {
    let server = Server::start(Reply::Silent);
    let client = Client::builder()
        .url(server.url())
        .api_key("k")
        .max_in_flight(PENDING)
        .task_timeout(Duration::from_secs(3600))
        .connect()
        .await
        .expect("connect");
    let frame_bytes = serde_json::to_string(&common::kontext_task()).expect("serializable").len();
    // The caller's own storage for its handles is not the client's memory.
    let mut streams = Vec::with_capacity(PENDING);
    let handle_inline = std::mem::size_of::<runware_ws::KontextStream>();
    tokio::task::yield_now().await;
    let before = Snap::now();
    let t0 = Instant::now();
    for i in 0..PENDING {
        streams.push(client.kontext_stream(common::kontext_task()).await.expect("submit"));
        if i % 1024 == 0 {
            tokio::task::yield_now().await; // let the writer drain the queue
        }
    }
    let submit = t0.elapsed();
    while server.received.load(Ordering::Relaxed) < PENDING as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = Snap::now();
    assert_eq!(client.diagnostics().pending, PENDING);
    let per_task = (after.live() - before.live()) as f64 / PENDING as f64;
    let allocs_per_task = (after.allocs - before.allocs) as f64 / PENDING as f64;
    drop(streams);
    tokio::task::yield_now().await;
    let dropped = Snap::now();
    let retained = (dropped.live() - before.live()) as f64 / PENDING as f64;
    println!("\n-- {PENDING} pending tasks (server never answers)");
    println!(
        "   submitted in {:.0} ms ({:.0} tasks/s)",
        submit.as_secs_f64() * 1e3,
        PENDING as f64 / submit.as_secs_f64()
    );
    println!("   live heap per pending task:      {per_task:>8.0} B ({allocs_per_task:.1} allocations per task)");
    println!("   serialized task (kept for resend): {frame_bytes:>6} B");
    println!("   per task beyond its frame:       {:>8.0} B   (target ≤ 2048 B)", per_task - frame_bytes as f64);
    println!("   caller's handle (inline, not counted): {handle_inline} B");
    println!("   still allocated after dropping every handle: {retained:.0} B per task (table capacity, queues)");
    client.close(Duration::ZERO).await;
    serde_json::json!({
        "tasks": PENDING,
        "bytes_per_task": per_task,
        "allocations_per_task": allocs_per_task,
        "frame_bytes": frame_bytes,
        "bytes_per_task_beyond_frame": per_task - frame_bytes as f64,
        "retained_after_cancel_per_task": retained,
    })
}

/// Bytes allocated on the client side for each 2 MiB base64 result, end to end:
/// once with every result dropped before the next (the read buffer is reclaimed),
/// once with the caller holding all of them (each needs its own buffer).
async fn base64_results() -> serde_json::Value {
    const RUNS: u64 = 8;
    let payload = common::base64_payload(MIB2);
    let server = Server::start(Reply::Base64(std::sync::Arc::new(payload)));
    let client = Client::builder().url(server.url()).api_key("k").connect().await.expect("connect");
    // One warm-up task (connection buffers reach their working size).
    client.kontext(common::kontext_task()).await.expect("warm-up");
    let mut out = serde_json::Map::new();
    for hold in [false, true] {
        let mut held = Vec::new();
        let before = Snap::now();
        let t0 = Instant::now();
        for _ in 0..RUNS {
            let images = client.kontext(common::kontext_task()).await.expect("task");
            let ImageOutput::Base64(b64) = &images[0].output else { panic!("a base64 result") };
            assert_eq!(b64.len(), MIB2);
            if hold {
                held.push(images);
            }
        }
        let elapsed = t0.elapsed();
        let after = Snap::now();
        drop(held);
        let what = if hold {
            "end to end, caller keeps every result (socket → ImageResult)"
        } else {
            "end to end, caller drops each result before the next"
        };
        out.insert(
            if hold { "held" } else { "dropped" }.into(),
            summarize_big(what, before, after, RUNS, Some(elapsed)),
        );
    }
    client.close(Duration::ZERO).await;
    out.into()
}

/// Allocations per task for a whole round trip of a URL result (submit → result
/// in the caller's hands → dropped), 64 in flight.
async fn url_round_trip() -> serde_json::Value {
    const TASKS: u64 = 20_000;
    let server = Server::start(Reply::Url);
    let client = Client::builder().url(server.url()).api_key("k").max_in_flight(64).connect().await.expect("connect");
    let c = client.clone();
    let run = move |n: u64| {
        let c = c.clone();
        common::closed_loop(64, n, move || {
            let c = c.clone();
            async move {
                std::hint::black_box(c.kontext(common::kontext_task()).await.expect("task"));
            }
        })
    };
    run(2_000).await; // warm-up
    let before = Snap::now();
    // The harness's own latency vector: one allocation growth series, small against the total.
    let lat = run(TASKS).await;
    let after = Snap::now();
    let allocs = (after.allocs - before.allocs) as f64 / TASKS as f64;
    let bytes = (after.allocated - before.allocated) as f64 / TASKS as f64;
    println!("\n-- URL result round trip, 64 in flight ({} tasks)", lat.len());
    println!("   {allocs:.1} allocations and {bytes:.0} B allocated per task (submit, route, deliver, drop)");
    client.close(Duration::ZERO).await;
    serde_json::json!({ "allocations_per_task": allocs, "bytes_allocated_per_task": bytes })
}

/// Allocations per URL item through decode_frame + the dispatcher only.
fn url_routed() -> serde_json::Value {
    const FRAMES: usize = 1000;
    let mut r = Router::new();
    let frames: Vec<SharedStr> = (0..FRAMES as u128)
        .map(|i| {
            SharedStr::from(format!(
                "{{\"data\":[{}]}}",
                common::url_item(uuid::Uuid::from_u128(i + 1), uuid::Uuid::from_u128((i + 1) << 64))
            ))
        })
        .collect();
    for i in 0..FRAMES as u128 {
        r.register(uuid::Uuid::from_u128(i + 1), 1);
    }
    let before = Snap::now();
    for f in &frames {
        assert_eq!(r.route(f), 1);
    }
    let after = Snap::now();
    assert_eq!(r.drain(), FRAMES);
    let allocs = (after.allocs - before.allocs) as f64 / FRAMES as f64;
    let bytes = (after.allocated - before.allocated) as f64 / FRAMES as f64;
    println!("\n-- URL item, decode_frame + dispatch (one item per frame)");
    println!("   {allocs:.1} allocations and {bytes:.0} B allocated per item");
    serde_json::json!({ "allocations_per_item": allocs, "bytes_allocated_per_item": bytes })
}

/// The same result through decode_frame + the dispatcher only.
fn base64_routed() -> serde_json::Value {
    const RUNS: u64 = 8;
    let payload = common::base64_payload(MIB2);
    let mut r = Router::new();
    let frames: Vec<SharedStr> = (0..RUNS as u128)
        .map(|i| {
            let item = common::base64_item(uuid::Uuid::from_u128(i + 1), uuid::Uuid::from_u128(i + 100), &payload);
            SharedStr::from(format!("{{\"data\":[{item}]}}"))
        })
        .collect();
    for i in 0..RUNS as u128 {
        r.register(uuid::Uuid::from_u128(i + 1), 1);
    }
    let before = Snap::now();
    for f in &frames {
        assert_eq!(r.route(f), 1);
    }
    assert_eq!(r.drain(), RUNS as usize);
    let after = Snap::now();
    summarize_big("decode_frame + dispatch of an in-memory frame", before, after, RUNS, None)
}

fn summarize_big(what: &str, before: Snap, after: Snap, runs: u64, elapsed: Option<Duration>) -> serde_json::Value {
    let bytes = (after.allocated - before.allocated) as f64 / runs as f64;
    let big = (after.big - before.big) as f64 / runs as f64;
    let moved = (after.realloc_moved - before.realloc_moved) as f64 / runs as f64;
    let allocs = (after.allocs - before.allocs) as f64 / runs as f64;
    println!("\n-- 2 MiB base64 result: {what}");
    println!(
        "   allocated per result: {:.0} B = {:.2} × 2 MiB, in {allocs:.0} allocations ({big:.1} of ≥ 1 MiB); moved by realloc: {moved:.0} B",
        bytes,
        bytes / MIB2 as f64
    );
    if let Some(e) = elapsed {
        println!("   {:.2} ms per result, round trip", e.as_secs_f64() * 1e3 / runs as f64);
    }
    serde_json::json!({
        "bytes_allocated_per_result": bytes,
        "ratio_to_2mib": bytes / MIB2 as f64,
        "allocations_per_result": allocs,
        "big_allocations_per_result": big,
        "realloc_moved_bytes_per_result": moved,
        "ms_per_result": elapsed.map(|e| e.as_secs_f64() * 1e3 / runs as f64),
    })
}
