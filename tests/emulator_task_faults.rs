//! Task faults (injected failures, NSFW flags, outages), billing counters,
//! `promptEnhance` and the render divisor, observed from a raw client on loopback.

mod common;

use common::*;
use runware_emulator::{FailMatch, FailRule, Fault, Latency, TaskStats};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;
use uuid::Uuid;

/// What arrived for one task, in order: its result items and its errors.
#[derive(Debug, Default)]
struct Outcome {
    /// `("item", imageUUID or text)` and `("error", code)`, in arrival order.
    events: Vec<(&'static str, Value)>,
    items: Vec<Value>,
    error: Option<Value>,
}

impl Outcome {
    fn done(&self, n: usize) -> bool {
        self.error.is_some() || self.items.len() >= n
    }

    /// Takes in what a frame holds for `task`.
    fn absorb(&mut self, frame: &Value, task: Uuid) {
        let id = json!(task);
        // Within a frame, data items come before errors (and were queued first).
        for i in items(frame).into_iter().filter(|i| i["taskUUID"] == id) {
            let key = if i.get("imageUUID").is_some() { i["imageUUID"].clone() } else { i["text"].clone() };
            if self.events.iter().any(|(k, v)| *k == "item" && *v == key) {
                continue; // a duplicate
            }
            self.events.push(("item", key));
            self.items.push(i);
        }
        if let Some(e) = errors(frame).into_iter().find(|e| e["taskUUID"] == id) {
            self.events.push(("error", e["code"].clone()));
            self.error = Some(e);
        }
    }
}

/// Reads until `task` has `n` results or an error.
async fn outcome(ws: &mut Ws, task: Uuid, n: usize) -> Outcome {
    outcomes(ws, &[task], n).await.remove(&task).unwrap_or_default()
}

/// Reads until each of `tasks` has `n` results or an error.
async fn outcomes(ws: &mut Ws, tasks: &[Uuid], n: usize) -> HashMap<Uuid, Outcome> {
    let mut out: HashMap<Uuid, Outcome> = tasks.iter().map(|t| (*t, Outcome::default())).collect();
    while !out.values().all(|o| o.done(n)) {
        let f = recv(ws).await;
        for (task, o) in out.iter_mut() {
            o.absorb(&f, *task);
        }
    }
    out
}

/// One `getResponse` answer for `task`.
async fn get_response(ws: &mut Ws, task: Uuid) -> Vec<Value> {
    send(ws, json!([{"taskType":"getResponse","taskUUID":task}])).await;
    loop {
        let f = recv(ws).await;
        let got = items(&f);
        if got.is_empty() || got.iter().any(|i| i["taskUUID"] == json!(task)) {
            return got;
        }
    }
}

/// Polls `getResponse` until `done` holds for the answer (every answer waits for the
/// previous one: synchronised on replies, not on sleeps).
async fn poll_until(ws: &mut Ws, task: Uuid, mut done: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = get_response(ws, task).await;
        if done(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "getResponse never satisfied: {got:?}");
        tokio::task::yield_now().await;
    }
}

fn with_status<'a>(got: &'a [Value], status: &str) -> Vec<&'a Value> {
    got.iter().filter(|i| i["status"] == status).collect()
}

