//! The connection engine against the in-process emulator: multiplexing, faults,
//! cancellation, deadlines, backpressure, auth and reachability.

use futures::StreamExt;
use runware_emulator::{Emulator, EmulatorHandle, Fault, Latency};
use runware_ws::protocol::{DeliveryMethod, OutputType};
use runware_ws::{Client, ClientError, ConnectionState, Keepalive, Kontext, KontextSize, ReconnectPolicy};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

const KEY: &str = "test-key";

async fn emulator(latency: Latency) -> EmulatorHandle {
    Emulator::builder().api_key(KEY).latency(latency).seed(7).start().await.expect("emulator starts")
}

fn fast_reconnect() -> ReconnectPolicy {
    ReconnectPolicy {
        initial_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(100),
        multiplier: 2.0,
        jitter: 0.2,
        max_attempts: Some(50),
    }
}

async fn client(emu: &EmulatorHandle, in_flight: usize) -> Client {
    Client::builder()
        .url(emu.ws_url())
        .api_key(KEY)
        .max_in_flight(in_flight)
        .reconnect(fast_reconnect())
        .keepalive(Keepalive::new(Duration::from_millis(200), Duration::from_millis(400)))
        .poll(runware_ws::PollPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            resume_grace: Duration::from_millis(300),
        })
        .task_timeout(Duration::from_secs(60))
        .connect()
        .await
        .expect("client connects")
}

fn task(i: usize, n: u32) -> runware_ws::KontextTask {
    Kontext::builder()
        .prompt(format!("Edit number {i}: make it dusk"))
        .size(KontextSize::ALL[i % 9])
        .number_results(n)
        .seed(i as u64)
        .build()
        .expect("valid task")
}

