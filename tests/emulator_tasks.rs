//! The emulator's tasks: images (count, size, format, determinism), URL serving,
//! conflicts, async delivery and getResponse, uploads, references, webhooks.

mod common;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use common::*;
use image::ImageFormat;
use runware_emulator::Latency;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

#[tokio::test]
async fn number_results_gives_distinct_images_of_the_right_size_and_format() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    for (format, want, w, h) in [
        ("JPG", ImageFormat::Jpeg, 1248, 832),
        ("PNG", ImageFormat::Png, 832, 1248),
        ("WEBP", ImageFormat::WebP, 1568, 672),
    ] {
        let id = Uuid::new_v4();
        send(
            &mut ws,
            json!([kontext(id, json!({"numberResults":3,"outputType":"base64Data","outputFormat":format,"width":w,"height":h,"seed":100,"includeCost":true}))]),
        )
        .await;
        let got = collect(&mut ws, id, 3).await;
        let uuids: HashSet<_> = got.iter().map(|i| i["imageUUID"].as_str().unwrap().to_string()).collect();
        assert_eq!(uuids.len(), 3);
        let mut seeds: Vec<_> = got.iter().map(|i| i["seed"].as_u64().unwrap()).collect();
        seeds.sort();
        assert_eq!(seeds, vec![100, 101, 102]);
        let mut bodies = HashSet::new();
        for item in &got {
            assert_eq!(item["taskType"], "imageInference");
            assert_eq!(item["NSFWContent"], false);
            assert_eq!(item["cost"], 0.04);
            let bytes = output_bytes(item);
            assert_eq!(decode(&bytes), (want, w, h), "{format}");
            bodies.insert(bytes);
        }
        assert_eq!(bodies.len(), 3, "distinct images");
    }
    let st = emu.stats();
    assert_eq!((st.executions_total, st.max_executions_per_task, st.results_delivered), (3, 1, 9));
    assert_eq!((st.outstanding, st.max_outstanding >= 1), (0, true));
}

#[tokio::test]
async fn random_seeds_without_cost_by_default() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    let id = Uuid::new_v4();
    send(&mut ws, json!([kontext(id, json!({"numberResults":2}))])).await;
    let got = collect(&mut ws, id, 2).await;
    let s0 = got[0]["seed"].as_u64().unwrap();
    assert!(s0 <= u64::from(u32::MAX) + 1);
    assert_ne!(got[0]["seed"], got[1]["seed"]);
    assert!(got[0].get("cost").is_none());
}

#[tokio::test]
async fn url_outputs_download_as_images_of_the_requested_size() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    let id = Uuid::new_v4();
    send(&mut ws, json!([kontext(id, json!({"numberResults":2,"outputFormat":"PNG","width":880,"height":1184}))]))
        .await;
    let got = collect(&mut ws, id, 2).await;
    for item in &got {
        let url = item["imageURL"].as_str().unwrap();
        assert!(url.starts_with(&format!("{}/images/", emu.http_url())), "{url}");
        assert!(url.ends_with(".png"));
        assert!(url.contains(item["imageUUID"].as_str().unwrap()));
        let (status, bytes) = download(url).await;
        assert_eq!(status, 200);
        assert_eq!(decode(&bytes), (ImageFormat::Png, 880, 1184));
        // A second fetch comes from the cache, identical.
        assert_eq!(download(url).await.1, bytes);
    }
    // The largest ttl is accepted and served (no overflow).
    let id = Uuid::new_v4();
    send(&mut ws, json!([kontext(id, json!({"ttl": 9223372036854775807u64, "outputFormat":"WEBP"}))])).await;
    let item = collect(&mut ws, id, 1).await.remove(0);
    let (status, bytes) = download(item["imageURL"].as_str().unwrap()).await;
    assert_eq!((status, decode(&bytes)), (200, (ImageFormat::WebP, 1024, 1024)));
}

