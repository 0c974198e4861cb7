//! The emulator's wire behaviour: authentication, pings, frames, validation codes,
//! unsupported tasks, malformed input, idle timeout.

mod common;

use common::*;
use runware_emulator::Emulator;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

#[tokio::test]
async fn auth_succeeds_with_a_session_and_fails_with_the_runware_error() {
    let emu = builder().api_key("k1").api_key("k2").start().await.unwrap();
    let mut ws = connect(&emu).await;
    send(&mut ws, json!([{"taskType":"authentication","apiKey":"wrong"}])).await;
    let f = recv(&mut ws).await;
    assert_eq!(
        f,
        json!({"errors":[{"code":"invalidApiKey","message":"Invalid API key. Get one at https://my.runware.ai/signup","parameter":"apiKey","taskType":"authentication"}]})
    );
    // The connection stays up; a good key then works, and so does the second key.
    let s1 = auth(&mut ws, "k1", None).await;
    assert!(Uuid::parse_str(&s1).is_ok());
    let mut ws2 = connect(&emu).await;
    let s2 = auth(&mut ws2, "k2", None).await;
    assert_ne!(s1, s2);
    send(&mut ws2, json!([{"taskType":"authentication"}])).await;
    assert_eq!(errors(&recv(&mut ws2).await)[0]["code"], "missingApiKey");
    let st = emu.stats();
    assert_eq!((st.auths, st.auth_failures, st.connections, st.open_connections), (2, 2, 2, 2));
    assert_eq!(emu.addr().ip().to_string(), "127.0.0.1");
    assert!(emu.ws_url().starts_with("ws://127.0.0.1:") && emu.ws_url().ends_with("/v1"));
}

#[tokio::test]
async fn default_key_is_test_key_and_auth_reply_is_exact() {
    let emu = Emulator::builder().start().await.unwrap();
    let mut ws = connect(&emu).await;
    send(&mut ws, json!([{"taskType":"authentication","apiKey":"test-key"}])).await;
    let f = recv(&mut ws).await;
    let item = &f["data"][0];
    assert_eq!(item["taskType"], "authentication");
    assert!(Uuid::parse_str(item["connectionSessionUUID"].as_str().unwrap()).is_ok());
    assert_eq!(f["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn ping_is_answered_before_and_after_auth_and_control_pings_too() {
    let emu = start().await;
    let mut ws = connect(&emu).await;
    send(&mut ws, json!([{"taskType":"ping","ping":true}])).await;
    assert_eq!(recv(&mut ws).await, json!({"data":[{"taskType":"ping","pong":true}]}));
    auth(&mut ws, "test-key", None).await;
    send(&mut ws, json!([{"taskType":"ping","ping":true}])).await;
    assert_eq!(recv(&mut ws).await, json!({"data":[{"taskType":"ping","pong":true}]}));
    assert_eq!(emu.stats().pings, 2);
    // RFC 6455 ping → pong.
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::Ping(b"hi".to_vec().into())).await.unwrap();
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Pong(p))) => {
                assert_eq!(&p[..], b"hi");
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("no pong: {other:?}"),
        }
    }
}

#[tokio::test]
async fn several_tasks_per_frame_get_one_reply_frame() {
    let emu = start().await;
    let mut ws = connect(&emu).await;
    let bad = Uuid::new_v4();
    send(
        &mut ws,
        json!([
            {"taskType":"authentication","apiKey":"test-key"},
            {"taskType":"ping","ping":true},
            kontext(bad, json!({"positivePrompt":"x"})),
        ]),
    )
    .await;
    let first = recv(&mut ws).await;
    // The authentication reply is flushed on its own, first.
    assert_eq!(items(&first)[0]["taskType"], "authentication");
    let second = recv(&mut ws).await;
    assert_eq!(items(&second), vec![json!({"taskType":"ping","pong":true})]);
    assert_eq!(errors(&second)[0]["code"], "invalidPositivePrompt");
    assert_eq!(errors(&second)[0]["taskUUID"], json!(bad.to_string()));
    // Two valid tasks in one frame both run.
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    send(&mut ws, json!([kontext(a, json!({})), kontext(b, json!({}))])).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        for i in items(&recv(&mut ws).await) {
            got.push(i["taskUUID"].as_str().unwrap().to_string());
        }
    }
    got.sort();
    let mut want = vec![a.to_string(), b.to_string()];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(emu.stats().tasks_received, 3);
}

#[tokio::test]
async fn tasks_before_auth_are_refused_with_their_uuid() {
    let emu = start().await;
    let mut ws = connect(&emu).await;
    let id = Uuid::new_v4();
    send(&mut ws, json!([kontext(id, json!({}))])).await;
    let e = error_for(&mut ws, &id.to_string()).await;
    assert_eq!(e["code"], "unauthorized");
    assert_eq!(e["taskType"], "imageInference");
    assert_eq!(emu.stats().executions_total, 0);
}