/// Runs `count` tasks (numberResults cycling 1..=max_n) concurrently; calls
/// `during` once `trigger` of them have completed; checks every invariant.
async fn run_batch<F, Fut>(emu: &EmulatorHandle, client: &Client, count: usize, max_n: u32, trigger: usize, during: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let done = Arc::new(AtomicUsize::new(0));
    let notify = Arc::new(Notify::new());
    let mut handles = Vec::with_capacity(count);
    let mut expected = Vec::with_capacity(count);
    for i in 0..count {
        let n = (i as u32 % max_n) + 1;
        let t = task(i, n);
        expected.push((t.task_uuid, n));
        let c = client.clone();
        let (done, notify) = (done.clone(), notify.clone());
        handles.push(tokio::spawn(async move {
            let r = c.kontext(t).await;
            done.fetch_add(1, Ordering::SeqCst);
            notify.notify_waiters();
            r
        }));
    }
    while done.load(Ordering::SeqCst) < trigger {
        let wait = notify.notified();
        if done.load(Ordering::SeqCst) >= trigger {
            break;
        }
        wait.await;
    }
    during().await;
    let mut all_images = HashSet::new();
    for (h, (uuid, n)) in handles.into_iter().zip(expected) {
        let images = h.await.expect("task joined").unwrap_or_else(|e| panic!("task {uuid} failed: {e}"));
        assert_eq!(images.len(), n as usize, "task {uuid}: every result, once");
        for img in &images {
            assert_eq!(img.task_uuid, uuid);
            assert!(all_images.insert(img.image_uuid.to_string()), "no image reaches a caller twice");
        }
        assert_eq!(emu.executions(uuid), 1, "task {uuid} executed exactly once");
    }
    assert_eq!(client.diagnostics().pending, 0, "nothing left in the pending table");
    let stats = emu.stats();
    assert_eq!(stats.double_executed, 0);
    assert!(stats.max_executions_per_task <= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_tasks_share_one_connection() {
    let emu = emulator(Latency::Range(Duration::ZERO, Duration::from_millis(20))).await;
    let c = client(&emu, 4096).await;
    run_batch(&emu, &c, 2000, 4, 0, || async {}).await;
    assert_eq!(emu.stats().connections, 1, "one socket for everything");
    let m = c.metrics();
    assert_eq!(m.tasks_completed, 2000);
    assert_eq!(m.reconnects, 0);
    emu.shutdown().await;
}

async fn survives(fault: Fault, max_n: u32) -> (runware_ws::Metrics, runware_emulator::Stats) {
    let emu = emulator(Latency::Range(Duration::from_millis(20), Duration::from_millis(300))).await;
    let c = client(&emu, 1024).await;
    let (emu_ref, c_ref) = (&emu, &c);
    run_batch(&emu, &c, 300, max_n, 30, || async move {
        assert!(c_ref.diagnostics().pending > 0, "the fault must hit tasks in flight");
        emu_ref.inject(fault);
    })
    .await;
    let out = (c.metrics(), emu.stats());
    emu.shutdown().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_abrupt_drop() {
    let (m, s) = survives(Fault::Drop, 3).await;
    assert!(m.reconnects >= 1, "{m:?}");
    assert!(s.connections >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_clean_close() {
    let (m, _) = survives(Fault::Close, 3).await;
    assert!(m.reconnects >= 1, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_half_open_silence() {
    let (m, _) = survives(Fault::HalfOpen, 3).await;
    assert!(m.reconnects >= 1, "a silent socket is found by keepalive: {m:?}");
    assert!(m.pings >= 1);
    assert_eq!(m.dead_sockets, 1, "{m:?}");
    // Keepalive of the test client: a ping after 200 ms of silence, 400 ms for its answer.
    assert!(m.max_dead_silence_ms >= 600 && m.max_dead_silence_ms <= 600 + 400, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_drop_between_results() {
    let (m, _) = survives(Fault::DropMidTask, 4).await;
    assert!(m.reconnects >= 1, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_restart_that_forgets_sessions() {
    let (m, _) = survives(Fault::Restart, 3).await;
    assert!(m.reconnects >= 1, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_stray_errors() {
    let (m, _) = survives(Fault::StrayError, 3).await;
    assert!(m.unknown_items >= 1, "{m:?}");
    assert_eq!(m.tasks_failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_garbage_frames() {
    let (m, _) = survives(Fault::Garbage, 3).await;
    assert!(m.malformed >= 1, "{m:?}");
    assert_eq!(m.tasks_failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_duplicate_results() {
    let (m, _) = survives(Fault::DuplicateResults(50), 3).await;
    assert!(m.duplicates_dropped + m.unknown_items >= 1, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_is_visible_in_the_state_watch() {
    let emu = emulator(Latency::Fixed(Duration::ZERO)).await;
    let c = client(&emu, 64).await;
    let mut states = c.state();
    assert!(states.borrow_and_update().is_connected());
    emu.inject(Fault::RefuseHandshakes(2));
    emu.inject(Fault::Drop);
    let reconnecting = states.wait_for(|s| matches!(s, ConnectionState::Reconnecting { .. })).await.map(|s| s.clone());
    assert!(matches!(reconnecting, Ok(ConnectionState::Reconnecting { attempt: 1.., .. })));
    states.wait_for(ConnectionState::is_connected).await.expect("reconnects");
    assert_eq!(c.kontext(task(1, 1)).await.expect("works after reconnect").len(), 1);
    assert!(emu.stats().connections >= 2);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_futures_and_streams_leave_nothing_pending() {
    let emu = emulator(Latency::Fixed(Duration::from_secs(30))).await;
    let c = client(&emu, 64).await;
    let mut streams = Vec::new();
    for i in 0..20 {
        streams.push(c.kontext_stream(task(i, 2)).await.expect("submitted"));
    }
    assert_eq!(c.diagnostics().pending, 20);
    drop(streams);
    assert_eq!(c.diagnostics().pending, 0);
    // A dropped `kontext` future cancels too, and frees its slot.
    let f = c.kontext(task(99, 1));
    assert!(tokio::time::timeout(Duration::from_millis(50), f).await.is_err());
    assert_eq!(c.diagnostics().pending, 0);
    assert_eq!(c.metrics().tasks_cancelled, 21);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_hold_and_clean_up() {
    let emu = emulator(Latency::Fixed(Duration::from_secs(30))).await;
    let c = Client::builder()
        .url(emu.ws_url())
        .api_key(KEY)
        .task_timeout(Duration::from_millis(200))
        .connect()
        .await
        .expect("connects");
    let started = std::time::Instant::now();
    let err = c.kontext(task(1, 1)).await.expect_err("times out").error;
    assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
    assert!(err.is_outcome_unknown() && !err.is_retryable_with_new_uuid(), "a deadline is an unknown outcome");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(c.diagnostics().pending, 0);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_storm_fails_every_task_once_and_leaves_nothing() {
    // 2,000 tasks whose deadlines fall together: one keeper scan fails them all.
    let emu = emulator(Latency::Fixed(Duration::from_secs(30))).await;
    let c = Client::builder()
        .url(emu.ws_url())
        .api_key(KEY)
        .max_in_flight(4096)
        .task_timeout(Duration::from_millis(300))
        .connect()
        .await
        .expect("connects");
    // A task with a longer deadline submitted first must outlive the storm.
    let patient = c.submit(task(0, 1)).timeout(Duration::from_secs(60)).await.expect("submitted");
    let all = futures::future::join_all((1..=2000).map(|i| c.kontext(task(i, 1))));
    let results = tokio::time::timeout(Duration::from_secs(30), all).await.expect("every deadline fires");
    for r in &results {
        assert!(
            matches!(r, Err(p) if matches!(p.error, ClientError::Timeout { after, .. } if after == Duration::from_millis(300))),
            "{r:?}"
        );
    }
    let m = c.metrics();
    assert_eq!(m.tasks_failed, 2000, "each timed-out task counted once");
    assert_eq!(c.diagnostics().pending, 1, "only the patient task is left");
    drop(patient);
    assert_eq!(c.diagnostics().pending, 0);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_holds_during_an_outage() {
    let emu = emulator(Latency::Fixed(Duration::from_secs(30))).await;
    let c = Client::builder()
        .url(emu.ws_url())
        .api_key(KEY)
        .task_timeout(Duration::from_millis(400))
        .reconnect(ReconnectPolicy { max_attempts: None, ..fast_reconnect() })
        .connect()
        .await
        .expect("connects");
    emu.inject(Fault::RefuseHandshakes(1_000_000));
    emu.inject(Fault::Drop);
    let mut states = c.state();
    states.wait_for(|s| !s.is_connected()).await.expect("drop seen");
    let started = std::time::Instant::now();
    let err = c.kontext(task(2, 1)).await.expect_err("no server, the deadline ends it").error;
    match err {
        ClientError::Timeout { connection, .. } => assert!(connection.contains("reconnecting"), "{connection}"),
        other => panic!("{other}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(c.diagnostics().pending, 0);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_caps_tasks_on_the_wire() {
    let emu = emulator(Latency::Range(Duration::from_millis(1), Duration::from_millis(10))).await;
    let c = client(&emu, 64).await;
    run_batch(&emu, &c, 500, 2, 0, || async {}).await;
    let s = emu.stats();
    assert!(s.max_outstanding <= 64, "at most 64 on the wire, saw {}", s.max_outstanding);
    assert!(s.max_outstanding >= 32, "the limit is actually used: {}", s.max_outstanding);
    // The non-waiting variant refuses when full.
    let slow = emulator(Latency::Fixed(Duration::from_secs(30))).await;
    let c2 = client(&slow, 2).await;
    let _a = c2.submit(task(1, 1)).no_wait().await.expect("slot 1");
    let _b = c2.submit(task(2, 1)).no_wait().await.expect("slot 2");
    assert!(matches!(c2.submit(task(3, 1)).no_wait().await, Err(ClientError::Busy { limit: 2 })));
    drop(_a);
    assert!(c2.submit(task(4, 1)).no_wait().await.is_ok(), "a freed slot is reusable");
    emu.shutdown().await;
    slow.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failure_is_final_and_quick() {
    let emu = emulator(Latency::Fixed(Duration::ZERO)).await;
    let started = std::time::Instant::now();
    let err = Client::builder().url(emu.ws_url()).api_key("wrong-key").connect().await.expect_err("refused");
    match &err {
        ClientError::Auth(e) => assert_eq!(e.code, "invalidApiKey"),
        other => panic!("{other}"),
    }
    assert!(err.is_account_failure() && !err.is_retryable_with_new_uuid());
    assert!(!err.to_string().contains("wrong-key"), "the key never shows: {err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(emu.stats().auth_failures, 1, "no retry storm");
    emu.shutdown().await;
    // Refused on a reconnect: waiting callers get the auth error at once.
    let slow = emulator(Latency::Fixed(Duration::from_secs(30))).await;
    let c = client(&slow, 16).await;
    let stream = c.kontext_stream(task(4, 1)).await.expect("submitted");
    slow.inject(Fault::RefuseAuth(100));
    slow.inject(Fault::Drop);
    let started = std::time::Instant::now();
    let got = stream.collect_all().await.map_err(ClientError::from);
    assert!(matches!(got, Err(ClientError::Auth(_))), "{got:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "at once, not at the deadline");
    let after = c.kontext(task(5, 1)).await.map_err(ClientError::from);
    assert!(matches!(after, Err(ClientError::Auth(_))), "{after:?}");
    assert_eq!(*c.state().borrow(), ConnectionState::Closed);
    assert_eq!(slow.stats().auth_failures, 1, "one refusal, no retry storm");
    slow.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_fails_in_bounded_time() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let started = std::time::Instant::now();
    let err = Client::builder()
        .url(format!("ws://{addr}/v1"))
        .api_key(KEY)
        .reconnect(ReconnectPolicy { max_attempts: Some(3), ..fast_reconnect() })
        .connect()
        .await
        .expect_err("nobody listens");
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // The connection error itself is kept, not flattened to a string.
    assert!(std::error::Error::source(&err).is_some(), "a source: {err:?}");
    let cause = err.cause().and_then(|c| c.downcast_ref::<tokio_tungstenite::tungstenite::Error>());
    assert!(
        matches!(cause, Some(tokio_tungstenite::tungstenite::Error::Io(io)) if io.kind() == std::io::ErrorKind::ConnectionRefused),
        "the refused connect is the cause: {cause:?}"
    );
    // Shared by every waiter: a clone keeps it.
    assert!(err.clone().cause().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_delivery_is_polled_for_the_caller() {
    let emu = emulator(Latency::Fixed(Duration::from_millis(50))).await;
    let c = client(&emu, 64).await;
    let t = Kontext::builder()
        .prompt("async please")
        .size(KontextSize::R3x2)
        .number_results(3)
        .delivery_method(DeliveryMethod::Async)
        .build()
        .unwrap();
    let uuid = t.task_uuid;
    let images = c.kontext(t).await.expect("polled to completion");
    assert_eq!(images.len(), 3);
    assert!(c.metrics().polls >= 1);
    assert_eq!(emu.executions(uuid), 1);
    // A finished task can be fetched again by UUID.
    let again = c.get_response(uuid, 3).await.expect("getResponse");
    assert_eq!(again.len(), 3);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmitting_a_known_task_recovers_instead_of_rerunning() {
    let emu = emulator(Latency::Fixed(Duration::from_millis(10))).await;
    let c = client(&emu, 64).await;
    let t = task(3, 2);
    let first = c.kontext(t.clone()).await.expect("first run");
    let second = c.kontext(t.clone()).await.expect("conflict, then getResponse");
    assert_eq!(emu.executions(t.task_uuid), 1, "never billed twice");
    let a: HashSet<_> = first.iter().map(|i| i.image_uuid.clone()).collect();
    let b: HashSet<_> = second.iter().map(|i| i.image_uuid.clone()).collect();
    assert_eq!(a, b);
    assert!(c.metrics().conflicts >= 1);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_stream_one_by_one_and_outputs_decode() {
    let emu = emulator(Latency::Fixed(Duration::from_millis(20))).await;
    let c = client(&emu, 64).await;
    let t = Kontext::builder()
        .prompt("stream them")
        .size(KontextSize::R1x1)
        .number_results(4)
        .output_type(OutputType::Base64Data)
        .build()
        .unwrap();
    let mut s = c.kontext_stream(t).await.unwrap();
    let mut n = 0;
    while let Some(img) = s.next().await {
        let img = img.expect("image");
        let bytes = img.output.decode().expect("base64 output").expect("decodes");
        assert!(bytes.starts_with(&[0xff, 0xd8]), "a JPEG");
        n += 1;
    }
    assert_eq!(n, 4);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_tasks_share_the_guarantees() {
    let emu = emulator(Latency::Fixed(Duration::ZERO)).await;
    let c = client(&emu, 64).await;
    let png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
    let up = c.upload_image(png).await.expect("uploaded");
    let image_uuid = up.image_uuid.clone().expect("imageUUID");
    let t = Kontext::builder()
        .prompt("edit the upload")
        .size(KontextSize::R1x1)
        .reference_image(image_uuid.to_string())
        .build();
    assert_eq!(c.kontext(t.unwrap()).await.expect("reference by UUID").len(), 1);
    let unsupported = c
        .raw(serde_json::json!({"taskType":"imageCaption","inputImage": image_uuid.to_string()}))
        .await
        .expect_err("the emulator does not caption")
        .error;
    assert!(matches!(unsupported, ClientError::Api(_)), "{unsupported}");
    let id = Uuid::new_v4();
    let raw = c
        .raw(serde_json::json!({"taskType":"imageInference","taskUUID":id.to_string(),"model":"bfl:3@1","positivePrompt":"raw","width":1024,"height":1024,"numberResults":2}))
        .await
        .expect("raw inference");
    assert_eq!(raw.len(), 2);
    assert_eq!(emu.executions(id), 1);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_finishes_in_flight_work_then_refuses() {
    let emu = emulator(Latency::Fixed(Duration::from_millis(50))).await;
    let c = client(&emu, 64).await;
    let s = c.kontext_stream(task(1, 1)).await.unwrap();
    let closing = {
        let c = c.clone();
        tokio::spawn(async move { c.close(Duration::from_secs(5)).await })
    };
    assert_eq!(s.collect_all().await.expect("finishes within the grace").len(), 1);
    closing.await.unwrap();
    assert!(matches!(c.kontext(task(2, 1)).await.map_err(ClientError::from), Err(ClientError::Closed)));
    assert_eq!(*c.state().borrow(), ConnectionState::Closed);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_ping_is_answered_and_timed() {
    let emu = emulator(Latency::Fixed(Duration::from_millis(5))).await;
    let c = client(&emu, 4).await;
    let before = emu.stats().pings;
    let rtt = c.ping(Duration::from_secs(5)).await.expect("a pong");
    assert!(rtt < Duration::from_secs(5));
    assert!(emu.stats().pings > before, "the ping reached the server");
    let timings = c.diagnostics().last_connect.expect("the connection was timed");
    assert!(timings.handshake > Duration::ZERO && timings.authentication > Duration::ZERO, "{timings:?}");
    // A half-open server never answers: the ping times out instead of hanging.
    let silent = Client::builder()
        .url(emu.ws_url())
        .api_key(KEY)
        .keepalive(Keepalive {
            busy_idle: Duration::from_secs(60),
            busy_timeout: Duration::from_secs(60),
            ..Keepalive::new(Duration::from_secs(60), Duration::from_secs(60))
        })
        .connect()
        .await
        .expect("connects");
    emu.inject(Fault::HalfOpen);
    let timed_out = silent.ping(Duration::from_millis(300)).await;
    assert!(matches!(timed_out, Err(ClientError::Timeout { .. })), "{timed_out:?}");
    emu.shutdown().await;
}