#[tokio::test]
async fn data_uri_output_decodes() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    let id = Uuid::new_v4();
    send(&mut ws, json!([kontext(id, json!({"outputType":"dataURI","outputFormat":"WEBP","outputQuality":20}))])).await;
    let item = collect(&mut ws, id, 1).await.remove(0);
    assert!(item["imageDataURI"].as_str().unwrap().starts_with("data:image/webp;base64,"));
    assert_eq!(decode(&output_bytes(&item)), (ImageFormat::WebP, 1024, 1024));
}

#[tokio::test]
async fn same_request_and_seed_give_identical_bytes() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    let reference = png_data_uri(64, 48);
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let id = Uuid::new_v4();
        send(
            &mut ws,
            json!([kontext(id, json!({"seed":42,"outputType":"base64Data","inputs":{"referenceImages":[reference]}}))]),
        )
        .await;
        outputs.push(output_bytes(&collect(&mut ws, id, 1).await[0]));
    }
    assert_eq!(outputs[0], outputs[1]);
    // Another seed, or no reference: different pictures.
    let id = Uuid::new_v4();
    send(
        &mut ws,
        json!([kontext(id, json!({"seed":43,"outputType":"base64Data","inputs":{"referenceImages":[reference]}}))]),
    )
    .await;
    assert_ne!(output_bytes(&collect(&mut ws, id, 1).await[0]), outputs[0]);
    let id = Uuid::new_v4();
    send(&mut ws, json!([kontext(id, json!({"seed":42,"outputType":"base64Data"}))])).await;
    assert_ne!(output_bytes(&collect(&mut ws, id, 1).await[0]), outputs[0]);
    // URL output with the same seed serves the same bytes too.
    let id = Uuid::new_v4();
    send(&mut ws, json!([kontext(id, json!({"seed":42,"inputs":{"referenceImages":[reference]}}))])).await;
    let url = collect(&mut ws, id, 1).await[0]["imageURL"].as_str().unwrap().to_string();
    assert_eq!(download(&url).await.1, outputs[0]);
}

#[tokio::test]
async fn a_reused_task_uuid_is_a_conflict_and_never_runs_twice() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    let id = Uuid::new_v4();
    send(&mut ws, json!([kontext(id, json!({}))])).await;
    collect(&mut ws, id, 1).await;
    send(&mut ws, json!([kontext(id, json!({}))])).await;
    let e = error_for(&mut ws, &id.to_string()).await;
    assert_eq!((e["code"].clone(), e["taskType"].clone()), (json!("conflictTaskUUID"), json!("imageInference")));
    // Also from another connection of the same key.
    let (mut other, _) = client(&emu).await;
    send(&mut other, json!([kontext(id, json!({}))])).await;
    assert_eq!(error_for(&mut other, &id.to_string()).await["code"], "conflictTaskUUID");
    assert_eq!(emu.executions(id), 1);
    let st = emu.stats();
    assert_eq!((st.conflicts, st.executions_total, st.max_executions_per_task, st.double_executed), (2, 1, 1, 0));
    assert_eq!(emu.executions(Uuid::new_v4()), 0);
}

#[tokio::test]
async fn task_uuids_are_scoped_per_api_key() {
    let emu = builder().api_key("a").api_key("b").start().await.unwrap();
    let mut wa = connect(&emu).await;
    auth(&mut wa, "a", None).await;
    let mut wb = connect(&emu).await;
    auth(&mut wb, "b", None).await;
    let id = Uuid::new_v4();
    send(&mut wa, json!([kontext(id, json!({}))])).await;
    collect(&mut wa, id, 1).await;
    send(&mut wb, json!([kontext(id, json!({}))])).await;
    collect(&mut wb, id, 1).await;
    assert_eq!(emu.stats().conflicts, 0);
    // getResponse is per key as well: "b" sees its own.
    send(&mut wb, json!([{"taskType":"getResponse","taskUUID":id}])).await;
    assert_eq!(items(&recv(&mut wb).await).len(), 1);
}