/// Sends one task and returns its error.
async fn error_of(ws: &mut Ws, task: Value) -> Value {
    let id = task["taskUUID"].as_str().map(str::to_string).unwrap_or_default();
    send(ws, json!([task])).await;
    let f = recv(ws).await;
    let e = errors(&f).into_iter().next().unwrap_or_else(|| panic!("expected an error, got {f}"));
    if !id.is_empty() && Uuid::parse_str(&id).is_ok() {
        assert_eq!(e["taskUUID"], json!(id), "{e}");
        assert_eq!(e["taskType"], "imageInference", "{e}");
    }
    e
}

#[tokio::test]
async fn every_validation_code_names_its_parameter() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    let cases: Vec<(Value, &str, Value)> = vec![
        (json!({"positivePrompt":"x"}), "invalidPositivePrompt", json!("positivePrompt")),
        (json!({"positivePrompt":"y".repeat(3001)}), "invalidPositivePrompt", json!("positivePrompt")),
        (json!({"positivePrompt":42}), "invalidPositivePrompt", json!("positivePrompt")),
        (json!({"positivePrompt":null}), "missingPositivePrompt", json!("positivePrompt")),
        (json!({"width":1000,"height":1000}), "unsupportedDimensions", json!(["width", "height"])),
        (json!({"width":null}), "invalidDimensions", json!(["width", "height"])),
        (json!({"width":"1024"}), "invalidDimensions", json!(["width", "height"])),
        (json!({"numberResults":0}), "invalidNumberResults", json!("numberResults")),
        (json!({"numberResults":21}), "invalidNumberResults", json!("numberResults")),
        (json!({"numberResults":"2"}), "invalidNumberResults", json!("numberResults")),
        (json!({"outputQuality":19}), "invalidOutputQuality", json!("outputQuality")),
        (json!({"outputQuality":100}), "invalidOutputQuality", json!("outputQuality")),
        (json!({"ttl":59}), "invalidTtl", json!("ttl")),
        (json!({"ttl":120,"outputType":"base64Data"}), "invalidTtl", json!("ttl")),
        (
            json!({"providerSettings":{"bfl":{"safetyTolerance":7}}}),
            "invalidSafetyTolerance",
            json!("providerSettings.bfl.safetyTolerance"),
        ),
        (
            json!({"providerSettings":{"bfl":{"safetyTolerance":"2"}}}),
            "invalidSafetyTolerance",
            json!("providerSettings.bfl.safetyTolerance"),
        ),
        (json!({"seed":-1}), "invalidSeed", json!("seed")),
        (json!({"seed":9223372036854775808u64}), "invalidSeed", json!("seed")),
        (json!({"seed":1.5}), "invalidSeed", json!("seed")),
        (json!({"outputType":"GIF"}), "invalidOutputType", json!("outputType")),
        (json!({"outputFormat":"TIFF"}), "invalidOutputFormat", json!("outputFormat")),
        (json!({"outputFormat":7}), "invalidOutputFormat", json!("outputFormat")),
        (json!({"deliveryMethod":"later"}), "invalidDeliveryMethod", json!("deliveryMethod")),
        (json!({"webhookURL":"ftp://x"}), "invalidWebhookURL", json!("webhookURL")),
        (json!({"uploadEndpoint":"not a url"}), "invalidUploadEndpoint", json!("uploadEndpoint")),
        (json!({"includeCost":"yes"}), "invalidIncludeCost", json!("includeCost")),
        (
            json!({"inputs":{"referenceImages":["not an image"]}}),
            "invalidReferenceImage",
            json!("inputs.referenceImages"),
        ),
        (
            json!({"inputs":{"referenceImages":"https://x.test/a.png"}}),
            "invalidReferenceImage",
            json!("inputs.referenceImages"),
        ),
        (json!({"safety":{"mode":"slow"}}), "invalidSafetyMode", json!("safety.mode")),
        (json!({"safety":{"checkContent":1}}), "invalidCheckContent", json!("safety.checkContent")),
        (
            json!({"providerSettings":{"bfl":{"promptUpsampling":"no"}}}),
            "invalidPromptUpsampling",
            json!("providerSettings.bfl.promptUpsampling"),
        ),
        (json!({"model":"runware:100@1"}), "unsupportedModel", json!("model")),
        (json!({"model":null}), "missingModel", json!("model")),
    ];
    for (edit, code, parameter) in cases {
        let e = error_of(&mut ws, kontext(Uuid::new_v4(), edit.clone())).await;
        assert_eq!(e["code"], code, "{edit} → {e}");
        assert_eq!(e["parameter"], parameter, "{edit} → {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
        if matches!(code, "unsupportedDimensions" | "invalidOutputType" | "invalidOutputFormat" | "unsupportedModel") {
            assert!(e["allowedValues"].as_array().is_some_and(|a| !a.is_empty()), "{e}");
        }
    }
    let e = error_of(&mut ws, kontext(Uuid::new_v4(), json!({"width":1000,"height":1000}))).await;
    assert!(e["allowedValues"].as_array().unwrap().contains(&json!("1248x832")));
    // taskUUID problems.
    let mut t = kontext(Uuid::new_v4(), json!({}));
    t.as_object_mut().unwrap().remove("taskUUID");
    send(&mut ws, json!([t])).await;
    assert_eq!(errors(&recv(&mut ws).await)[0]["code"], "missingTaskUUID");
    send(&mut ws, json!([kontext(Uuid::nil(), json!({"taskUUID":"nope"}))])).await;
    let e = errors(&recv(&mut ws).await)[0].clone();
    assert_eq!((e["code"].clone(), e["taskUUID"].clone()), (json!("invalidTaskUUID"), json!("nope")));
    send(&mut ws, json!([kontext(Uuid::nil(), json!({"taskUUID":12}))])).await;
    assert_eq!(errors(&recv(&mut ws).await)[0]["code"], "invalidTaskUUID");
    assert_eq!(emu.stats().executions_total, 0);
}