#[tokio::test]
async fn a_rule_by_task_uuid_fails_after_k_of_n_results() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    let id = Uuid::new_v4();
    emu.inject(Fault::FailTasks(FailRule::new("timeoutProvider", FailMatch::TaskUuid(id)).after(2).message("slow")));
    let other = Uuid::new_v4();
    send(&mut ws, json!([kontext(id, json!({"numberResults":4}))])).await;
    let got = outcome(&mut ws, id, 4).await;
    let kinds: Vec<_> = got.events.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, ["item", "item", "error"], "{got:?}");
    let e = got.error.expect("an error");
    assert_eq!(e["code"], "timeoutProvider");
    assert_eq!(e["message"], "slow");
    assert_eq!(e["taskType"], "imageInference");
    assert_eq!(e["taskUUID"], json!(id));
    // The next task is not touched.
    send(&mut ws, json!([kontext(other, json!({"numberResults":2}))])).await;
    assert_eq!(outcome(&mut ws, other, 2).await.items.len(), 2);

    // getResponse: the two delivered results and the error, for ever.
    let answer = get_response(&mut ws, id).await;
    let ok = with_status(&answer, "success");
    let failed = with_status(&answer, "error");
    assert_eq!(ok.len(), 2, "{answer:?}");
    assert_eq!(failed.len(), 1, "{answer:?}");
    assert_eq!(failed[0]["error"]["code"], "timeoutProvider");
    let delivered: HashSet<_> = got.items.iter().map(|i| i["imageUUID"].clone()).collect();
    assert!(ok.iter().all(|i| delivered.contains(&i["imageUUID"])));

    // The taskUUID is used up.
    send(&mut ws, json!([kontext(id, json!({"numberResults":4}))])).await;
    assert_eq!(error_for(&mut ws, &id.to_string()).await["code"], "conflictTaskUUID");
    assert_eq!(emu.executions(id), 1);
    let st = emu.stats();
    assert_eq!(st.tasks_failed_injected, 1);
    let per_task = emu.task_stats();
    let t = per_task.get(&id).expect("the failed task is counted");
    assert_eq!(
        (t.executions, t.images_billed, t.status.as_str(), t.error_code.as_deref()),
        (1, 2, "error", Some("timeoutProvider"))
    );
    assert_eq!(per_task.get(&other).map(|t| t.status.as_str()), Some("success"));
}

#[tokio::test]
async fn after_is_capped_below_the_result_count_and_async_tasks_fail_in_get_response() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    let id = Uuid::new_v4();
    emu.inject(Fault::FailTasks(FailRule::new("serviceUnavailable", FailMatch::TaskUuid(id)).after(10)));
    send(&mut ws, json!([kontext(id, json!({"numberResults":2,"deliveryMethod":"async"}))])).await;
    let ack = recv(&mut ws).await;
    assert_eq!(items(&ack).first().map(|i| i["taskUUID"].clone()), Some(json!(id)));
    let answer = poll_until(&mut ws, id, |got| got.iter().any(|i| i["status"] == "error")).await;
    assert_eq!(with_status(&answer, "success").len(), 1, "{answer:?}");
    assert_eq!(emu.stats().images_billed, 1);
}

#[tokio::test]
async fn prompt_contains_with_times_one_fails_the_first_task_of_each_prompt() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    emu.inject(Fault::FailTasks(
        FailRule::new("serviceUnavailable", FailMatch::PromptContains("line".into())).times(1),
    ));
    let prompt = |p: &str| json!({"positivePrompt": p});
    let (a1, a2, b1, c1) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    send(&mut ws, json!([kontext(a1, prompt("line one"))])).await;
    assert_eq!(outcome(&mut ws, a1, 1).await.error.map(|e| e["code"].clone()), Some(json!("serviceUnavailable")));
    send(&mut ws, json!([kontext(a2, prompt("line one"))])).await;
    let second = outcome(&mut ws, a2, 1).await;
    assert!(second.error.is_none() && second.items.len() == 1, "{second:?}");
    // Another prompt with the text fails once too; one without it never does.
    send(&mut ws, json!([kontext(b1, prompt("line two")), kontext(c1, prompt("no match here"))])).await;
    let got = outcomes(&mut ws, &[b1, c1], 1).await;
    assert!(got[&b1].error.is_some());
    assert!(got[&c1].error.is_none());
    assert_eq!(emu.stats().tasks_failed_injected, 2);
}

#[tokio::test]
async fn probability_one_with_times_three_fails_exactly_three() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    emu.inject(Fault::FailTasks(FailRule::new("inferenceError", FailMatch::Probability(1.0)).times(3)));
    let ids: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    send(&mut ws, Value::Array(ids.iter().map(|id| kontext(*id, json!({}))).collect())).await;
    let got = outcomes(&mut ws, &ids, 1).await;
    assert_eq!(got.values().filter(|o| o.error.is_some()).count(), 3);
    assert_eq!(got.values().filter(|o| o.items.len() == 1).count(), 3);
    let st = emu.stats();
    assert_eq!((st.tasks_failed_injected, st.images_billed), (3, 3));
}