#[tokio::test]
async fn async_delivery_acks_and_get_response_is_cumulative_with_status() {
    let emu = builder().latency(Latency::Fixed(Duration::from_millis(600))).start().await.unwrap();
    let (mut ws, _) = client(&emu).await;
    let id = Uuid::new_v4();
    send(&mut ws, json!([kontext(id, json!({"deliveryMethod":"async","numberResults":2}))])).await;
    assert_eq!(recv(&mut ws).await, json!({"data":[{"taskType":"imageInference","taskUUID":id}]}));
    // Right away: processing.
    send(&mut ws, json!([{"taskType":"getResponse","taskUUID":id}])).await;
    let f = recv(&mut ws).await;
    let first = items(&f);
    assert_eq!(first.len(), 1, "{f}");
    assert_eq!(first[0]["status"], "processing");
    assert_eq!(first[0]["taskUUID"], json!(id));
    assert!(first[0]["progress"].is_number());
    // Poll until done: item lists only grow, and end with two successes.
    let mut last = Vec::new();
    for _ in 0..400 {
        send(&mut ws, json!([{"taskType":"getResponse","taskUUID":id}])).await;
        let got = items(&recv(&mut ws).await);
        let successes: Vec<_> = got.iter().filter(|i| i["status"] == "success").cloned().collect();
        assert!(successes.len() >= last.iter().filter(|i: &&Value| i["status"] == "success").count());
        last = got;
        if successes.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done: Vec<_> = last.iter().filter(|i| i["status"] == "success").collect();
    assert_eq!(done.len(), 2, "{last:?}");
    assert!(last.iter().all(|i| i["status"] == "success"));
    for i in &done {
        assert!(i["imageURL"].is_string() && i["imageUUID"].is_string());
        assert_eq!(i["taskType"], "imageInference");
    }
    assert_ne!(done[0]["imageUUID"], done[1]["imageUUID"]);
    // Results were not pushed.
    assert_eq!(emu.stats().results_delivered, 0);
    // Unknown task: empty data.
    send(&mut ws, json!([{"taskType":"getResponse","taskUUID":Uuid::new_v4()}])).await;
    assert_eq!(recv(&mut ws).await, json!({"data":[]}));
    assert!(emu.stats().get_responses >= 3);
}

#[tokio::test]
async fn get_response_answers_for_finished_sync_tasks_and_reports_errors() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    let id = Uuid::new_v4();
    send(&mut ws, json!([kontext(id, json!({"numberResults":2}))])).await;
    let got = collect(&mut ws, id, 2).await;
    let (mut other, _) = client(&emu).await;
    send(&mut other, json!([{"taskType":"getResponse","taskUUID":id}])).await;
    let answer = items(&recv(&mut other).await);
    assert_eq!(answer.len(), 2);
    for a in &answer {
        assert_eq!(a["status"], "success");
        assert!(got.iter().any(|g| g["imageUUID"] == a["imageUUID"] && g["imageURL"] == a["imageURL"]));
    }
    // A task that fails while running (undecodable reference): error item.
    let bad = Uuid::new_v4();
    let not_an_image = "data:image/png;base64,aGVsbG8gd29ybGQgaGVsbG8gd29ybGQ=";
    send(&mut ws, json!([kontext(bad, json!({"inputs":{"referenceImages":[not_an_image]}}))])).await;
    let e = error_for(&mut ws, &bad.to_string()).await;
    assert_eq!(
        (e["code"].clone(), e["parameter"].clone()),
        (json!("invalidReferenceImage"), json!("inputs.referenceImages"))
    );
    send(&mut ws, json!([{"taskType":"getResponse","taskUUID":bad}])).await;
    let answer = items(&recv(&mut ws).await);
    assert_eq!(answer[0]["status"], "error");
    assert_eq!(answer[0]["error"]["code"], "invalidReferenceImage");
}

