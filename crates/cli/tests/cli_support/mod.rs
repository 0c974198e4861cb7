//! Helpers for the `runware` binary's tests: an in-process emulator, the binary
//! with a clean environment, scratch directories, results journals.
#![allow(dead_code)]

use runware_emulator::{Emulator, EmulatorHandle, Latency};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

pub const KEY: &str = "cli-test-key-7c1d";

/// An emulator on 127.0.0.1:0 accepting [`KEY`].
pub async fn emulator(latency: Latency) -> EmulatorHandle {
    Emulator::builder().api_key(KEY).latency(latency).seed(11).start().await.expect("the emulator starts")
}

/// A few milliseconds per task.
pub fn fast() -> Latency {
    Latency::Range(Duration::from_millis(1), Duration::from_millis(5))
}

/// The binary, with no RUNWARE_* variables inherited and a config directory that does
/// not exist (a key stored on the developer's machine must not reach the tests).
pub fn runware() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_runware"));
    for var in ["RUNWARE_API_KEY", "RUNWARE_URL", "RUNWARE_EMULATOR_LATENCY", "RUNWARE_LOG"] {
        cmd.env_remove(var);
    }
    cmd.env("RUNWARE_CONFIG_DIR", std::env::temp_dir().join("runware-tests-no-config-dir"));
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    cmd
}

/// `--url WS --api-key KEY`
pub fn api(emu: &EmulatorHandle) -> Vec<String> {
    vec!["--url".into(), emu.ws_url(), "--api-key".into(), KEY.into()]
}

/// What a finished run printed.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary to completion (at most 120 s).
pub async fn exec(mut cmd: tokio::process::Command) -> Run {
    finish(cmd.spawn().expect("the binary starts")).await
}

/// Like [`exec`], with `input` on stdin.
pub async fn exec_with_stdin(mut cmd: tokio::process::Command, input: &str) -> Run {
    use tokio::io::AsyncWriteExt;
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("the binary starts");
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(input.as_bytes()).await.expect("writes stdin");
    drop(stdin);
    finish(child).await
}

/// Waits for the binary (at most 120 s) and checks the key never shows.
async fn finish(child: tokio::process::Child) -> Run {
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the binary finishes within 120 s")
        .expect("its output is readable");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!run.stdout.contains(KEY) && !run.stderr.contains(KEY), "the API key leaked: {run:?}");
    run
}

/// A fresh scratch directory.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// One of the example reference images.
pub fn example_image(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/images").join(name)
}

/// Every `result` record of a results journal (a line's outcome), in order.
pub fn journal(path: &Path) -> Vec<Value> {
    entries(path).into_iter().filter(|r| r["type"] == "result").collect()
}

/// Every record of a results journal (header, attempts, images, outcomes), in order.
pub fn entries(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("journal lines are JSON"))
        .collect()
}

/// Every record of `kind` (`attempt`, `image`, `attemptFailed`, `result`).
pub fn entries_of(path: &Path, kind: &str) -> Vec<Value> {
    entries(path).into_iter().filter(|r| r["type"] == kind).collect()
}

/// The latest record of each line number.
pub fn latest_by_line(records: &[Value]) -> std::collections::BTreeMap<u64, Value> {
    let mut m = std::collections::BTreeMap::new();
    for r in records {
        m.insert(r["line"].as_u64().expect("line"), r.clone());
    }
    m
}

/// Writes a JSONL file from JSON values (and raw lines given as strings).
pub fn write_jsonl(path: &Path, lines: &[Value]) {
    let text: String = lines
        .iter()
        .map(|l| match l {
            Value::String(raw) => format!("{raw}\n"),
            other => format!("{other}\n"),
        })
        .collect();
    std::fs::write(path, text).expect("write jsonl");
}

// `--metrics-addr`: the address a command prints, and scrapes of it.

/// The address printed on stderr, read line by line.
pub async fn metrics_url(lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>) -> String {
    while let Some(line) = lines.next_line().await.expect("stderr") {
        if let Some(rest) = line.strip_prefix("Metrics (Prometheus) at ") {
            return rest.trim().to_string();
        }
    }
    panic!("no metrics address was printed");
}

/// One GET of /metrics, the whole response (status line included).
pub async fn scrape(url: &str) -> String {
    get(url, "/metrics").await
}

pub async fn get(url: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://").trim_end_matches("/metrics");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("the metrics port answers");
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.unwrap();
    text
}

/// The value of an unlabelled sample, if the scrape has it.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Starts `cmd` (which has `--metrics-addr 127.0.0.1:0`), reads the address it
/// prints, and scrapes it until a task has completed while another is in flight.
/// Returns the child (still running) and that scrape.
pub async fn scrape_with_work_done_and_in_flight(
    mut cmd: tokio::process::Command,
    within: Duration,
) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    cmd.stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("starts");
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let url = metrics_url(&mut stderr).await;
    tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
    let seen = tokio::time::timeout(within, async {
        loop {
            let text = scrape(&url).await;
            assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
            let done = sample(&text, "runware_tasks_completed_total").unwrap_or(0.0);
            let in_flight = sample(&text, "runware_tasks_in_flight").unwrap_or(0.0);
            if done >= 1.0 && in_flight >= 1.0 {
                return text;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("a scrape with work done and in flight");
    (child, seen)
}
