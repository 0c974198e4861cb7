//! `--metrics-addr`: a Prometheus scrape during a batch, and of `runware serve`.

mod cli_support;

use cli_support::*;
use runware_emulator::Latency;
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_during_a_batch_shows_completed_in_flight_and_a_latency_histogram() {
    let emu = emulator(Latency::Fixed(Duration::from_millis(150))).await;
    let dir = scratch("metrics");
    let input = dir.join("tasks.jsonl");
    let lines: Vec<Value> = (0..40)
        .map(|i| json!({"positivePrompt": format!("Make it snow, take {i}"), "width": 1024, "height": 1024}))
        .collect();
    write_jsonl(&input, &lines);
    let mut cmd = runware();
    cmd.args(api(&emu)).args(["batch", input.to_str().unwrap(), "--no-download", "--concurrency", "4"]);
    cmd.args(["--metrics-addr", "127.0.0.1:0"]);
    // 40 tasks at 4 in flight and 150 ms each: ~1.5 s with tasks done and in flight.
    let (mut child, seen) = scrape_with_work_done_and_in_flight(cmd, Duration::from_secs(30)).await;
    assert!(sample(&seen, "runware_tasks_in_flight").unwrap() <= 4.0, "{seen}");
    assert!(sample(&seen, "runware_tasks_submitted_total").unwrap() >= 2.0, "{seen}");
    assert!(seen.contains("# TYPE runware_task_duration_seconds histogram"), "{seen}");
    let count = sample(&seen, "runware_task_duration_seconds_count").expect("a histogram count");
    assert!(count >= 1.0, "{seen}");
    // 150 ms a task: nothing under 100 ms, the ones done are under 5 s.
    assert!(seen.contains("runware_task_duration_seconds_bucket{le=\"0.1\"} 0"), "{seen}");
    assert!(seen.contains(&format!("runware_task_duration_seconds_bucket{{le=\"5\"}} {count}")), "{seen}");
    let body = seen.split_once("\r\n\r\n").expect("a head and a body").1;
    for line in body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        assert!(line.starts_with("runware_"), "every name starts with runware_: {line}");
    }
    assert!(!seen.contains(KEY));

    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await.expect("finishes").unwrap();
    assert!(status.success(), "{status:?}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exports_the_emulator_counters_and_a_bad_address_is_a_usage_error() {
    let mut cmd = runware();
    cmd.args(["serve", "--metrics-addr", "127.0.0.1:0"]).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("starts");
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = metrics_url(&mut stderr).await;
    let text = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let text = scrape(&url).await;
            if text.contains("runware_emulator_connections_total") {
                return text;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the emulator's counters appear");
    assert!(text.contains("runware_emulator_open_connections"), "{text}");
    assert!(get(&url, "/nope").await.starts_with("HTTP/1.1 404"), "only /metrics is served");
    let _ = child.kill().await;

    let mut cmd = runware();
    cmd.args(["batch", "nothing.jsonl", "--metrics-addr", "not an address"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--metrics-addr"), "{}", run.stderr);
}