#[tokio::test]
async fn get_response_retention_is_bounded_in_time_and_count() {
    let emu = builder().result_retention(Duration::from_millis(200)).max_retained_tasks(2).start().await.unwrap();
    let (mut ws, _) = client(&emu).await;
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        send(&mut ws, json!([kontext(*id, json!({}))])).await;
        collect(&mut ws, *id, 1).await;
    }
    // The oldest was evicted by count.
    send(&mut ws, json!([{"taskType":"getResponse","taskUUID":ids[0]}])).await;
    assert_eq!(recv(&mut ws).await, json!({"data":[]}));
    send(&mut ws, json!([{"taskType":"getResponse","taskUUID":ids[2]}])).await;
    assert_eq!(items(&recv(&mut ws).await).len(), 1);
    // And the rest by time.
    let mut forgotten = false;
    for _ in 0..100 {
        send(&mut ws, json!([{"taskType":"getResponse","taskUUID":ids[2]}])).await;
        if recv(&mut ws).await == json!({"data":[]}) {
            forgotten = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(forgotten);
}

#[tokio::test]
async fn image_upload_then_reference_by_uuid_and_by_url() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    let up = Uuid::new_v4();
    send(&mut ws, json!([{"taskType":"imageUpload","taskUUID":up,"image":png_data_uri(30, 20)}])).await;
    let f = recv(&mut ws).await;
    let item = items(&f).remove(0);
    assert_eq!(item["taskType"], "imageUpload");
    assert_eq!(item["taskUUID"], json!(up));
    let image_uuid = item["imageUUID"].as_str().unwrap().to_string();
    let (status, bytes) = download(item["imageURL"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(decode(&bytes), (ImageFormat::Png, 30, 20));
    // By UUID.
    let id = Uuid::new_v4();
    send(&mut ws, json!([kontext(id, json!({"inputs":{"referenceImages":[image_uuid]}}))])).await;
    let out = collect(&mut ws, id, 1).await.remove(0);
    // By URL: the emulator's own image URL (fetched over HTTP), and bare base64.
    let id2 = Uuid::new_v4();
    let url = out["imageURL"].as_str().unwrap();
    use base64::Engine as _;
    let bare = base64::engine::general_purpose::STANDARD.encode(&bytes);
    send(&mut ws, json!([kontext(id2, json!({"inputs":{"referenceImages":[url, bare]},"outputType":"base64Data"}))]))
        .await;
    let out2 = collect(&mut ws, id2, 1).await.remove(0);
    assert_eq!(decode(&output_bytes(&out2)).1, 1024);
    // An unknown UUID or an unreachable URL fails the task with invalidReferenceImage.
    let id3 = Uuid::new_v4();
    send(&mut ws, json!([kontext(id3, json!({"inputs":{"referenceImages":[Uuid::new_v4()]}}))])).await;
    assert_eq!(error_for(&mut ws, &id3.to_string()).await["code"], "invalidReferenceImage");
    let id4 = Uuid::new_v4();
    let missing = format!("{}/images/{}.png", emu.http_url(), Uuid::new_v4());
    send(&mut ws, json!([kontext(id4, json!({"inputs":{"referenceImages":[missing]}}))])).await;
    assert_eq!(error_for(&mut ws, &id4.to_string()).await["code"], "invalidReferenceImage");
    // Not an image: refused.
    let bad = Uuid::new_v4();
    send(&mut ws, json!([{"taskType":"imageUpload","taskUUID":bad,"image":"aGVsbG8gd29ybGQ="}])).await;
    assert_eq!(error_for(&mut ws, &bad.to_string()).await["code"], "invalidImage");
}

#[tokio::test]
async fn media_storage_upload_and_delete() {
    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    let up = Uuid::new_v4();
    send(&mut ws, json!([{"taskType":"mediaStorage","taskUUID":up,"operation":"upload","media":png_data_uri(8, 8)}]))
        .await;
    let item = items(&recv(&mut ws).await).remove(0);
    assert_eq!(item["operation"], "upload");
    let media = item["mediaUUID"].as_str().unwrap().to_string();
    let url = item["mediaURL"].as_str().unwrap().to_string();
    assert_eq!(download(&url).await.0, 200);
    let id = Uuid::new_v4();
    send(&mut ws, json!([kontext(id, json!({"inputs":{"referenceImages":[media]}}))])).await;
    collect(&mut ws, id, 1).await;
    let del = Uuid::new_v4();
    send(&mut ws, json!([{"taskType":"mediaStorage","taskUUID":del,"operation":"delete","mediaUUID":media}])).await;
    let item = items(&recv(&mut ws).await).remove(0);
    assert_eq!((item["operation"].clone(), item["mediaUUID"].clone()), (json!("delete"), json!(media)));
    assert_eq!(download(&url).await.0, 404);
    // Conflicts apply to uploads too.
    send(&mut ws, json!([{"taskType":"mediaStorage","taskUUID":up,"operation":"upload","media":png_data_uri(8, 8)}]))
        .await;
    assert_eq!(error_for(&mut ws, &up.to_string()).await["code"], "conflictTaskUUID");
}

/// One request: method, path, content type, body.
type Request = (Method, String, Option<String>, Vec<u8>);

/// What the test HTTP server saw.
#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<Request>>,
}

async fn record(
    State(seen): State<Arc<Seen>>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut r = seen.requests.lock().unwrap();
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    let path = uri.path().to_string();
    let attempt = r.iter().filter(|(m, p, _, b)| *m == method && *p == path && b[..] == body[..]).count();
    r.push((method, path, ct, body.to_vec()));
    // The first attempt of each request fails, to exercise the retry.
    if attempt == 0 { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
}

#[tokio::test]
async fn webhook_posts_each_result_and_upload_endpoint_gets_the_bytes_with_retries() {
    let seen = Arc::new(Seen::default());
    let app = Router::new().fallback(record).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let emu = start().await;
    let (mut ws, _) = client(&emu).await;
    let id = Uuid::new_v4();
    send(
        &mut ws,
        json!([kontext(
            id,
            json!({
                "numberResults": 2,
                "outputFormat": "PNG",
                "webhookURL": format!("http://{addr}/hook"),
                "uploadEndpoint": format!("http://{addr}/put"),
            })
        )]),
    )
    .await;
    let got = collect(&mut ws, id, 2).await;
    eventually("2 webhook POSTs and 2 PUTs, each retried once", || seen.requests.lock().unwrap().len() >= 8).await;
    let reqs = seen.requests.lock().unwrap();
    let posts: Vec<_> = reqs.iter().filter(|r| r.0 == Method::POST && r.1 == "/hook").collect();
    let puts: Vec<_> = reqs.iter().filter(|r| r.0 == Method::PUT && r.1 == "/put").collect();
    assert_eq!((posts.len(), puts.len()), (4, 4));
    let mut posted: Vec<Value> = posts.iter().map(|r| serde_json::from_slice(&r.3).unwrap()).collect();
    posted.dedup();
    for item in &got {
        assert!(posted.contains(item), "webhook got the flat item {item}");
    }
    for p in puts {
        assert_eq!(p.2.as_deref(), Some("image/png"));
        assert_eq!(decode(&p.3), (ImageFormat::Png, 1024, 1024));
    }
    assert_eq!(posts[0].2.as_deref(), Some("application/json"));
}

#[tokio::test]
async fn latency_spaces_multiple_results() {
    let emu = builder().latency(Latency::Fixed(Duration::from_millis(400))).start().await.unwrap();
    let (mut ws, _) = client(&emu).await;
    let id = Uuid::new_v4();
    let t0 = std::time::Instant::now();
    send(&mut ws, json!([kontext(id, json!({"numberResults":2}))])).await;
    collect(&mut ws, id, 1).await;
    let first = t0.elapsed();
    collect(&mut ws, id, 1).await;
    let second = t0.elapsed();
    assert!(first >= Duration::from_millis(150), "{first:?}");
    assert!(second >= Duration::from_millis(350), "{second:?}");
    assert!(second > first);
}

#[tokio::test]
async fn outstanding_tracks_tasks_in_flight() {
    let emu = builder().latency(Latency::Fixed(Duration::from_millis(300))).start().await.unwrap();
    let (mut ws, _) = client(&emu).await;
    let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    send(&mut ws, Value::Array(ids.iter().map(|id| kontext(*id, json!({}))).collect())).await;
    eventually("5 outstanding", || emu.stats().outstanding == 5).await;
    let mut done = HashSet::new();
    while done.len() < ids.len() {
        for i in items(&recv(&mut ws).await) {
            done.insert(i["taskUUID"].as_str().unwrap().to_string());
        }
    }
    eventually("none outstanding", || emu.stats().outstanding == 0).await;
    assert_eq!(emu.stats().max_outstanding, 5);
}