#[tokio::test]
async fn every_fails_the_next_tasks_only() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    emu.inject(Fault::FailTasks(FailRule::new("requestRateLimitExceeded", FailMatch::Every).times(1)));
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    send(&mut ws, json!([kontext(a, json!({}))])).await;
    assert_eq!(outcome(&mut ws, a, 1).await.error.map(|e| e["code"].clone()), Some(json!("requestRateLimitExceeded")));
    send(&mut ws, json!([kontext(b, json!({}))])).await;
    assert!(outcome(&mut ws, b, 1).await.error.is_none());
}

#[tokio::test]
async fn nsfw_flags_results_until_disarmed() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    let before = Uuid::new_v4();
    send(&mut ws, json!([kontext(before, json!({}))])).await;
    assert_eq!(collect(&mut ws, before, 1).await[0]["NSFWContent"], false);
    emu.inject(Fault::Nsfw(1.0));
    let flagged = Uuid::new_v4();
    send(&mut ws, json!([kontext(flagged, json!({"numberResults":3}))])).await;
    let got = collect(&mut ws, flagged, 3).await;
    assert!(got.iter().all(|i| i["NSFWContent"] == true), "{got:?}");
    emu.inject(Fault::Nsfw(0.0));
    let after = Uuid::new_v4();
    send(&mut ws, json!([kontext(after, json!({}))])).await;
    assert_eq!(collect(&mut ws, after, 1).await[0]["NSFWContent"], false);
}

/// The HTTP status of a refused upgrade, or `None` when the upgrade succeeded.
async fn upgrade_status(emu: &runware_emulator::EmulatorHandle) -> Option<u16> {
    match tokio_tungstenite::connect_async(emu.ws_url()).await {
        Ok(_) => None,
        Err(tungstenite::Error::Http(resp)) => Some(resp.status().as_u16()),
        Err(e) => panic!("unexpected connect error: {e}"),
    }
}

#[tokio::test]
async fn an_outage_drops_connections_refuses_upgrades_then_recovers() {
    let emu = builder().latency(Latency::Fixed(Duration::from_millis(200))).start().await.unwrap();
    let (mut ws, session) = client(&emu).await;
    let id = Uuid::new_v4();
    send(&mut ws, json!([kontext(id, json!({}))])).await;
    eventually("the task is running", || emu.stats().outstanding == 1).await;
    let outage = Duration::from_millis(1000);
    let injected = Instant::now();
    emu.inject(Fault::Outage(outage));
    assert!(matches!(next_event(&mut ws).await, Event::Ended), "an abrupt drop");
    assert_eq!(upgrade_status(&emu).await, Some(503));
    // The task kept running: its result waits in the session buffer.
    eventually("the result is buffered", || emu.stats().results_buffered == 1).await;
    assert_eq!(upgrade_status(&emu).await, Some(503), "still in the outage");
    let deadline = injected + WAIT;
    loop {
        match upgrade_status(&emu).await {
            None => break,
            Some(503) => {}
            Some(other) => panic!("unexpected status {other}"),
        }
        assert!(Instant::now() < deadline, "the outage never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(injected.elapsed() >= outage, "accepted after {:?}, before the outage ended", injected.elapsed());
    let mut ws = connect(&emu).await;
    assert_eq!(auth(&mut ws, "test-key", Some(&session)).await, session);
    collect(&mut ws, id, 1).await;
    assert_eq!(emu.executions(id), 1);
}

#[tokio::test]
async fn billing_counts_produced_images_including_a_partial_failure() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    let (ok, partial) = (Uuid::new_v4(), Uuid::new_v4());
    emu.inject(Fault::FailTasks(FailRule::new("timeoutProvider", FailMatch::TaskUuid(partial)).after(1)));
    // Duplicates are delivered, not billed.
    emu.inject(Fault::DuplicateResults(2));
    send(&mut ws, json!([kontext(ok, json!({"numberResults":2}))])).await;
    assert_eq!(outcome(&mut ws, ok, 2).await.items.len(), 2);
    send(&mut ws, json!([kontext(partial, json!({"numberResults":3,"includeCost":true}))])).await;
    let got = outcome(&mut ws, partial, 3).await;
    assert_eq!(got.items.len(), 1);
    assert!(got.error.is_some());
    assert_eq!(got.items[0]["cost"], 0.04);

    let st = emu.stats();
    assert_eq!(st.images_billed, 3);
    assert_eq!(st.billed_micro_usd, 120_000);
    assert!(st.results_delivered >= 4, "duplicates were delivered: {st:?}");

    let (status, body) = download(&format!("{}/stats/tasks", emu.http_url())).await;
    assert_eq!(status, 200);
    let per_task: HashMap<Uuid, TaskStats> = serde_json::from_slice(&body).expect("a JSON object by taskUUID");
    assert_eq!(per_task[&ok].executions, 1);
    assert_eq!((per_task[&ok].images_billed, per_task[&ok].status.as_str()), (2, "success"));
    assert_eq!(per_task[&partial].executions, 1);
    assert_eq!(per_task[&partial].images_billed, 1);
    assert_eq!(per_task[&partial].error_code.as_deref(), Some("timeoutProvider"));
    let (status, body) = download(&format!("{}/stats", emu.http_url())).await;
    assert_eq!(status, 200);
    let stats: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (stats["images_billed"].clone(), stats["billed_micro_usd"].clone(), stats["tasks_failed_injected"].clone()),
        (json!(3), json!(120_000), json!(1))
    );
}

