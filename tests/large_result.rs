//! A 16 MiB base64 result reaches the caller intact (the official Python SDK
//! chokes on anything over 1 MiB), and a result over the configured limit makes
//! the client reconnect instead of hanging.

mod support;

use base64::Engine as _;
use runware_ws::{Client, ClientError, Kontext, KontextSize, ReconnectPolicy};
use std::sync::Arc;
use std::time::Duration;

/// A one-trick server: authenticates, then answers every imageInference task with
/// one base64 result of `payload`.
async fn serve_payload(payload: String) -> (String, tokio::task::JoinHandle<()>) {
    support::plain_server(Arc::new(move |t| {
        support::auth_and_ping(t).or_else(|| {
            (t["taskType"] == "imageInference").then(|| {
                serde_json::json!({"data":[{
                    "taskType":"imageInference","taskUUID":t["taskUUID"],
                    "imageUUID":uuid::Uuid::new_v4().to_string(),"imageBase64Data":payload,"seed":1}]})
            })
        })
    }))
    .await
}

fn payload(bytes: usize) -> (Vec<u8>, String) {
    let raw: Vec<u8> = (0..bytes).map(|i| (i * 31 % 251) as u8).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
    (raw, b64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_mib_base64_result_arrives_intact() {
    let (raw, b64) = payload(12 << 20);
    assert!(b64.len() >= 16 << 20);
    let (url, server) = serve_payload(b64).await;
    let client = Client::builder().url(url).api_key("k").connect().await.expect("connects");
    let task = Kontext::builder().prompt("big one").size(KontextSize::R1x1).build().unwrap();
    let images = client.kontext(task).await.expect("delivered");
    assert_eq!(images.len(), 1);
    let bytes = images[0].output.decode().expect("base64 output").expect("valid base64");
    assert_eq!(bytes.len(), raw.len());
    assert!(bytes == raw, "byte for byte");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_the_limit_forces_a_reconnect_not_a_hang() {
    let (_, b64) = payload(2 << 20);
    let (url, server) = serve_payload(b64).await;
    let client = Client::builder()
        .url(url)
        .api_key("k")
        .max_message_size(1 << 20)
        .task_timeout(Duration::from_secs(2))
        .reconnect(ReconnectPolicy {
            initial_delay: Duration::from_millis(5),
            max_attempts: Some(3),
            ..Default::default()
        })
        .connect()
        .await
        .expect("connects");
    let task = Kontext::builder().prompt("too big").size(KontextSize::R1x1).build().unwrap();
    let err = client.kontext(task).await.expect_err("cannot be read").error;
    assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
    assert!(client.metrics().reconnects >= 1, "the oversized frame dropped the socket");
    assert_eq!(client.diagnostics().pending, 0);
    server.abort();
}
