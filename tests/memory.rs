//! Memory per pending task, measured with a counting allocator. This file holds
//! one test so that nothing else allocates in the process while it measures.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The documented bound (README): client-side bytes per pending task beyond its
/// serialized frame, including its stream, mailbox, table entry and queue slot.
const BOUND_PER_TASK: i64 = 2048;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_task_costs_a_bounded_number_of_bytes() {
    const N: usize = 10_000;
    // A peer that authenticates and never answers: the tasks stay pending, and the
    // peer keeps nothing, so the live-bytes delta is the client's.
    let (url, server) = support::plain_server(std::sync::Arc::new(support::auth_and_ping)).await;
    let client = support::roomy_client(url, N).await;
    let tasks = support::kontext_tasks(N);
    let frame_bytes: i64 = tasks.iter().map(|t| serde_json::to_string(t).unwrap().len() as i64).sum();
    let before = LIVE.load(Ordering::Relaxed);
    let mut streams = Vec::with_capacity(N);
    for t in tasks {
        streams.push(client.kontext_stream(t).await.unwrap());
    }
    // Let the writer drain the queue onto the socket.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while client.diagnostics().queues.outbound > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = LIVE.load(Ordering::Relaxed);
    assert_eq!(client.diagnostics().pending, N);
    let per_task = (after - before) / N as i64;
    let beyond_frame = (after - before - frame_bytes) / N as i64;
    println!("load: {per_task} B per pending task, {beyond_frame} B beyond its {} B frame", frame_bytes / N as i64);
    assert!(beyond_frame > 0, "the measurement sees the client's allocations");
    assert!(
        beyond_frame <= BOUND_PER_TASK,
        "a pending task costs {beyond_frame} B beyond its frame, over the {BOUND_PER_TASK} B bound"
    );
    drop(streams);
    assert_eq!(client.diagnostics().pending, 0);
    server.abort();
}
