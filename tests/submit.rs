//! One way to submit: `Client::submit` takes every kind of task, returns an owned
//! handle (a stream, or awaited for all results), and applies a per-call timeout
//! and `no_wait` to every kind.

use futures::StreamExt;
use runware_emulator::{Emulator, EmulatorHandle, Latency};
use runware_ws::protocol::{ImageUpload, MediaStorage, RawTask};
use runware_ws::{Client, ClientError, ImageInference, Kontext, KontextSize, KontextTask, Task};
use serde_json::json;
use std::time::Duration;

const KEY: &str = "submit-key";
const PIXEL: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

async fn emulator(latency: Duration) -> EmulatorHandle {
    Emulator::builder().api_key(KEY).latency(Latency::Fixed(latency)).render_divisor(16).start().await.expect("starts")
}

async fn client(emu: &EmulatorHandle, in_flight: usize) -> Client {
    Client::builder().url(emu.ws_url()).api_key(KEY).max_in_flight(in_flight).connect().await.expect("connects")
}

fn edit(n: u32) -> KontextTask {
    Kontext::builder().prompt("Make it snow").size(KontextSize::R1x1).number_results(n).build().expect("valid")
}

#[tokio::test]
async fn every_kind_of_task_goes_through_submit_and_the_handle_is_owned() {
    let emu = emulator(Duration::from_millis(5)).await;
    let c = client(&emu, 8).await;

    // Typed Kontext: awaited for all results, from a spawned task that owns nothing
    // of the caller's (the futures are 'static).
    let submit = c.submit(edit(2));
    let uuid = submit.task_uuid().expect("a valid task has its UUID");
    let all = tokio::spawn(async move { submit.await?.await.map_err(ClientError::from) });
    let items = all.await.expect("the spawned task ran").expect("two results");
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| i.task_uuid == Some(uuid)));

    // As a stream of typed images.
    let mut images = c.submit(edit(3)).await.expect("submitted").images();
    let mut seen = 0;
    while let Some(image) = images.next().await {
        image.expect("an image");
        seen += 1;
    }
    assert_eq!(seen, 3);

    // Raw JSON, an upload and a media operation.
    let raw = Task::try_from(json!({"taskType": "promptEnhance", "prompt": "a quiet harbour at dawn",
        "promptMaxLength": 64, "promptVersions": 2}))
    .expect("a raw task");
    assert_eq!(c.submit(raw).await.expect("submitted").await.expect("enhanced").len(), 2);
    let uploaded = c.submit(ImageUpload::new(PIXEL)).await.expect("submitted").await.expect("uploaded");
    assert!(uploaded[0].image_uuid.is_some(), "{uploaded:?}");
    let stored = c.submit(MediaStorage::upload(PIXEL)).await.expect("submitted").await.expect("stored");
    assert_eq!(stored.len(), 1);
    // Delete sends the SDKs' shape, the mediaUUID as `media`, and the server takes it.
    let media_uuid = stored[0].get("mediaUUID").and_then(|v| v.as_str().map(str::to_string)).expect("a mediaUUID");
    let delete = MediaStorage::delete(media_uuid.clone());
    assert_eq!(
        serde_json::to_value(&delete).expect("serializes"),
        json!({"taskType": "mediaStorage", "taskUUID": delete.task_uuid, "operation": "delete", "media": media_uuid})
    );
    let deleted = c.delete_media(media_uuid.clone()).await.expect("deleted");
    assert_eq!(deleted.get("operation"), Some(json!("delete")), "{deleted:?}");
    let again = c.delete_media(media_uuid).await.expect_err("already gone");
    assert!(again.to_string().contains("mediaNotFound"), "{again}");
    assert_eq!(emu.stats().double_executed, 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn a_bfl_inference_not_from_the_builder_is_checked_against_the_kontext_rules() {
    let emu = emulator(Duration::from_millis(5)).await;
    let c = client(&emu, 8).await;
    let mut wire: ImageInference = edit(1).into_inner();
    wire.output_quality = Some(5); // Kontext [pro] allows 20 to 99
    let refused = c.submit(wire.clone()).await.expect_err("refused before sending");
    assert!(matches!(&refused, ClientError::Validation(v) if v.to_string().contains("outputQuality")), "{refused}");
    assert!(KontextTask::try_from(wire).is_err(), "the same rules make a KontextTask");
    assert_eq!(emu.stats().tasks_received, 0, "nothing was sent");
    emu.shutdown().await;
}

#[tokio::test]
async fn the_per_call_timeout_and_no_wait_apply_to_every_kind() {
    let emu = emulator(Duration::from_secs(30)).await;
    let c = client(&emu, 1).await;
    // A raw task with its own short deadline fails on time.
    let raw = RawTask::with_generated_uuid(json!({"taskType": "imageInference", "model": "bfl:3@1",
        "positivePrompt": "a slow picture", "width": 1024, "height": 1024}))
    .expect("a raw task");
    let slow = c.submit(raw).timeout(Duration::from_millis(200)).await.expect("submitted");
    let failed = slow.await.expect_err("the deadline passes first");
    assert!(matches!(failed.error, ClientError::Timeout { .. }), "{}", failed.error);

    // With the only slot taken, an upload that must not wait is refused at once,
    // and one that may wait times out waiting for the slot.
    let _held = c.submit(edit(1)).await.expect("takes the only slot");
    let busy = c.submit(ImageUpload::new(PIXEL)).no_wait().await.expect_err("no free slot");
    assert!(matches!(busy, ClientError::Busy { limit: 1 }), "{busy}");
    let waited = c.submit(ImageUpload::new(PIXEL)).timeout(Duration::from_millis(100)).await;
    assert!(matches!(waited, Err(ClientError::Timeout { .. })), "{waited:?}");
    emu.shutdown().await;
}

#[tokio::test]
async fn a_reference_cache_uploads_each_inline_reference_once() {
    let emu = emulator(Duration::from_millis(5)).await;
    let c = client(&emu, 8).await;
    let refs = runware_ws::ReferenceCache::new(c.clone());
    let with_ref = || {
        Kontext::builder().prompt("Make it snow").size(KontextSize::R1x1).reference_image(PIXEL).build().expect("valid")
    };
    let (a, first) = refs.kontext(with_ref()).await.expect("uploaded");
    let (b, second) = refs.kontext(with_ref()).await.expect("reused");
    assert_eq!(first.len(), 1, "the first use uploads");
    assert!(second.is_empty(), "the second does not");
    assert_eq!(a.reference_images(), b.reference_images(), "both reference the same imageUUID");
    assert!(matches!(a.reference_images()[0], runware_ws::ReferenceImage::Uuid(u) if u == first[0].image_uuid));
    assert_eq!(emu.stats().uploads, 1);
    assert_eq!(c.kontext(a).await.expect("the edit runs on the uploaded reference").len(), 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn the_handshake_names_the_crate_or_the_user_agent_given() {
    async fn agent_seen(builder: runware_ws::ClientBuilder) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let url = format!("ws://{}/v1", listener.local_addr().expect("addr"));
        let client = builder.url(url).api_key(KEY).build().expect("builds");
        let (tcp, _) = listener.accept().await.expect("the client connects");
        let (tx, rx) = std::sync::mpsc::channel();
        #[allow(clippy::result_large_err)] // tungstenite's callback type
        let record = move |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
            let agent = req.headers().get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or("none");
            let _ = tx.send(agent.to_string());
            Ok(resp)
        };
        let ws = tokio_tungstenite::accept_hdr_async(tcp, record).await.expect("handshake");
        drop(ws);
        client.close(Duration::ZERO).await;
        rx.recv().expect("a handshake was seen")
    }
    let default = agent_seen(Client::builder()).await;
    assert_eq!(default, format!("runware-ws/{}", env!("CARGO_PKG_VERSION")));
    assert_eq!(default, runware_ws::client::DEFAULT_USER_AGENT);
    assert_eq!(agent_seen(Client::builder().user_agent("my-service/2.1")).await, "my-service/2.1");

    // A value no HTTP header can carry is a configuration error naming the field, not a retry loop.
    let c = Client::builder().url("ws://127.0.0.1:9/v1").api_key(KEY).user_agent("bad\nagent").build().expect("builds");
    let err = c.wait_connected().await.expect_err("refused");
    assert!(err.to_string().contains("user_agent"), "{err}");
}
