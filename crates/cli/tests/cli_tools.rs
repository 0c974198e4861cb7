//! `runware ping`, `upload`, `result` and `serve`, and the embedded emulator.

mod cli_support;

use cli_support::*;
use runware_ws::{Client, Kontext, KontextSize};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_reports_round_trips() {
    let emu = emulator(fast()).await;
    let mut cmd = runware();
    cmd.args(api(&emu)).args(["ping", "--count", "4", "--json"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    let report: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(report["pingMs"].as_array().unwrap().len(), 4);
    for key in ["connectMs", "authMs", "minMs", "avgMs", "maxMs"] {
        assert!(report[key].as_f64().is_some_and(|v| v >= 0.0), "{key}: {report}");
    }
    assert!(emu.stats().pings >= 4);

    // Even at the most verbose level the key is never printed (exec checks every run).
    let mut cmd = runware();
    cmd.args(api(&emu)).args(["-vvv", "ping"]);
    let text = exec(cmd).await;
    assert_eq!(text.code, 0, "{text:?}");
    assert!(text.stdout.contains("authenticated in") && text.stdout.contains("round trip"), "{}", text.stdout);

    let mut cmd = runware();
    cmd.args(["--url", &emu.ws_url(), "--api-key", "not-the-key", "ping"]);
    let refused = exec(cmd).await;
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(!refused.stderr.contains("not-the-key"), "{}", refused.stderr);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_servers_exit_3() {
    // A port nobody listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cmd = runware();
    cmd.args(["--url", &format!("ws://127.0.0.1:{port}/v1"), "--api-key", KEY, "--connect-timeout", "1s"]);
    cmd.args(["edit", "--prompt", "Make it snow"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("cannot connect"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_prints_the_image_uuid_and_url() {
    let emu = emulator(fast()).await;
    let mut cmd = runware();
    cmd.args(api(&emu)).args(["upload", example_image("studio-portrait.png").to_str().unwrap(), "--json"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    let reply: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let uuid = reply["imageUUID"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{reply}");
    assert!(reply["imageURL"].as_str().unwrap().starts_with("http://"), "{reply}");

    // The uploaded image can be an edit's reference, by UUID.
    let mut cmd = runware();
    cmd.args(api(&emu)).args(["edit", "--prompt", "Make the jacket red", "--image", uuid, "--no-download"]);
    let edit = exec(cmd).await;
    assert_eq!(edit.code, 0, "{edit:?}");
    assert!(edit.stdout.contains("imageUUID"), "{}", edit.stdout);

    let mut cmd = runware();
    cmd.args(api(&emu)).args(["upload", "/no/such/file.png"]);
    let missing = exec(cmd).await;
    assert_eq!(missing.code, 2, "{missing:?}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_fetches_a_finished_task_by_uuid() {
    let emu = emulator(fast()).await;
    let client = Client::builder().url(emu.ws_url()).api_key(KEY).connect().await.unwrap();
    let task = Kontext::builder().prompt("Add a rainbow").size(KontextSize::R4x3).number_results(2).build().unwrap();
    let task_uuid = task.task_uuid;
    let images = client.kontext(task).await.unwrap();
    client.close(Duration::from_secs(1)).await;

    let dir = scratch("result");
    let mut cmd = runware();
    cmd.args(api(&emu)).args(["result", &task_uuid.to_string(), "-n", "2", "--json", "--out"]).arg(&dir);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    let report: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let got: Vec<&str> =
        report["images"].as_array().unwrap().iter().map(|i| i["imageUUID"].as_str().unwrap()).collect();
    for img in &images {
        assert!(got.contains(&img.image_uuid.as_str()), "{got:?}");
    }
    for img in report["images"].as_array().unwrap() {
        assert!(Path::new(img["path"].as_str().unwrap()).exists());
    }
    // Without --count: every result the server has.
    let mut cmd = runware();
    cmd.args(api(&emu)).args(["result", &task_uuid.to_string(), "--json", "--no-download", "--out"]).arg(&dir);
    let all = exec(cmd).await;
    assert_eq!(all.code, 0, "{all:?}");
    let report: Value = serde_json::from_str(all.stdout.trim()).unwrap();
    assert_eq!(report["images"].as_array().unwrap().len(), 2, "{report}");
    // Fetching results never runs the task again.
    assert_eq!(emu.executions(task_uuid), 1);

    let mut cmd = runware();
    cmd.args(api(&emu)).args(["result", &uuid::Uuid::new_v4().to_string(), "--timeout", "500ms"]);
    let unknown = exec(cmd).await;
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(unknown.stderr.contains("knows no task"), "{}", unknown.stderr);
    emu.shutdown().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_prints_a_url_a_client_can_use() {
    let mut cmd = runware();
    cmd.args(["serve", "--port", "0", "--latency", "0", "--api-key", "serve-key", "--json"]);
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
    let info: Value = serde_json::from_str(&first).unwrap();
    let url = info["wsUrl"].as_str().unwrap().to_string();
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");

    let client = Client::builder().url(&url).api_key("serve-key").connect().await.unwrap();
    let task = Kontext::builder().prompt("Paint it blue").size(KontextSize::R1x1).build().unwrap();
    let images = client.kontext(task).await.unwrap();
    assert_eq!(images.len(), 1);
    client.close(Duration::from_secs(1)).await;

    // The CLI itself can use it too.
    let mut cmd = runware();
    cmd.args(["--url", &url, "--api-key", "serve-key", "ping", "-n", "1"]);
    assert_eq!(exec(cmd).await.code, 0);

    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let stats = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["stats"]["executions_total"], 1, "{stats}");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_the_embedded_emulator_is_used_and_said_once() {
    let mut cmd = runware();
    cmd.args(["ping", "-n", "1"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    let notices: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(notices.len(), 1, "{}", run.stderr);
    assert!(notices[0].starts_with("No RUNWARE_API_KEY set: using the embedded Runware emulator at ws://127.0.0.1:"));
    assert!(notices[0].contains("synthetic"), "{}", notices[0]);

    // Quick tasks against it too (latency shortened for the test).
    let dir = scratch("embedded");
    let mut cmd = runware();
    cmd.env("RUNWARE_EMULATOR_LATENCY", "5ms");
    cmd.args(["edit", "--prompt", "Make it snow", "--output", "base64", "--out"]).arg(&dir);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_upload_then_delete_and_the_delete_names_the_media_as_the_sdks_do() {
    let emu = emulator(fast()).await;
    let mut cmd = runware();
    cmd.args(api(&emu)).args(["media", "upload", example_image("studio-portrait.png").to_str().unwrap(), "--json"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    let reply: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let media_uuid = reply["mediaUUID"].as_str().expect("a mediaUUID").to_string();
    let url = reply["mediaURL"].as_str().expect("a mediaURL").to_string();
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);

    let mut cmd = runware();
    cmd.args(api(&emu)).args(["media", "delete", &media_uuid]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.trim(), format!("deleted {media_uuid}"));
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 404, "the media is gone");

    // Deleting it again is the server's error; a malformed UUID is refused before connecting.
    let mut cmd = runware();
    cmd.args(api(&emu)).args(["media", "delete", &media_uuid]);
    let again = exec(cmd).await;
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stderr.contains("mediaNotFound"), "{}", again.stderr);
    let mut cmd = runware();
    cmd.args(api(&emu)).args(["media", "delete", "not-a-uuid"]);
    let bad = exec(cmd).await;
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("MEDIA_UUID must be a UUID"), "{}", bad.stderr);
    emu.shutdown().await;

    // The frame on the wire, seen by a server that records it: `media`, not `mediaUUID`.
    let (url, frames, agents) = recording_server().await;
    let target = uuid::Uuid::new_v4().to_string();
    let mut cmd = runware();
    cmd.args(["--url", &url, "--api-key", KEY, "media", "delete", &target]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    let frames = frames.lock().unwrap().clone();
    let delete = frames
        .iter()
        .flat_map(|f| f.as_array().cloned().unwrap_or_default())
        .find(|t| t["taskType"] == "mediaStorage")
        .expect("a mediaStorage task was sent");
    let obj = delete.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["media", "operation", "taskType", "taskUUID"], "{delete}");
    assert_eq!((obj["operation"].as_str(), obj["media"].as_str()), (Some("delete"), Some(target.as_str())));
    // The handshake names the CLI and the crate, with their versions.
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(agents.lock().unwrap().clone(), [format!("runware-cli/{version} runware-ws/{version}")]);
}

#[test]
fn completions_are_generated_for_every_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef runware"),
        ("fish", "complete -c runware"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out =
            std::process::Command::new(env!("CARGO_BIN_EXE_runware")).args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: no {marker:?} in the script");
        for sub in ["batch", "media", "completions"] {
            assert!(script.contains(sub), "{shell}: the script does not know `{sub}`");
        }
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runware")).args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "an unknown shell is a usage error");
}

/// A WebSocket server that records every frame it receives and answers authentication,
/// pings and mediaStorage deletes: enough for one CLI command. Also keeps each
/// handshake's User-Agent.
type Seen<T> = std::sync::Arc<std::sync::Mutex<Vec<T>>>;
async fn recording_server() -> (String, Seen<Value>, Seen<String>) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/v1", listener.local_addr().unwrap());
    let frames = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let agents = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (seen, agents_seen) = (frames.clone(), agents.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (seen, agents_seen) = (seen.clone(), agents_seen.clone());
            tokio::spawn(async move {
                #[allow(clippy::result_large_err)] // tungstenite's callback type
                let record = |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                    let agent = req.headers().get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or("");
                    agents_seen.lock().unwrap().push(agent.to_string());
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, record).await else { return };
                while let Some(Ok(msg)) = ws.next().await {
                    let Message::Text(text) = msg else { continue };
                    let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
                    seen.lock().unwrap().push(frame.clone());
                    let mut data = Vec::new();
                    for task in frame.as_array().cloned().unwrap_or_default() {
                        match task["taskType"].as_str() {
                            Some("authentication") => data.push(serde_json::json!({"taskType": "authentication",
                                "connectionSessionUUID": uuid::Uuid::new_v4()})),
                            Some("ping") => data.push(serde_json::json!({"taskType": "ping", "pong": true})),
                            Some("mediaStorage") => data.push(serde_json::json!({"taskType": "mediaStorage",
                                "taskUUID": task["taskUUID"], "operation": "delete", "mediaUUID": task["media"]})),
                            _ => {}
                        }
                    }
                    let reply = serde_json::json!({ "data": data }).to_string();
                    if ws.send(Message::text(reply)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, frames, agents)
}
