//! A raw WebSocket client for the emulator tests: connect, authenticate, send task
//! arrays, read frames as JSON.
#![allow(dead_code)]

use futures::{SinkExt, StreamExt};
use runware_emulator::{Emulator, EmulatorBuilder, EmulatorHandle, Latency};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// A builder with zero latency and the default key.
pub fn builder() -> EmulatorBuilder {
    Emulator::builder().latency(Latency::Fixed(Duration::ZERO)).seed(7)
}

pub async fn start() -> EmulatorHandle {
    builder().start().await.expect("emulator starts")
}

pub async fn connect(emu: &EmulatorHandle) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(emu.ws_url()).await.expect("websocket connects");
    ws
}

pub async fn send(ws: &mut Ws, tasks: Value) {
    ws.send(Message::text(tasks.to_string())).await.expect("send");
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_string())).await.expect("send");
}

/// What came next on the socket.
#[derive(Debug)]
pub enum Event {
    Frame(Value),
    /// A close frame, with its code.
    Closed(Option<u16>),
    /// The stream ended (or failed) without a close frame.
    Ended,
}

/// The next event, skipping control frames.
pub async fn next_event(ws: &mut Ws) -> Event {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next()).await.expect("a frame within the wait");
        match msg {
            None | Some(Err(_)) => return Event::Ended,
            Some(Ok(Message::Text(t))) => {
                return Event::Frame(serde_json::from_str(t.as_str()).expect("server frames are JSON"));
            }
            Some(Ok(Message::Binary(b))) => return Event::Frame(json!({"binary": b.len()})),
            Some(Ok(Message::Close(c))) => return Event::Closed(c.map(|c| u16::from(c.code))),
            Some(Ok(_)) => continue,
        }
    }
}

/// The next JSON frame (panics on a close).
pub async fn recv(ws: &mut Ws) -> Value {
    match next_event(ws).await {
        Event::Frame(v) => v,
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// Reads frames until `pred` holds for one; returns every frame read.
pub async fn recv_until(ws: &mut Ws, mut pred: impl FnMut(&Value) -> bool) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let f = recv(ws).await;
        let done = pred(&f);
        frames.push(f);
        if done {
            return frames;
        }
    }
}

/// Authenticates; returns the session UUID.
pub async fn auth(ws: &mut Ws, key: &str, session: Option<&str>) -> String {
    let mut task = json!({"taskType":"authentication","apiKey":key});
    if let Some(s) = session {
        task["connectionSessionUUID"] = json!(s);
    }
    send(ws, json!([task])).await;
    let frames = recv_until(ws, |f| {
        f["data"].as_array().is_some_and(|d| d.iter().any(|i| i["taskType"] == "authentication"))
            || f.get("errors").is_some()
    })
    .await;
    let last = frames.last().cloned().unwrap_or_default();
    assert!(last.get("errors").is_none(), "auth failed: {last}");
    let item = last["data"].as_array().and_then(|d| d.iter().find(|i| i["taskType"] == "authentication")).cloned();
    item.and_then(|i| i["connectionSessionUUID"].as_str().map(str::to_string)).expect("a session UUID")
}

/// Connects and authenticates with `test-key`.
pub async fn client(emu: &EmulatorHandle) -> (Ws, String) {
    let mut ws = connect(emu).await;
    let session = auth(&mut ws, "test-key", None).await;
    (ws, session)
}

/// A valid Kontext task with `extra` fields merged in.
pub fn kontext(uuid: Uuid, extra: Value) -> Value {
    let mut t = json!({
        "taskType": "imageInference",
        "taskUUID": uuid,
        "model": "bfl:3@1",
        "positivePrompt": "Turn the sky into a violet dusk",
        "width": 1024,
        "height": 1024,
    });
    if let (Some(t), Value::Object(extra)) = (t.as_object_mut(), extra) {
        t.extend(extra);
    }
    t
}

/// Every `data` item of a frame.
pub fn items(frame: &Value) -> Vec<Value> {
    frame["data"].as_array().cloned().unwrap_or_default()
}

/// Every `errors` entry of a frame.
pub fn errors(frame: &Value) -> Vec<Value> {
    frame["errors"].as_array().cloned().unwrap_or_default()
}

/// Reads until `n` distinct images of `task` arrived; returns them (first copies).
pub async fn collect(ws: &mut Ws, task: Uuid, n: usize) -> Vec<Value> {
    let id = task.to_string();
    let mut seen: Vec<Value> = Vec::new();
    while seen.len() < n {
        let f = recv(ws).await;
        for e in errors(&f) {
            assert_ne!(e["taskUUID"], json!(id), "task failed: {e}");
        }
        for i in items(&f) {
            if i["taskUUID"] == json!(id)
                && i.get("imageUUID").is_some()
                && !seen.iter().any(|s| s["imageUUID"] == i["imageUUID"])
            {
                seen.push(i);
            }
        }
    }
    seen
}

/// The first error of the next frame that has one about `task`.
pub async fn error_for(ws: &mut Ws, task: &str) -> Value {
    loop {
        let f = recv(ws).await;
        if let Some(e) = errors(&f).into_iter().find(|e| e["taskUUID"] == json!(task)) {
            return e;
        }
    }
}

/// Polls `cond` until it holds (fails the test after the wait).
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Decodes image bytes; returns (format, width, height).
pub fn decode(bytes: &[u8]) -> (image::ImageFormat, u32, u32) {
    let format = image::guess_format(bytes).expect("a known image format");
    let img = image::load_from_memory(bytes).expect("decodable image");
    (format, img.width(), img.height())
}

/// GETs a URL's bytes.
pub async fn download(url: &str) -> (u16, Vec<u8>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::get(url).await.expect("GET");
    let status = resp.status().as_u16();
    (status, resp.bytes().await.expect("body").to_vec())
}

/// The bytes of a base64 or data-URI output.
pub fn output_bytes(item: &Value) -> Vec<u8> {
    use base64::Engine as _;
    let b64 = if let Some(s) = item["imageBase64Data"].as_str() {
        s.to_string()
    } else if let Some(s) = item["imageDataURI"].as_str() {
        s.split_once(',').map(|(_, d)| d.to_string()).expect("a data URI")
    } else {
        panic!("no inline output in {item}")
    };
    base64::engine::general_purpose::STANDARD.decode(b64).expect("base64")
}

/// A small PNG as a data URI.
pub fn png_data_uri(w: u32, h: u32) -> String {
    use base64::Engine as _;
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 120]));
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png).expect("png");
    format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(buf.into_inner()))
}
