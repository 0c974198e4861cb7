//! Sessions (resume, expiry, replay) and every injected fault, observed from a raw
//! client and through `Stats`.

mod common;

use common::*;
use futures::StreamExt;
use runware_emulator::{Fault, Latency};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

fn slow(ms: u64) -> runware_emulator::EmulatorBuilder {
    builder().latency(Latency::Fixed(Duration::from_millis(ms)))
}

/// Asserts nothing arrives for `d` (control frames aside).
async fn silent_for(ws: &mut Ws, d: Duration) {
    let deadline = tokio::time::Instant::now() + d;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => panic!("expected silence, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn resume_replays_buffered_results_under_the_same_session() {
    let emu = slow(300).start().await.unwrap();
    let (mut ws, session) = client(&emu).await;
    let id = Uuid::new_v4();
    send(&mut ws, json!([kontext(id, json!({"numberResults":2}))])).await;
    drop(ws);
    eventually("both results buffered", || emu.stats().results_buffered == 2).await;
    let mut ws = connect(&emu).await;
    let resumed = auth(&mut ws, "test-key", Some(&session)).await;
    assert_eq!(resumed, session);
    let got = collect(&mut ws, id, 2).await;
    assert_eq!(got.len(), 2);
    let st = emu.stats();
    assert_eq!((st.results_replayed, st.results_delivered, st.executions_total), (2, 2, 1));
}

#[tokio::test]
async fn unknown_or_expired_sessions_get_a_new_uuid() {
    let emu = slow(0).session_ttl(Duration::from_millis(100)).start().await.unwrap();
    let mut ws = connect(&emu).await;
    let unknown = Uuid::new_v4().to_string();
    let fresh = auth(&mut ws, "test-key", Some(&unknown)).await;
    assert_ne!(fresh, unknown);
    drop(ws);
    eventually("disconnected", || emu.stats().open_connections == 0).await;
    tokio::time::sleep(Duration::from_millis(250)).await; // past the session ttl
    let mut ws = connect(&emu).await;
    let again = auth(&mut ws, "test-key", Some(&fresh)).await;
    assert_ne!(again, fresh);
    // A session is also bound to its key.
    let emu = builder().api_key("a").api_key("b").start().await.unwrap();
    let mut wa = connect(&emu).await;
    let sa = auth(&mut wa, "a", None).await;
    let mut wb = connect(&emu).await;
    assert_ne!(auth(&mut wb, "b", Some(&sa)).await, sa);
}

#[tokio::test]
async fn a_conflict_on_a_resumed_session_still_delivers_the_remaining_results() {
    let emu = slow(400).start().await.unwrap();
    let (mut ws, session) = client(&emu).await;
    let id = Uuid::new_v4();
    let task = kontext(id, json!({"numberResults":2}));
    send(&mut ws, json!([task.clone()])).await;
    drop(ws);
    let mut ws = connect(&emu).await;
    assert_eq!(auth(&mut ws, "test-key", Some(&session)).await, session);
    send(&mut ws, json!([task])).await;
    let mut conflict = false;
    let mut images = std::collections::HashSet::new();
    while images.len() < 2 {
        let f = recv(&mut ws).await;
        conflict |= errors(&f).iter().any(|e| e["code"] == "conflictTaskUUID" && e["taskUUID"] == json!(id));
        for i in items(&f) {
            images.insert(i["imageUUID"].as_str().unwrap().to_string());
        }
    }
    assert!(conflict);
    assert_eq!(emu.executions(id), 1);
}

#[tokio::test]
async fn restart_forgets_sessions_but_get_response_still_answers() {
    let emu = slow(300).start().await.unwrap();
    let (mut ws, session) = client(&emu).await;
    let id = Uuid::new_v4();
    send(&mut ws, json!([kontext(id, json!({}))])).await;
    eventually("the task is running", || emu.stats().outstanding == 1).await;
    emu.inject(Fault::Restart);
    assert!(matches!(next_event(&mut ws).await, Event::Ended), "abrupt drop, no close frame");
    let mut ws = connect(&emu).await;
    let new_session = auth(&mut ws, "test-key", Some(&session)).await;
    assert_ne!(new_session, session);
    // The task store survived: a resend conflicts, getResponse finds the result.
    send(&mut ws, json!([kontext(id, json!({}))])).await;
    assert_eq!(error_for(&mut ws, &id.to_string()).await["code"], "conflictTaskUUID");
    let mut found = None;
    for _ in 0..200 {
        send(&mut ws, json!([{"taskType":"getResponse","taskUUID":id}])).await;
        let got = items(&recv(&mut ws).await);
        if let Some(ok) = got.into_iter().find(|i| i["status"] == "success") {
            found = Some(ok);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(found.is_some_and(|i| i["imageURL"].is_string()));
    assert_eq!(emu.executions(id), 1);
    assert_eq!(emu.stats().results_replayed, 0);
}

#[tokio::test]
async fn drop_closes_without_a_close_frame_and_close_sends_one() {
    let emu = start().await;
    let (mut a, _) = client(&emu).await;
    let (mut b, _) = client(&emu).await;
    emu.inject(Fault::Drop);
    assert!(matches!(next_event(&mut a).await, Event::Ended));
    assert!(matches!(next_event(&mut b).await, Event::Ended));
    // Only connections open at injection time are affected.
    let (mut c, _) = client(&emu).await;
    emu.inject(Fault::Close);
    match next_event(&mut c).await {
        Event::Closed(code) => assert!(matches!(code, Some(1000 | 1001)), "{code:?}"),
        other => panic!("expected a close frame, got {other:?}"),
    }
    eventually("all closed", || emu.stats().open_connections == 0).await;
    assert_eq!(emu.stats().faults_injected, 2);
}

#[tokio::test]
async fn half_open_stops_pongs_and_results_but_keeps_the_socket() {
    let emu = slow(200).start().await.unwrap();
    let (mut ws, session) = client(&emu).await;
    let id = Uuid::new_v4();
    send(&mut ws, json!([kontext(id, json!({}))])).await;
    eventually("the task is running", || emu.stats().outstanding == 1).await;
    emu.inject(Fault::HalfOpen);
    send(&mut ws, json!([{"taskType":"ping","ping":true}])).await;
    use futures::SinkExt;
    ws.send(Message::Ping(b"x".to_vec().into())).await.unwrap();
    silent_for(&mut ws, Duration::from_millis(600)).await;
    assert_eq!(emu.stats().open_connections, 1, "the socket is still open");
    eventually("the result is buffered", || emu.stats().results_buffered == 1).await;
    // The client gives up and resumes elsewhere: the result comes.
    let mut ws2 = connect(&emu).await;
    assert_eq!(auth(&mut ws2, "test-key", Some(&session)).await, session);
    collect(&mut ws2, id, 1).await;
    assert_eq!(emu.stats().results_replayed, 1);
}

#[tokio::test]
async fn drop_mid_task_drops_after_some_results_and_the_rest_wait_in_the_session() {
    let emu = slow(300).start().await.unwrap();
    let (mut ws, session) = client(&emu).await;
    emu.inject(Fault::DropMidTask);
    let id = Uuid::new_v4();
    send(&mut ws, json!([kontext(id, json!({"numberResults":3}))])).await;
    let mut first = Vec::new();
    loop {
        match next_event(&mut ws).await {
            Event::Frame(f) => first.extend(items(&f)),
            Event::Ended => break,
            Event::Closed(c) => panic!("expected an abrupt drop, got close {c:?}"),
        }
    }
    assert!(!first.is_empty() && first.len() < 3, "{first:?}");
    let mut ws = connect(&emu).await;
    assert_eq!(auth(&mut ws, "test-key", Some(&session)).await, session);
    let rest = collect(&mut ws, id, 3 - first.len()).await;
    for r in &rest {
        assert!(!first.iter().any(|f| f["imageUUID"] == r["imageUUID"]));
    }
    assert_eq!(emu.executions(id), 1);
    // It fired once: the next multi-result task is not dropped.
    let id2 = Uuid::new_v4();
    send(&mut ws, json!([kontext(id2, json!({"numberResults":2}))])).await;
    collect(&mut ws, id2, 2).await;
}

#[tokio::test]
async fn stray_errors_arrive_with_an_unknown_uuid_and_without_one() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    emu.inject(Fault::StrayError);
    let a = errors(&recv(&mut ws).await).remove(0);
    let b = errors(&recv(&mut ws).await).remove(0);
    assert!(Uuid::parse_str(a["taskUUID"].as_str().unwrap()).is_ok());
    assert!(b.get("taskUUID").is_none());
    // The connection still works.
    let id = Uuid::new_v4();
    send(&mut ws, json!([kontext(id, json!({}))])).await;
    collect(&mut ws, id, 1).await;
}

#[tokio::test]
async fn garbage_frames_are_sent() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    emu.inject(Fault::Garbage);
    let mut texts = Vec::new();
    let mut binary = 0;
    while texts.len() + binary < 5 {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => texts.push(t.to_string()),
            Some(Ok(Message::Binary(_))) => binary += 1,
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(binary, 1);
    assert!(serde_json::from_str::<serde_json::Value>(&texts[0]).is_err());
    assert!(texts.contains(&"[1,2,3]".to_string()));
    assert!(texts.contains(&r#"{"data":5}"#.to_string()));
    assert!(texts.iter().any(|t| t.contains("imageUUID") && !t.contains("taskUUID")));
}

#[tokio::test]
async fn duplicate_results_sends_items_twice() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    emu.inject(Fault::DuplicateResults(2));
    let id = Uuid::new_v4();
    send(&mut ws, json!([kontext(id, json!({"numberResults":2}))])).await;
    let mut all = Vec::new();
    while all.len() < 4 {
        all.extend(items(&recv(&mut ws).await));
    }
    let distinct: std::collections::HashSet<_> = all.iter().map(|i| i["imageUUID"].to_string()).collect();
    assert_eq!(distinct.len(), 2);
    assert_eq!(emu.stats().results_delivered, 4);
    // Disarmed after n items.
    let id2 = Uuid::new_v4();
    send(&mut ws, json!([kontext(id2, json!({}))])).await;
    let f = recv(&mut ws).await;
    assert_eq!(items(&f).len(), 1);
}

#[tokio::test]
async fn refused_and_slow_handshakes() {
    let emu = start().await;
    emu.inject(Fault::RefuseHandshakes(2));
    for _ in 0..2 {
        match tokio_tungstenite::connect_async(emu.ws_url()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 503),
            other => panic!("expected HTTP 503, got {other:?}"),
        }
    }
    let (_ok, _) = client(&emu).await;
    emu.inject(Fault::SlowHandshake(Duration::from_millis(300)));
    let t0 = Instant::now();
    let (_slow, _) = client(&emu).await;
    assert!(t0.elapsed() >= Duration::from_millis(300));
    let t1 = Instant::now();
    let (_fast, _) = client(&emu).await;
    assert!(t1.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn refused_auth_even_with_a_valid_key() {
    let emu = start().await;
    emu.inject(Fault::RefuseAuth(1));
    let mut ws = connect(&emu).await;
    send(&mut ws, json!([{"taskType":"authentication","apiKey":"test-key"}])).await;
    assert_eq!(errors(&recv(&mut ws).await)[0]["code"], "invalidApiKey");
    auth(&mut ws, "test-key", None).await;
    let st = emu.stats();
    assert_eq!((st.auths, st.auth_failures, st.faults_injected), (1, 1, 1));
}

#[tokio::test]
async fn a_client_that_drops_does_not_affect_others_and_shutdown_closes_everything() {
    let emu = slow(100).start().await.unwrap();
    let (mut a, _) = client(&emu).await;
    let (b, _) = client(&emu).await;
    let id = Uuid::new_v4();
    send(&mut a, json!([kontext(id, json!({}))])).await;
    drop(b);
    collect(&mut a, id, 1).await;
    emu.shutdown().await;
    assert!(matches!(next_event(&mut a).await, Event::Ended | Event::Closed(_)));
    assert!(tokio_tungstenite::connect_async(emu.ws_url()).await.is_err());
}

#[tokio::test]
async fn held_handshakes_wait_for_the_window_then_proceed() {
    let emu = start().await;
    // Held for an hour: no upgrade completes meanwhile (every one would in
    // milliseconds otherwise).
    emu.inject(Fault::HoldHandshakes(Duration::from_secs(3600)));
    let held = tokio::time::timeout(Duration::from_secs(2), tokio_tungstenite::connect_async(emu.ws_url())).await;
    assert!(held.is_err(), "a held upgrade completed");
    assert_eq!(emu.open_connections(), 0);

    // A short window: the upgrade waits for its end, then the connection is served.
    let emu = start().await;
    emu.inject(Fault::HoldHandshakes(Duration::from_millis(300)));
    let t0 = Instant::now();
    let (_held, _) = client(&emu).await;
    assert!(t0.elapsed() >= Duration::from_millis(300));
    let t1 = Instant::now();
    let (_after, _) = client(&emu).await;
    assert!(t1.elapsed() < Duration::from_millis(300), "the window did not end");
}