#[tokio::test]
async fn canonical_examples_are_accepted() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kontext");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".request.json") {
            continue;
        }
        let mut req: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        // The reference URLs point to the internet: use an inline image instead.
        req["inputs"]["referenceImages"] = json!([png_data_uri(40, 30)]);
        let id = Uuid::parse_str(req["taskUUID"].as_str().unwrap()).unwrap();
        let seed = req["seed"].clone();
        send(&mut ws, json!([req.clone()])).await;
        let got = collect(&mut ws, id, 1).await;
        assert_eq!(got[0]["seed"], seed);
        let (_, bytes) = download(got[0]["imageURL"].as_str().unwrap()).await;
        let (format, w, h) = decode(&bytes);
        assert_eq!(
            (format, json!(w), json!(h)),
            (image::ImageFormat::Jpeg, req["width"].clone(), req["height"].clone())
        );
    }
}

#[tokio::test]
async fn unsupported_task_types_and_bad_task_objects_are_errors_not_drops() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    let id = Uuid::new_v4();
    send(&mut ws, json!([{"taskType":"imageCaption","taskUUID":id,"inputImage":"x"}])).await;
    let e = error_for(&mut ws, &id.to_string()).await;
    assert_eq!((e["code"].clone(), e["taskType"].clone()), (json!("unsupportedTaskType"), json!("imageCaption")));
    send(&mut ws, json!([{"taskUUID":id}])).await;
    assert_eq!(errors(&recv(&mut ws).await)[0]["code"], "missingTaskType");
    send(&mut ws, json!([{"taskType":5}])).await;
    assert_eq!(errors(&recv(&mut ws).await)[0]["code"], "invalidTaskType");
    send(&mut ws, json!([7, "x", null])).await;
    assert_eq!(errors(&recv(&mut ws).await).len(), 3);
    send(&mut ws, json!([])).await;
    assert_eq!(errors(&recv(&mut ws).await)[0]["code"], "invalidJSON");
    // Still alive.
    send(&mut ws, json!([{"taskType":"ping","ping":true}])).await;
    assert_eq!(items(&recv(&mut ws).await)[0]["pong"], true);
}

#[tokio::test]
async fn garbage_client_frames_get_errors_and_the_connection_survives() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    for garbage in ["not json", "{\"taskType\":\"ping\"}", "42", "[1", "\"str\""] {
        send_text(&mut ws, garbage).await;
        let f = recv(&mut ws).await;
        assert_eq!(errors(&f)[0]["code"], "invalidJSON", "{garbage} → {f}");
    }
    use futures::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(errors(&recv(&mut ws).await)[0]["code"], "invalidJSON");
    // Another client is unaffected, and this one still works.
    let (mut other, _) = client(&emu).await;
    let id = Uuid::new_v4();
    send(&mut other, json!([kontext(id, json!({}))])).await;
    collect(&mut other, id, 1).await;
    let id = Uuid::new_v4();
    send(&mut ws, json!([kontext(id, json!({}))])).await;
    collect(&mut ws, id, 1).await;
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let emu = builder().idle_timeout(Duration::from_millis(300)).start().await.unwrap();
    let (mut ws, _) = client(&emu).await;
    let t0 = std::time::Instant::now();
    match next_event(&mut ws).await {
        Event::Closed(code) => assert_eq!(code, Some(1000)),
        other => panic!("expected a close, got {other:?}"),
    }
    assert!(t0.elapsed() >= Duration::from_millis(250));
    eventually("the connection is gone", || emu.stats().open_connections == 0).await;
}

#[tokio::test]
async fn stats_are_served_as_json() {
    let emu = start().await;
    let (_ws, _) = client(&emu).await;
    let (status, body) = download(&format!("{}/stats", emu.http_url())).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["auths"], 1);
    assert_eq!(v["max_executions_per_task"], 0);
    let (status, _) = download(&format!("{}/images/nope.jpg", emu.http_url())).await;
    assert_eq!(status, 404);
}
