//! The API key appears nowhere in the CLI's output or files, with every log
//! filter at `trace` (dependencies' traces included), through dropped
//! connections, an authentication failure and the emulator's own logs.

mod cli_support;

use cli_support::*;
use runware_emulator::Fault;
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

/// Every form of the key a log line could carry it in.
fn forms() -> Vec<String> {
    let hex: String = KEY.bytes().map(|b| format!("{b:02x}")).collect();
    vec![KEY.to_string(), hex.clone(), hex.to_uppercase()]
}

fn assert_clean(what: &str, text: &str) {
    for form in forms() {
        assert!(!text.contains(&form), "the API key leaked into {what}:\n{text}");
    }
}

fn assert_files_clean(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("the scratch dir is readable") {
        let path = entry.expect("a dir entry").path();
        if path.is_dir() {
            assert_files_clean(&path);
        } else {
            let bytes = std::fs::read(&path).expect("a written file is readable");
            assert_clean(&path.display().to_string(), &String::from_utf8_lossy(&bytes));
        }
    }
}

/// The binary with every target at trace.
fn traced() -> tokio::process::Command {
    let mut cmd = runware();
    cmd.env("RUNWARE_LOG", "trace").env("RUST_LOG", "trace").arg("-vvv");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_never_appears_with_every_log_at_trace() {
    let emu = emulator(fast()).await;
    let dir = scratch("secrets");
    let input = dir.join("tasks.jsonl");
    let lines: Vec<_> = (0..40).map(|i| json!({"positivePrompt": format!("secret edit {i}"), "size": "1:1"})).collect();
    write_jsonl(&input, &lines);

    // An authentication failure: the run stops with exit 3 and says why.
    emu.inject(Fault::RefuseAuth(1));
    let mut cmd = traced();
    cmd.args(api(&emu)).args(["ping"]);
    let refused = exec(cmd).await;
    assert_eq!(refused.code, 3, "a refused key is an authentication failure: {refused:?}");
    assert!(refused.stderr.contains("TRACE"), "trace logs were written: {}", refused.stderr);
    assert_clean("the refused run's output", &format!("{}{}", refused.stdout, refused.stderr));

    // A batch through dropped connections: every resend re-authenticates.
    let mut cmd = traced();
    cmd.args(api(&emu)).arg("batch").arg(&input).arg("--out").arg(dir.join("out"));
    cmd.args(["--concurrency", "4"]);
    let child = cmd.spawn().expect("the binary starts");
    let drops = async {
        loop {
            tokio::time::sleep(Duration::from_millis(150)).await;
            emu.inject(Fault::Drop);
        }
    };
    let out = tokio::select! {
        out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output()) => {
            out.expect("the batch finishes within 120 s").expect("its output is readable")
        }
        _ = drops => unreachable!("the drop loop never ends"),
    };
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "the batch finishes: {stderr}");
    assert!(emu.stats().connections >= 2, "the batch met dropped connections");
    assert!(stderr.contains("Sending frame"), "tungstenite's frame traces were captured");
    assert!(stderr.contains("\"taskType\":\"authentication\""), "the authentication frame was traced (masked)");
    assert_clean("the batch's output", &format!("{stdout}{stderr}"));
    assert_files_clean(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_at_trace_never_logs_the_keys_it_accepts() {
    let mut serve = traced();
    serve.args(["--json", "serve", "--api-key", KEY, "--latency", "0", "--port", "0"]);
    let mut child = serve.spawn().expect("the binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut first = String::new();
    tokio::io::BufReader::new(stdout).read_line(&mut first).await.expect("serve prints its address");
    let info: serde_json::Value = serde_json::from_str(&first).expect("serve prints JSON");
    let url = info["wsUrl"].as_str().expect("wsUrl").to_string();

    let dir = scratch("secrets-serve");
    let mut edit = traced();
    edit.args(["--url", &url, "--api-key", KEY, "edit", "--prompt", "a secret edit", "--aspect", "1:1", "--out"]);
    edit.arg(&dir);
    let run = exec(edit).await;
    assert_eq!(run.code, 0, "the edit succeeds: {run:?}");
    assert_clean("the edit's output", &format!("{}{}", run.stdout, run.stderr));
    assert_files_clean(&dir);

    child.start_kill().expect("serve can be stopped");
    let mut stderr = String::new();
    child.stderr.take().expect("stderr is piped").read_to_string(&mut stderr).await.expect("serve's logs");
    assert!(stderr.contains("TRACE"), "serve wrote trace logs: {stderr}");
    assert_clean("serve's logs", &format!("{first}{stderr}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_character_key_masks_only_itself() {
    // A key too short to be a real one is masked only where it stands as a whole
    // token: the frame printed is the frame that would be sent.
    let mut cmd = runware();
    cmd.args(["--api-key", "k", "edit", "--dry-run", "--prompt", "Make the sky pink at dusk", "--size", "1:1"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    let frame: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("the frame is JSON");
    assert_eq!(frame[0]["taskType"], "imageInference", "{}", run.stdout);
    assert_eq!(frame[0]["positivePrompt"], "Make the sky pink at dusk");
    assert!(!run.stdout.contains("***"), "nothing but the key is masked: {}", run.stdout);
}