fn enhance(id: Uuid, extra: Value) -> Value {
    let mut t = json!({"taskType":"promptEnhance","taskUUID":id,"prompt":"a lighthouse at night"});
    if let (Some(t), Value::Object(extra)) = (t.as_object_mut(), extra) {
        t.extend(extra);
    }
    t
}

#[tokio::test]
async fn prompt_enhance_returns_distinct_texts_sync_and_async() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    let id = Uuid::new_v4();
    send(&mut ws, json!([enhance(id, json!({"promptVersions":3,"promptMaxLength":60,"includeCost":true}))])).await;
    let got = outcome(&mut ws, id, 3).await;
    assert!(got.error.is_none(), "{got:?}");
    let texts: HashSet<String> = got.items.iter().map(|i| i["text"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(texts.len(), 3, "{got:?}");
    assert!(texts.iter().all(|t| !t.is_empty() && t.chars().count() <= 60), "{texts:?}");
    assert!(got.items.iter().all(|i| i["taskType"] == "promptEnhance" && i["cost"] == 0.0024));
    // Registered: a resend conflicts, getResponse answers.
    send(&mut ws, json!([enhance(id, json!({}))])).await;
    assert_eq!(error_for(&mut ws, &id.to_string()).await["code"], "conflictTaskUUID");
    assert_eq!(with_status(&get_response(&mut ws, id).await, "success").len(), 3);

    let later = Uuid::new_v4();
    send(&mut ws, json!([enhance(later, json!({"promptVersions":3,"deliveryMethod":"async"}))])).await;
    let ack = items(&recv(&mut ws).await);
    assert_eq!(ack, vec![json!({"taskType":"promptEnhance","taskUUID":later})]);
    let answer = poll_until(&mut ws, later, |got| with_status(got, "success").len() == 3).await;
    let texts: HashSet<_> = with_status(&answer, "success").iter().map(|i| i["text"].to_string()).collect();
    assert_eq!(texts.len(), 3);
    assert_eq!(emu.executions(id) + emu.executions(later), 2);
    assert_eq!(emu.stats().images_billed, 0, "prompts are not images");
}

#[tokio::test]
async fn prompt_enhance_is_validated_and_can_be_failed() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    for (extra, code, parameter) in [
        (json!({"prompt": null}), "missingPrompt", "prompt"),
        (json!({"promptVersions": 6}), "invalidPromptVersions", "promptVersions"),
        (json!({"promptMaxLength": 5}), "invalidPromptMaxLength", "promptMaxLength"),
    ] {
        let id = Uuid::new_v4();
        let mut task = enhance(id, extra);
        if task["prompt"].is_null() {
            task.as_object_mut().map(|t| t.remove("prompt"));
        }
        send(&mut ws, json!([task])).await;
        let e = error_for(&mut ws, &id.to_string()).await;
        assert_eq!((e["code"].as_str(), e["parameter"].as_str()), (Some(code), Some(parameter)), "{e}");
        assert_eq!(emu.executions(id), 0);
    }
    emu.inject(Fault::FailTasks(
        FailRule::new("timeoutProvider", FailMatch::PromptContains("lighthouse".into())).after(1),
    ));
    let id = Uuid::new_v4();
    send(&mut ws, json!([enhance(id, json!({"promptVersions":2}))])).await;
    let got = outcome(&mut ws, id, 2).await;
    assert_eq!(got.events.iter().map(|(k, _)| *k).collect::<Vec<_>>(), ["item", "error"]);
    assert_eq!(
        got.error.map(|e| (e["code"].clone(), e["taskType"].clone())),
        Some((json!("timeoutProvider"), json!("promptEnhance")))
    );
    // The unsupported-task error lists it.
    let id = Uuid::new_v4();
    send(&mut ws, json!([{"taskType":"videoInference","taskUUID":id}])).await;
    let e = error_for(&mut ws, &id.to_string()).await;
    assert!(e["allowedValues"].as_array().is_some_and(|a| a.contains(&json!("promptEnhance"))), "{e}");
}

