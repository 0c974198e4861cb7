//! The API key never appears in `Debug` output, errors, or trace-level logs —
//! even when a server echoes it back.

mod support;

use runware_ws::{Client, ClientError, Kontext, KontextSize, ReconnectPolicy};
use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "sk-SECRET-canary-4242";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains(KEY), "{what} leaks the key: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_never_leaks() {
    let capture = Capture::default();
    let writer = capture.clone();
    // Every level of this crate's own output, and debug for its dependencies:
    // tungstenite logs raw frame payloads (the auth frame among them) at TRACE,
    // which no client can scrub; the README warns about it.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug,runware_ws=trace"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    // A server that accepts the key and answers one task.
    let (ok_url, ok_server) = support::plain_server(Arc::new(|t| {
        support::auth_and_ping(t).or_else(|| {
            Some(json!({"data":[{"taskType":"imageInference","taskUUID":t["taskUUID"],
                "imageUUID":uuid::Uuid::new_v4().to_string(),"imageURL":"http://127.0.0.1/x.jpg"}]}))
        })
    }))
    .await;
    let builder = Client::builder().url(&ok_url).api_key(KEY).reconnect(ReconnectPolicy {
        initial_delay: Duration::from_millis(5),
        max_attempts: Some(2),
        ..Default::default()
    });
    assert_clean("ClientBuilder Debug", &format!("{builder:?}"));
    assert_clean("ClientConfig Debug", &format!("{:?}", builder.config()));
    let client = builder.clone().connect().await.expect("connects");
    assert_clean("Client Debug", &format!("{client:?}"));
    let task = Kontext::builder().prompt("hello").size(KontextSize::R1x1).build().unwrap();
    assert_eq!(client.kontext(task).await.expect("one image").len(), 1);
    let timeout = client.kontext_stream(Kontext::builder().prompt("x".repeat(4000)).build().unwrap_or_else(|e| {
        assert_clean("ValidationError", &e.to_string());
        Kontext::builder().prompt("never answered").size(KontextSize::R1x1).build().unwrap()
    }));
    drop(timeout);
    client.close(Duration::from_millis(100)).await;
    let closed = client.kontext(Kontext::builder().prompt("late").size(KontextSize::R1x1).build().unwrap()).await;
    assert_clean("Closed error", &format!("{closed:?}"));
    ok_server.abort();

    // A server that refuses the key and (badly) echoes it in its message.
    let (bad_url, bad_server) = support::plain_server(Arc::new(|t| {
        (t["taskType"] == "authentication").then(|| {
            json!({"errors":[{"code":"invalidApiKey","message":format!("Invalid API key {}", t["apiKey"].as_str().unwrap_or("")),
                "parameter":"apiKey","taskType":"authentication","apiKey":t["apiKey"]}]})
        })
    }))
    .await;
    let err = Client::builder().url(&bad_url).api_key(KEY).connect().await.expect_err("refused");
    assert!(matches!(err, ClientError::Auth(_)), "{err}");
    assert_clean("auth error Display", &err.to_string());
    assert_clean("auth error Debug", &format!("{err:?}"));
    bad_server.abort();

    // Nobody listening.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = Client::builder()
        .url(format!("ws://{addr}/v1"))
        .api_key(KEY)
        .reconnect(ReconnectPolicy {
            initial_delay: Duration::from_millis(1),
            max_attempts: Some(1),
            ..Default::default()
        })
        .connect()
        .await
        .expect_err("unreachable");
    assert_clean("unreachable error", &format!("{err} {err:?}"));

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("frame out"), "trace-level logs were captured");
    assert!(logs.contains("authentication refused"), "the refusal was logged");
    assert_clean("trace logs", &logs);
}
