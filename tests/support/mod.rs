//! A scripted WebSocket peer for tests that need a server misbehaving in one
//! precise way (the emulator covers the faithful cases).
#![allow(dead_code)]

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Decides the reply frame (if any) for one client task object.
pub type Reply = Arc<dyn Fn(&Value) -> Option<Value> + Send + Sync>;

/// Replies to authentication (accepting any key) and ping.
pub fn auth_and_ping(task: &Value) -> Option<Value> {
    match task["taskType"].as_str() {
        Some("authentication") => {
            Some(json!({"data":[{"taskType":"authentication","connectionSessionUUID":"scripted-session"}]}))
        }
        Some("ping") => Some(json!({"data":[{"taskType":"ping","pong":true}]})),
        _ => None,
    }
}

/// Serves one WebSocket: each task of each array frame gets `reply`'s frame.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocketStream<S>, reply: Reply) {
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(text) = msg else { continue };
        let tasks: Vec<Value> = serde_json::from_str(&text).unwrap_or_default();
        for frame in tasks.iter().filter_map(|t| reply(t)) {
            if ws.send(Message::Text(frame.to_string().into())).await.is_err() {
                return;
            }
        }
    }
}

/// A plain `ws://` scripted server on 127.0.0.1:0. Returns its URL and task.
pub async fn plain_server(reply: Reply) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/v1", listener.local_addr().expect("addr"));
    let handle = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                let cfg = WebSocketConfig::default().max_message_size(Some(64 << 20)).max_frame_size(Some(64 << 20));
                if let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(cfg)).await {
                    serve(ws, reply).await;
                }
            });
        }
    });
    (url, handle)
}

/// `n` valid Kontext tasks with distinct prompts.
pub fn kontext_tasks(n: usize) -> Vec<runware_ws::KontextTask> {
    (0..n)
        .map(|i| {
            runware_ws::Kontext::builder()
                .prompt(format!("load {i}"))
                .size(runware_ws::KontextSize::R1x1)
                .build()
                .expect("valid task")
        })
        .collect()
}

/// A client for `url` with room for `in_flight` tasks and a generous deadline.
pub async fn roomy_client(url: String, in_flight: usize) -> runware_ws::Client {
    runware_ws::Client::builder()
        .url(url)
        .api_key("k")
        .max_in_flight(in_flight)
        .task_timeout(std::time::Duration::from_secs(120))
        .connect()
        .await
        .expect("client connects")
}
