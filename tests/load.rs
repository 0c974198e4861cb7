//! Load held: 10,000 tasks in flight at once over one socket all complete.

mod support;

use runware_emulator::{Emulator, Latency};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_tasks_in_flight_over_one_socket_complete() {
    const N: usize = 10_000;
    // Tasks are answered only well after every one of them is on the wire.
    let emu = Emulator::builder().api_key("k").latency(Latency::Fixed(Duration::from_secs(4))).start().await.unwrap();
    let client = support::roomy_client(emu.ws_url(), N).await;
    let mut streams = Vec::with_capacity(N);
    for t in support::kontext_tasks(N) {
        streams.push(client.kontext_stream(t).await.unwrap());
    }
    assert_eq!(client.diagnostics().pending, N);
    let results = futures::future::join_all(streams.into_iter().map(|s| s.collect_all())).await;
    for r in results {
        assert_eq!(r.expect("completes").len(), 1);
    }
    assert_eq!(client.diagnostics().pending, 0);
    let stats = emu.stats();
    assert_eq!(stats.connections, 1, "one socket");
    assert!(stats.max_outstanding >= N as u64 - 16, "all {N} were in flight at once: {}", stats.max_outstanding);
    assert_eq!(stats.double_executed, 0);
    emu.shutdown().await;
}
