//! The library's side of failures after acceptance: retry advice, partial results,
//! raw tasks (async, result counts), lookups, and the reconnect delay it shows.

use runware_emulator::{Emulator, EmulatorHandle, FailMatch, FailRule, Fault, Latency};
use runware_ws::Lookup;
use runware_ws::protocol::RawTask;
use runware_ws::{Client, ClientError, ConnectionState, Kontext, KontextSize, ReconnectPolicy, RetryAdvice};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

const KEY: &str = "retry-key";

async fn emulator() -> EmulatorHandle {
    Emulator::builder()
        .api_key(KEY)
        .latency(Latency::Fixed(Duration::from_millis(5)))
        .seed(3)
        .start()
        .await
        .expect("emulator starts")
}

async fn client(emu: &EmulatorHandle) -> Client {
    Client::builder()
        .url(emu.ws_url())
        .api_key(KEY)
        .task_timeout(Duration::from_secs(20))
        .connect()
        .await
        .expect("connects")
}

fn edit(prompt: &str, n: u32) -> runware_ws::KontextTask {
    Kontext::builder().prompt(prompt).size(KontextSize::R1x1).number_results(n).build().expect("a valid edit")
}

#[tokio::test]
async fn a_failure_after_some_images_keeps_them() {
    let emu = emulator().await;
    emu.inject(Fault::FailTasks(
        FailRule::new("timeoutProvider", FailMatch::PromptContains("partial".into())).after(3).times(1),
    ));
    let c = client(&emu).await;
    let task = edit("partial", 4);
    let uuid = task.task_uuid;
    let failed = c.kontext(task).await.expect_err("fails after three images");
    assert_eq!(failed.received.len(), 3, "{failed}");
    assert!(failed.to_string().contains("after 3 result(s)"), "{failed}");
    assert_eq!(failed.error.api_kind().map(|k| k.retry_advice()), Some(RetryAdvice::NewTaskUuid));
    assert!(failed.error.is_retryable_with_new_uuid(), "the server said it failed: {}", failed.error);
    let stats = emu.task_stats();
    assert_eq!((stats[&uuid].executions, stats[&uuid].images_billed), (1, 3));
    // `?` still yields a ClientError.
    let as_client_error: ClientError = failed.into();
    assert!(matches!(as_client_error, ClientError::Api(_)));
    c.close(Duration::from_secs(1)).await;
    emu.shutdown().await;
}

#[tokio::test]
async fn an_account_failure_says_fix_the_account() {
    let emu = emulator().await;
    emu.inject(Fault::FailTasks(FailRule::new("insufficientCredits", FailMatch::Every).times(1)));
    let c = client(&emu).await;
    let err = c.kontext(edit("no credits", 1)).await.expect_err("no credits").error;
    assert!(err.is_account_failure() && !err.is_retryable_with_new_uuid(), "{err}");
    c.close(Duration::from_secs(1)).await;
    emu.shutdown().await;
}

#[tokio::test]
async fn a_raw_async_task_sent_through_submit_is_polled() {
    let emu = emulator().await;
    let c = client(&emu).await;
    let raw = RawTask::with_generated_uuid(json!({
        "taskType": "imageInference", "model": "bfl:3@1", "positivePrompt": "async raw",
        "width": 1024, "height": 1024, "numberResults": 2, "deliveryMethod": "async",
    }))
    .unwrap();
    assert!(raw.is_async());
    // Without polling the task would wait for its whole 20 s deadline and fail.
    let items = c.submit(raw).await.expect("submitted").await;
    let items = items.expect("both results arrive by polling");
    assert_eq!(items.len(), 2);
    assert!(c.metrics().polls >= 1, "{:?}", c.metrics());
    c.close(Duration::from_secs(1)).await;
    emu.shutdown().await;
}

#[tokio::test]
async fn a_raw_task_ends_after_the_results_its_type_asks_for() {
    let emu = emulator().await;
    let c = client(&emu).await;
    let task =
        json!({"taskType": "promptEnhance", "prompt": "a lighthouse", "promptVersions": 3, "promptMaxLength": 120});
    assert_eq!(RawTask::with_generated_uuid(task.clone()).unwrap().expected_results(), 3);
    let items = c.raw(task).await.expect("three versions");
    assert_eq!(items.len(), 3, "{items:?}");
    c.close(Duration::from_secs(1)).await;
    emu.shutdown().await;
}

#[tokio::test]
async fn lookup_tells_known_failed_and_unknown_apart() {
    let emu = emulator().await;
    let c = client(&emu).await;
    let done = edit("done", 2);
    let done_uuid = done.task_uuid;
    c.kontext(done).await.expect("runs");
    match c.lookup(done_uuid, Some(2), Duration::from_secs(10)).await.expect("looked up") {
        Lookup::Known { items, finished, error } => {
            assert_eq!((items.len(), finished, error.is_none()), (2, true, true));
        }
        other => panic!("the server knows a task it ran: {other:?}"),
    }
    // Without a count: everything the server has.
    match c.lookup(done_uuid, None, Duration::from_secs(10)).await.expect("looked up") {
        Lookup::Known { items, .. } => assert_eq!(items.len(), 2),
        other => panic!("known: {other:?}"),
    }

    emu.inject(Fault::FailTasks(FailRule::new("serviceUnavailable", FailMatch::PromptContains("broken".into()))));
    let broken = edit("broken", 1);
    let broken_uuid = broken.task_uuid;
    c.kontext(broken).await.expect_err("fails");
    match c.lookup(broken_uuid, Some(1), Duration::from_secs(10)).await.expect("looked up") {
        Lookup::Known { error: Some(e), finished: true, .. } => assert_eq!(e.code, "serviceUnavailable"),
        other => panic!("{other:?}"),
    }

    let never = Uuid::new_v4();
    let unknown = c.lookup(never, Some(1), Duration::from_millis(800)).await.expect("looked up");
    assert!(!unknown.is_known(), "{unknown:?}");
    assert_eq!(emu.executions(never), 0, "a lookup submits nothing");
    assert_eq!(emu.executions(done_uuid), 1);
    c.close(Duration::from_secs(1)).await;
    emu.shutdown().await;
}

#[tokio::test]
async fn reconnecting_shows_the_delay_before_the_next_attempt() {
    let emu = emulator().await;
    let c = Client::builder()
        .url(emu.ws_url())
        .api_key(KEY)
        .reconnect(ReconnectPolicy {
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_millis(400),
            multiplier: 2.0,
            jitter: 0.0,
            max_attempts: None,
        })
        .connect()
        .await
        .expect("connects");
    let mut states = c.state();
    emu.inject(Fault::Outage(Duration::from_secs(2)));
    let seen = states
        .wait_for(|s| matches!(s, ConnectionState::Reconnecting { retry_in, .. } if !retry_in.is_zero()))
        .await
        .expect("reconnecting")
        .clone();
    let ConnectionState::Reconnecting { retry_in, .. } = &seen else { unreachable!() };
    assert!(*retry_in >= Duration::from_millis(200) && *retry_in <= Duration::from_millis(400), "{seen}");
    assert!(seen.to_string().contains(" in "), "{seen}");
    states.wait_for(ConnectionState::is_connected).await.expect("back after the outage");
    c.close(Duration::from_secs(1)).await;
    emu.shutdown().await;
}