#[tokio::test]
async fn render_divisor_shrinks_the_encoded_image_only() {
    let emu = builder().render_divisor(8).start().await.unwrap();
    let (mut ws, _) = client(&emu).await;
    let id = Uuid::new_v4();
    send(
        &mut ws,
        json!([kontext(id, json!({"outputType":"base64Data","outputFormat":"PNG","width":1248,"height":832}))]),
    )
    .await;
    let item = collect(&mut ws, id, 1).await.remove(0);
    let (format, w, h) = decode(&output_bytes(&item));
    assert_eq!((format, w, h), (image::ImageFormat::Png, 1248 / 8, 832 / 8));
    assert!(item["imageUUID"].is_string() && item["seed"].is_number());
    // URL outputs are rendered small too.
    let id = Uuid::new_v4();
    send(&mut ws, json!([kontext(id, json!({"outputFormat":"JPG"}))])).await;
    let item = collect(&mut ws, id, 1).await.remove(0);
    let (status, bytes) = download(item["imageURL"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(decode(&bytes).1, 1024 / 8);
}

#[tokio::test]
async fn a_stall_rule_leaves_the_task_running_for_ever_after_k_results() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    let (id, other) = (Uuid::new_v4(), Uuid::new_v4());
    emu.inject(Fault::FailTasks(FailRule::stall(FailMatch::TaskUuid(id)).after(1)));
    send(&mut ws, json!([kontext(id, json!({"numberResults":3})), kontext(other, json!({"numberResults":2}))])).await;
    // Zero latency: everything not stalled is done once the other task is.
    let got = outcomes(&mut ws, &[other], 2).await;
    assert_eq!(got[&other].items.len(), 2);
    eventually("the stalled task's first result is recorded", || {
        emu.task_stats().get(&id).is_some_and(|t| t.images_billed == 1)
    })
    .await;
    // getResponse: the one result, no error, and the task still running.
    let answer = get_response(&mut ws, id).await;
    assert_eq!(with_status(&answer, "success").len(), 1, "{answer:?}");
    assert!(with_status(&answer, "error").is_empty(), "{answer:?}");
    let st = emu.stats();
    assert_eq!((st.tasks_stalled_injected, st.tasks_failed_injected, st.outstanding), (1, 0, 1), "{st:?}");
    // A resend is a conflict and runs nothing.
    send(&mut ws, json!([kontext(id, json!({"numberResults":3}))])).await;
    assert_eq!(error_for(&mut ws, &id.to_string()).await["code"], "conflictTaskUUID");
    assert_eq!(emu.executions(id), 1);
}
