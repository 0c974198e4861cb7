//! The emulator fuzzed from the client side: arbitrary frames (bytes, JSON of any
//! shape, tasks with wrong types and huge numbers) never crash it, never drop the
//! sender's connection for input that is merely malformed, and never disturb
//! another client.

use futures::{SinkExt, StreamExt};
use proptest::prelude::*;
use runware_emulator::{Emulator, EmulatorHandle, Latency};
use runware_ws::{Client, Kontext, KontextSize};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn authed(emu: &EmulatorHandle) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(emu.ws_url()).await.expect("connect");
    ws.send(Message::Text(json!([{"taskType":"authentication","apiKey":"k"}]).to_string().into())).await.unwrap();
    let reply = next_text(&mut ws).await.expect("auth reply");
    assert!(reply.contains("connectionSessionUUID"), "{reply}");
    ws
}

async fn next_text(ws: &mut Ws) -> Option<String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.ok()?? {
            Ok(Message::Text(t)) => return Some(t.to_string()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Sends a ping and reads until the pong: the connection is alive and answering.
async fn still_answers(ws: &mut Ws) -> bool {
    if ws.send(Message::Text(r#"[{"taskType":"ping","ping":true}]"#.into())).await.is_err() {
        return false;
    }
    while let Some(t) = next_text(ws).await {
        if t.contains("\"pong\":true") {
            return true;
        }
    }
    false
}

#[path = "support/arb_json.rs"]
mod arb;

/// Arbitrary JSON in the words of client tasks.
fn hostile_value() -> impl Strategy<Value = Value> {
    const WORDS: &[&str] = &["bfl:3@1", "imageInference", "11111111-1111-4111-8111-111111111111"];
    const KEYS: &[&str] = &[
        "taskType",
        "taskUUID",
        "model",
        "positivePrompt",
        "width",
        "height",
        "numberResults",
        "outputType",
        "inputs",
        "referenceImages",
        "deliveryMethod",
    ];
    arb::arb_json(WORDS, KEYS, 4, 48)
}

fn hostile_frame() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,64}",
        hostile_value().prop_map(|v| v.to_string()),
        prop::collection::vec(hostile_value(), 0..4).prop_map(|v| Value::Array(v).to_string()),
        // Inference tasks with one field broken.
        (
            hostile_value(),
            prop_oneof![Just("width"), Just("numberResults"), Just("positivePrompt"), Just("seed"), Just("inputs")]
        )
            .prop_map(|(v, field)| {
                let mut t = json!({"taskType":"imageInference","taskUUID":uuid::Uuid::new_v4().to_string(),
                    "model":"bfl:3@1","positivePrompt":"ok then","width":1024,"height":1024,"outputType":"URL"});
                t[field] = v;
                json!([t]).to_string()
            }),
        Just(format!("[{}]", "[".repeat(5000) + &"]".repeat(5000))),
    ]
}

#[test]
fn arbitrary_client_frames_never_hurt_the_emulator() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let emu = rt.block_on(Emulator::builder().api_key("k").latency(Latency::Fixed(Duration::ZERO)).start()).unwrap();
    let attacker = std::cell::RefCell::new(Some(rt.block_on(authed(&emu))));
    let bystander = rt.block_on(Client::builder().url(emu.ws_url()).api_key("k").connect()).unwrap();
    let reconnects = std::cell::Cell::new(0u32);
    let config = ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(frame in hostile_frame())| {
        rt.block_on(async {
            let mut ws = attacker.borrow_mut().take().expect("a connection");
            if ws.send(Message::Text(frame.clone().into())).await.is_err() || !still_answers(&mut ws).await {
                // A connection may legitimately end (e.g. on a frame over a limit): the
                // emulator must still take a new one.
                reconnects.set(reconnects.get() + 1);
                ws = authed(&emu).await;
            }
            let alive = still_answers(&mut ws).await;
            *attacker.borrow_mut() = Some(ws);
            prop_assert!(alive, "the emulator stopped answering after {frame:?}");
            Ok(())
        })?;
    });
    assert_eq!(reconnects.get(), 0, "malformed input gets an error, not a dropped connection");
    // Binary frames too.
    let mut attacker = attacker.into_inner().expect("a connection");
    rt.block_on(async {
        attacker.send(Message::Binary(vec![0, 159, 146, 150].into())).await.unwrap();
        assert!(still_answers(&mut attacker).await);
        // The bystander never noticed.
        let task = Kontext::builder().prompt("still fine?").size(KontextSize::R1x1).build().unwrap();
        assert_eq!(bystander.kontext(task).await.expect("unaffected").len(), 1);
        assert_eq!(bystander.metrics().reconnects, 0);
        emu.shutdown().await;
    });
}
