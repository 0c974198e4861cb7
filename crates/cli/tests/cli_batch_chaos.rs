//! Chaos for `runware batch`: 2,000 lines of 1–4 images against an emulator that
//! fails tasks after accepting them (retryable, rate-limited, after a partial
//! result, refused for content), drops every connection every 2 s and has one
//! outage. Nothing may run twice, and every billed image must be journaled and on
//! disk exactly once. (The 100,000-line soak variant is in RELIABILITY.md.)

mod cli_support;

use cli_support::*;
use runware_emulator::{Emulator, FailMatch, FailRule, Fault, Latency};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Lines (and in-flight cap) of the run; `CHAOS_LINES` / `CHAOS_CONCURRENCY`
/// change them for the soak (see RELIABILITY.md).
fn setting(var: &str, default: usize) -> usize {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_lines_through_failures_drops_and_an_outage() {
    let lines_n = setting("CHAOS_LINES", 2_000);
    let concurrency = setting("CHAOS_CONCURRENCY", 16).to_string();
    let emu = Emulator::builder()
        .api_key(KEY)
        .latency(Latency::Range(Duration::from_millis(30), Duration::from_millis(90)))
        .render_divisor(16)
        .seed(23)
        .start()
        .await
        .expect("the emulator starts");
    for (code, marker, after) in [
        ("timeoutProvider", "flaky", 0),
        ("requestRateLimitExceeded", "throttled", 0),
        ("serviceUnavailable", "partial", 1),
        ("contentPolicyViolation", "forbidden", 0),
    ] {
        emu.inject(Fault::FailTasks(
            FailRule::new(code, FailMatch::PromptContains(marker.into())).after(after).times(1),
        ));
    }
    // 10 % fail once with a retryable code, 2 % are rate-limited, 1 % fail after a
    // partial result, 0.5 % are refused for good.
    let marker = |i: usize| match i % 200 {
        0..20 => "flaky",
        20..24 => "throttled",
        24..26 => "partial",
        26 => "forbidden",
        _ => "plain",
    };
    let lines: Vec<Value> = (0..lines_n)
        .map(|i| {
            let n = if marker(i) == "partial" { 2 + i % 3 } else { 1 + i % 4 };
            json!({"positivePrompt": format!("{} edit {i}", marker(i)), "size": "1:1", "numberResults": n})
        })
        .collect();
    let forbidden = (0..lines_n).filter(|i| marker(*i) == "forbidden").count();
    let dir = scratch("batch-chaos");
    let (input, out, results) = (dir.join("tasks.jsonl"), dir.join("images"), dir.join("tasks.results.jsonl"));
    write_jsonl(&input, &lines);

    let mut cmd = runware();
    cmd.args(api(&emu)).arg("batch").arg(&input).arg("--out").arg(&out);
    cmd.args(["--json", "--concurrency", &concurrency, "--retry-backoff", "20ms"]);
    let started = std::time::Instant::now();
    let child = cmd.spawn().expect("the binary starts");
    let chaos = async {
        let mut tick = 0u32;
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            tick += 1;
            if tick == 2 {
                emu.inject(Fault::Outage(Duration::from_secs(5)));
            } else {
                emu.inject(Fault::Drop);
            }
        }
    };
    let out_ = tokio::select! {
        out_ = tokio::time::timeout(Duration::from_secs(600 + lines_n as u64 / 50), child.wait_with_output()) => {
            out_.expect("the batch ends within 600 s (2,000 lines take ~20 s)").expect("its output is readable")
        }
        () = chaos => unreachable!(),
    };
    let wall = started.elapsed();
    let stderr = String::from_utf8_lossy(&out_.stderr);
    assert_eq!(out_.status.code(), Some(1), "the refused lines fail the run: {stderr}");
    let summary: Value = serde_json::from_str(String::from_utf8_lossy(&out_.stdout).trim()).unwrap();
    assert_eq!(summary["failed"], forbidden as u64, "{summary}");
    assert_eq!(summary["ok"], (lines_n - forbidden) as u64, "{summary}");
    assert!(summary["reconnects"].as_u64().unwrap() >= 3, "the chaos reached the batch: {summary}");

    // Every line ends ok, or refused for good.
    let by_line = latest_by_line(&journal(&results));
    assert_eq!(by_line.len(), lines_n);
    for (line, r) in &by_line {
        let i = *line as usize - 1;
        if marker(i) == "forbidden" {
            assert_eq!((r["code"].as_str(), r["final"].as_bool()), (Some("contentPolicyViolation"), Some(true)), "{r}");
        } else {
            assert_eq!(r["status"], "ok", "line {line}: {r}");
            assert_eq!(r["images"].as_array().unwrap().len(), lines[i]["numberResults"].as_u64().unwrap() as usize);
        }
    }

    // Nothing ran twice.
    let tasks = emu.task_stats();
    let twice: Vec<_> = tasks.iter().filter(|(_, t)| t.executions > 1).collect();
    assert!(twice.is_empty(), "taskUUIDs executed twice: {twice:?}");

    // Billed == journaled == on disk, each image once.
    let journaled: Vec<Value> = entries_of(&results, "image");
    let journaled_uuids: HashSet<&str> = journaled.iter().map(|r| r["imageUUID"].as_str().unwrap()).collect();
    assert_eq!(journaled_uuids.len(), journaled.len(), "an image journaled twice");
    let on_disk: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!on_disk.iter().any(|n| n.ends_with(".part")));
    let stats = emu.stats();
    assert_eq!(stats.images_billed, journaled.len() as u64, "billed vs journaled: {stats:?}");
    assert_eq!(on_disk.len(), journaled.len(), "journaled vs on disk");
    // Files are named `LINE-TASK8-IMAGEUUID.EXT`: the image UUID is the 36 characters
    // before the extension.
    let named: HashSet<&str> = on_disk
        .iter()
        .filter_map(|n| n.rsplit_once('.').and_then(|(stem, _)| stem.get(stem.len().saturating_sub(36)..)))
        .collect();
    let on_disk_uuids: HashSet<&str> = journaled_uuids.iter().copied().filter(|u| named.contains(u)).collect();
    assert_eq!(on_disk_uuids.len(), journaled.len(), "every journaled image is on disk");

    // The failures were injected as planned, and retried under new taskUUIDs.
    let mut failed_by_code: HashMap<String, usize> = HashMap::new();
    for f in entries_of(&results, "attemptFailed") {
        *failed_by_code.entry(f["code"].as_str().unwrap().to_string()).or_default() += 1;
    }
    let expected = |m: &str| (0..lines_n).filter(|i| marker(*i) == m).count();
    assert_eq!(failed_by_code.get("timeoutProvider").copied(), Some(expected("flaky")), "{failed_by_code:?}");
    assert_eq!(failed_by_code.get("requestRateLimitExceeded").copied(), Some(expected("throttled")));
    assert_eq!(failed_by_code.get("serviceUnavailable").copied(), Some(expected("partial")));
    // The figures RELIABILITY.md records for the soak.
    eprintln!(
        "batch chaos: {lines_n} lines at {concurrency} in flight in {wall:.1?}; summary {summary}; \
         attempts failed {failed_by_code:?}; emulator: {} task frames, {} executed, {} conflicts, {} images billed, \
         {} connections",
        stats.tasks_received, stats.executions_total, stats.conflicts, stats.images_billed, stats.connections
    );
    emu.shutdown().await;
}
