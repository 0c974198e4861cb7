//! `runware batch` meeting real work: a key-less trial before a real run, other
//! endpoints, failures the server reports, partial results, account failures,
//! rate limits, outages, and an input that is edited or moved between runs.

mod cli_support;

use cli_support::*;
use runware_emulator::{EmulatorHandle, FailMatch, FailRule, Fault, Latency};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

fn batch_cmd(emu: &EmulatorHandle, input: &Path, out: &Path) -> tokio::process::Command {
    let mut cmd = runware();
    cmd.args(api(emu)).arg("batch").arg(input).arg("--out").arg(out);
    cmd.args(["--retry-backoff", "10ms"]);
    cmd
}

fn summary(run: &Run) -> Value {
    serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("a JSON summary ({e}): {run:?}"))
}

fn uuid_of(v: &Value) -> Uuid {
    Uuid::parse_str(v["taskUUID"].as_str().expect("a taskUUID")).expect("a UUID")
}

/// The records of `kind` for line `line`.
fn of_line(path: &Path, kind: &str, line: u64) -> Vec<Value> {
    entries_of(path, kind).into_iter().filter(|r| r["line"] == line).collect()
}

/// Every taskUUID the emulator executed ran exactly once.
fn assert_nothing_ran_twice(emu: &EmulatorHandle) {
    for (uuid, t) in emu.task_stats() {
        assert!(t.executions <= 1, "{uuid} ran {} times", t.executions);
    }
    assert_eq!(emu.stats().double_executed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_less_trial_never_hides_lines_from_a_real_run() {
    let dir = scratch("work-keyless");
    let (input, out) = (dir.join("tasks.jsonl"), dir.join("images"));
    let lines: Vec<Value> =
        (0..3).map(|i| json!({"positivePrompt": format!("Edit {i}: snow"), "size": "1:1"})).collect();
    write_jsonl(&input, &lines);

    // The quick start: no key, no URL — the embedded emulator.
    let mut trial = runware();
    trial.env("RUNWARE_EMULATOR_LATENCY", "2ms").arg("batch").arg(&input).arg("--out").arg(&out).arg("--no-download");
    let run = exec(trial).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("emulator"), "the run says it used the emulator: {}", run.stderr);
    assert_eq!(journal(&dir.join("tasks.emulator.results.jsonl")).len(), 3);
    assert!(!dir.join("tasks.results.jsonl").exists(), "the trial wrote the real journal");

    // The real run (here: another server) executes every line.
    let emu = emulator(fast()).await;
    let mut cmd = batch_cmd(&emu, &input, &out);
    cmd.args(["--json", "--no-download"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(summary(&run)["ok"], 3, "{run:?}");
    assert_eq!(emu.stats().executions_total, 3);
    let header = &entries(&dir.join("tasks.results.jsonl"))[0];
    assert_eq!((header["type"].as_str(), header["endpoint"].as_str()), (Some("header"), Some(emu.ws_url().as_str())));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_of_another_endpoint_is_refused_until_fresh() {
    let (a, b) = (emulator(fast()).await, emulator(fast()).await);
    let dir = scratch("work-endpoint");
    let (input, out, results) = (dir.join("tasks.jsonl"), dir.join("images"), dir.join("shared.jsonl"));
    write_jsonl(&input, &[json!({"positivePrompt": "Make it snow", "size": "1:1"})]);
    let mut cmd = batch_cmd(&a, &input, &out);
    cmd.arg("--results").arg(&results).arg("--no-download");
    assert_eq!(exec(cmd).await.code, 0);

    let mut cmd = batch_cmd(&b, &input, &out);
    cmd.arg("--results").arg(&results).arg("--no-download");
    let refused = exec(cmd).await;
    assert_eq!(refused.code, 2, "{refused:?}");
    for needle in [a.ws_url(), b.ws_url(), "--results OTHER".into(), "--fresh".into()] {
        assert!(refused.stderr.contains(&needle), "the refusal names {needle}: {}", refused.stderr);
    }
    assert_eq!(b.stats().executions_total, 0);

    let mut cmd = batch_cmd(&b, &input, &out);
    cmd.arg("--results").arg(&results).args(["--no-download", "--fresh"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(b.stats().executions_total, 1);
    let kept: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with("shared.jsonl.") && n.ends_with(".old"))
        .collect();
    assert_eq!(kept.len(), 1, "the old journal is kept beside the new one");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_the_server_reports_is_retried_under_a_new_task_uuid() {
    let emu = emulator(fast()).await;
    // Each flaky line fails once, after the server accepted it.
    emu.inject(Fault::FailTasks(FailRule::new("timeoutProvider", FailMatch::PromptContains("flaky".into())).times(1)));
    emu.inject(Fault::FailTasks(
        FailRule::new("contentPolicyViolation", FailMatch::PromptContains("forbidden".into())).times(1),
    ));
    let dir = scratch("work-retry");
    let (input, out) = (dir.join("tasks.jsonl"), dir.join("images"));
    write_jsonl(
        &input,
        &[
            json!({"positivePrompt": "steady 1", "size": "1:1"}),
            json!({"positivePrompt": "flaky 2", "size": "1:1"}),
            json!({"positivePrompt": "flaky 3", "size": "1:1", "numberResults": 2}),
            json!({"positivePrompt": "forbidden 4", "size": "1:1"}),
        ],
    );
    let mut cmd = batch_cmd(&emu, &input, &out);
    cmd.args(["--json", "--no-download"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 1, "one line failed for good: {run:?}");
    let s = summary(&run);
    assert_eq!((s["ok"].as_u64(), s["failed"].as_u64(), s["retries"].as_u64()), (Some(3), Some(1), Some(2)), "{s}");

    let results = dir.join("tasks.results.jsonl");
    for line in [2, 3] {
        let attempts = of_line(&results, "attempt", line);
        assert_eq!(attempts.len(), 2, "line {line}: {attempts:?}");
        assert_ne!(uuid_of(&attempts[0]), uuid_of(&attempts[1]));
        let failed = of_line(&results, "attemptFailed", line);
        assert_eq!(failed.len(), 1);
        assert_eq!((failed[0]["code"].as_str(), uuid_of(&failed[0])), (Some("timeoutProvider"), uuid_of(&attempts[0])));
        let result = &of_line(&results, "result", line)[0];
        assert_eq!(result["status"], "ok", "{result}");
        assert_eq!(uuid_of(result), uuid_of(&attempts[1]));
        assert_eq!(result["images"].as_array().unwrap().len(), line as usize - 1);
    }
    // A content-policy refusal is final at once.
    assert_eq!(of_line(&results, "attempt", 4).len(), 1);
    let refused = &of_line(&results, "result", 4)[0];
    assert_eq!((refused["code"].as_str(), refused["final"].as_bool()), (Some("contentPolicyViolation"), Some(true)));
    assert_nothing_ran_twice(&emu);
    assert_eq!(emu.stats().executions_total, 6);

    // Everything is settled: a re-run sends nothing.
    let mut cmd = batch_cmd(&emu, &input, &out);
    cmd.args(["--json", "--no-download"]);
    let again = exec(cmd).await;
    assert_eq!(summary(&again)["skippedOk"], 3, "{again:?}");
    assert_eq!(emu.stats().executions_total, 6);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_bounded_by_the_retries_flag() {
    let emu = emulator(fast()).await;
    emu.inject(Fault::FailTasks(
        FailRule::new("serviceUnavailable", FailMatch::PromptContains("down".into())).times(3),
    ));
    let dir = scratch("work-retries");
    let (input, out) = (dir.join("tasks.jsonl"), dir.join("images"));
    write_jsonl(&input, &[json!({"positivePrompt": "down for good", "size": "1:1"})]);
    let mut cmd = batch_cmd(&emu, &input, &out);
    cmd.args(["--json", "--no-download", "--retries", "2"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 1, "{run:?}");
    let results = dir.join("tasks.results.jsonl");
    assert_eq!(of_line(&results, "attempt", 1).len(), 3, "one attempt and two retries");
    let result = &of_line(&results, "result", 1)[0];
    assert_eq!(result["code"], "serviceUnavailable", "{result}");
    assert_ne!(result["final"], true, "a re-run may try again: {result}");

    // A re-run tries again, under a new taskUUID, and succeeds.
    let mut cmd = batch_cmd(&emu, &input, &out);
    cmd.args(["--json", "--no-download", "--retries", "2"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    let attempts = of_line(&results, "attempt", 1);
    assert_eq!(attempts.len(), 4);
    assert_eq!(attempts.iter().map(uuid_of).collect::<HashSet<_>>().len(), 4);
    assert_eq!(latest_by_line(&journal(&results))[&1]["status"], "ok");
    assert_nothing_ran_twice(&emu);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_before_a_failure_are_kept_and_only_the_missing_ones_are_asked_for() {
    let emu = emulator(fast()).await;
    emu.inject(Fault::FailTasks(
        FailRule::new("serviceUnavailable", FailMatch::PromptContains("partial".into())).after(3).times(1),
    ));
    let dir = scratch("work-partial");
    let (input, out) = (dir.join("tasks.jsonl"), dir.join("images"));
    write_jsonl(
        &input,
        &[json!({"positivePrompt": "partial", "size": "1:1", "numberResults": 4, "seed": 100, "includeCost": true})],
    );
    let mut cmd = batch_cmd(&emu, &input, &out);
    cmd.arg("--json");
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(summary(&run)["images"], 4, "{run:?}");

    let results = dir.join("tasks.results.jsonl");
    let attempts = of_line(&results, "attempt", 1);
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!((attempts[1]["numberResults"].as_u64(), attempts[1]["seed"].as_u64()), (Some(1), Some(103)));
    let images = of_line(&results, "image", 1);
    let per_attempt: Vec<Uuid> = images.iter().map(uuid_of).collect();
    assert_eq!(per_attempt, [uuid_of(&attempts[0]); 3].into_iter().chain([uuid_of(&attempts[1])]).collect::<Vec<_>>());
    let result = &of_line(&results, "result", 1)[0];
    let saved = result["images"].as_array().unwrap();
    assert_eq!(saved.len(), 4, "{result}");
    for img in saved {
        assert!(Path::new(img["path"].as_str().unwrap()).exists(), "{img}");
    }
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 4, "each image saved once");
    let stats = emu.stats();
    assert_eq!(stats.images_billed, 4, "every billed image is journaled: {stats:?}");
    assert_nothing_ran_twice(&emu);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_that_cannot_pay_stops_the_batch_and_a_re_run_continues() {
    let emu = emulator(Latency::Range(Duration::from_millis(20), Duration::from_millis(60))).await;
    let dir = scratch("work-account");
    let (input, out) = (dir.join("tasks.jsonl"), dir.join("images"));
    let lines: Vec<Value> =
        (0..30).map(|i| json!({"positivePrompt": format!("Edit {i}: fog"), "size": "1:1"})).collect();
    write_jsonl(&input, &lines);
    let results = dir.join("tasks.results.jsonl");
    emu.inject(Fault::FailTasks(FailRule::new("insufficientCredits", FailMatch::Every).after(0).times(1)));
    let mut cmd = batch_cmd(&emu, &input, &out);
    cmd.args(["--json", "--no-download", "--concurrency", "2"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains("add credits"), "{}", run.stderr);
    let s = summary(&run);
    assert!(s["pending"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["ok"].as_u64().unwrap() < 30, "the batch stopped at once: {s}");
    assert!(journal(&results).iter().all(|r| r["status"] == "ok"), "no line is journaled as failed");

    let mut cmd = batch_cmd(&emu, &input, &out);
    cmd.args(["--json", "--no-download", "--concurrency", "2"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(latest_by_line(&journal(&results)).len(), 30);
    assert!(latest_by_line(&journal(&results)).values().all(|r| r["status"] == "ok"));
    assert_nothing_ran_twice(&emu);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_retried_without_using_up_retries() {
    let emu = emulator(fast()).await;
    emu.inject(Fault::FailTasks(
        FailRule::new("requestRateLimitExceeded", FailMatch::PromptContains("busy".into())).times(4),
    ));
    let dir = scratch("work-ratelimit");
    let (input, out) = (dir.join("tasks.jsonl"), dir.join("images"));
    let lines: Vec<Value> = (0..6).map(|i| json!({"positivePrompt": format!("busy {i}"), "size": "1:1"})).collect();
    write_jsonl(&input, &lines);
    let mut cmd = batch_cmd(&emu, &input, &out);
    // Four rate limits per line, one retry allowed: rate limits do not count.
    cmd.args(["--json", "--no-download", "--retries", "1", "--concurrency", "4"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    let s = summary(&run);
    // Each rate-limited attempt is sent once more under its own taskUUID (the server
    // may have registered it), then closed: 4 attempts × 2 sends rate-limited per line.
    assert_eq!((s["ok"].as_u64(), s["retries"].as_u64()), (Some(6), Some(48)), "{s}");
    let results = dir.join("tasks.results.jsonl");
    for line in 1..=6 {
        assert_eq!(of_line(&results, "attempt", line).len(), 5, "line {line}");
        assert_eq!(of_line(&results, "attemptFailed", line).len(), 4, "line {line}");
    }
    assert_nothing_ran_twice(&emu);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_or_moved_input_runs_only_its_new_lines() {
    let emu = emulator(fast()).await;
    let dir = scratch("work-edit");
    let (first, out) = (dir.join("a"), dir.join("images"));
    std::fs::create_dir_all(&first).unwrap();
    let input = first.join("tasks.jsonl");
    write_jsonl(
        &input,
        &[
            json!({"positivePrompt": "Make it snow", "size": "1:1"}),
            json!({"positivePrompt": "Make it snow", "size": "1:1"}),
            json!({"id": "dusk", "positivePrompt": "Make it dusk", "size": "3:2"}),
        ],
    );
    let mut cmd = batch_cmd(&emu, &input, &out);
    cmd.arg("--no-download");
    assert_eq!(exec(cmd).await.code, 0);
    assert_eq!(emu.stats().executions_total, 3, "identical lines are distinct tasks");

    // Move the input and its journal elsewhere, insert a line at the top, reformat
    // another: exactly the new line runs.
    let moved = dir.join("b");
    std::fs::rename(&first, &moved).unwrap();
    let input = moved.join("tasks.jsonl");
    write_jsonl(
        &input,
        &[
            json!({"positivePrompt": "Make it rain", "size": "1:1"}),
            json!({"size": "1:1", "positivePrompt": "Make it snow"}),
            json!(r#"{ "positivePrompt" : "Make it snow", "size" : "1:1" }"#),
            json!({"id": "dusk", "positivePrompt": "Make it dusk", "size": "3:2"}),
        ],
    );
    let mut cmd = batch_cmd(&emu, &input, &out);
    cmd.args(["--no-download", "--json"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    let s = summary(&run);
    assert_eq!((s["ok"].as_u64(), s["skippedOk"].as_u64()), (Some(1), Some(3)), "{s}");
    assert_eq!(emu.stats().executions_total, 4);
    assert_nothing_ran_twice(&emu);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_id_is_a_line_error() {
    let emu = emulator(fast()).await;
    let dir = scratch("work-dup-id");
    let (input, out) = (dir.join("tasks.jsonl"), dir.join("images"));
    write_jsonl(
        &input,
        &[
            json!({"id": "x", "positivePrompt": "one", "size": "1:1"}),
            json!({"id": "x", "positivePrompt": "two", "size": "1:1"}),
            json!({"id": 7, "positivePrompt": "three", "size": "1:1"}),
        ],
    );
    let mut cmd = batch_cmd(&emu, &input, &out);
    cmd.arg("--no-download");
    let run = exec(cmd).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("line 2") && run.stderr.contains("unique"), "{}", run.stderr);
    assert!(run.stderr.contains("line 3") && run.stderr.contains("string"), "{}", run.stderr);
    assert_eq!(emu.stats().executions_total, 1);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn give_up_after_bounds_the_wait_and_a_re_run_recovers_what_was_in_flight() {
    let emu = emulator(Latency::Range(Duration::from_millis(300), Duration::from_millis(500))).await;
    let dir = scratch("work-giveup");
    let (input, out) = (dir.join("tasks.jsonl"), dir.join("images"));
    let lines: Vec<Value> =
        (0..12).map(|i| json!({"positivePrompt": format!("Edit {i}: haze"), "size": "1:1"})).collect();
    write_jsonl(&input, &lines);
    let results = dir.join("tasks.results.jsonl");
    let mut cmd = batch_cmd(&emu, &input, &out);
    cmd.args(["--json", "--no-download", "--concurrency", "4", "--give-up-after", "1s"]);
    let child = cmd.spawn().unwrap();
    let attempts = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while entries_of(&results, "attempt").len() < 4 {
            assert!(tokio::time::Instant::now() < deadline, "no attempt within 60 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        emu.inject(Fault::Outage(Duration::from_secs(4)));
    };
    let (out_, ()) = tokio::join!(child.wait_with_output(), attempts);
    let out_ = out_.unwrap();
    let stderr = String::from_utf8_lossy(&out_.stderr);
    assert_eq!(out_.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("--give-up-after"), "{stderr}");
    let s: Value = serde_json::from_str(String::from_utf8_lossy(&out_.stdout).trim()).unwrap();
    assert!(s["pending"].as_u64().unwrap() >= 1, "{s}");
    assert!(journal(&results).iter().all(|r| r["status"] == "ok"), "an unknown outcome is never journaled as failed");

    // After the outage a re-run recovers the open attempts under their taskUUIDs.
    let mut cmd = batch_cmd(&emu, &input, &out);
    cmd.args(["--json", "--no-download", "--concurrency", "4"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    let by_line = latest_by_line(&journal(&results));
    assert_eq!(by_line.len(), 12);
    for (line, r) in &by_line {
        let attempts = of_line(&results, "attempt", *line);
        assert_eq!(attempts.iter().map(uuid_of).collect::<HashSet<_>>().len(), 1, "line {line}: one taskUUID");
        assert_eq!(uuid_of(r), uuid_of(&attempts[0]));
    }
    assert_nothing_ran_twice(&emu);
    assert_eq!(emu.stats().executions_total, 12);
    emu.shutdown().await;
}

/// Longer than the fixed reconnect budget the CLI used to have (~36 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waits_out_a_long_outage() {
    let emu = emulator(Latency::Range(Duration::from_millis(300), Duration::from_millis(600))).await;
    let dir = scratch("work-outage");
    let (input, out) = (dir.join("tasks.jsonl"), dir.join("images"));
    let lines: Vec<Value> =
        (0..10).map(|i| json!({"positivePrompt": format!("Edit {i}: storm"), "size": "1:1"})).collect();
    write_jsonl(&input, &lines);
    let results = dir.join("tasks.results.jsonl");
    let mut cmd = batch_cmd(&emu, &input, &out);
    cmd.args(["--json", "--no-download", "--concurrency", "3"]);
    let child = cmd.spawn().unwrap();
    let outage = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while entries_of(&results, "attempt").len() < 3 {
            assert!(tokio::time::Instant::now() < deadline, "no attempt within 60 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        emu.inject(Fault::Outage(Duration::from_secs(40)));
    };
    let (out_, ()) = tokio::join!(tokio::time::timeout(Duration::from_secs(150), child.wait_with_output()), outage);
    let out_ = out_.expect("the batch ends after the outage").unwrap();
    let stderr = String::from_utf8_lossy(&out_.stderr);
    assert_eq!(out_.status.code(), Some(0), "{stderr}");
    let s: Value = serde_json::from_str(String::from_utf8_lossy(&out_.stdout).trim()).unwrap();
    assert_eq!(s["ok"], 10, "{s}");
    assert!(s["reconnects"].as_u64().unwrap() >= 1, "{s}");
    let per_line: HashMap<u64, usize> = (1..=10)
        .map(|l| (l, of_line(&results, "attempt", l).iter().map(uuid_of).collect::<HashSet<_>>().len()))
        .collect();
    assert!(per_line.values().all(|n| *n == 1), "unknown outcomes keep their taskUUID: {per_line:?}");
    assert_nothing_ran_twice(&emu);
    assert_eq!(emu.stats().executions_total, 10);
    emu.shutdown().await;
}

/// Writes a journal by hand: a header for `emu` and the given records.
fn write_journal(path: &Path, emu: &EmulatorHandle, records: &[Value]) {
    let header =
        json!({"type": "header", "version": 2, "batchId": Uuid::new_v4(), "endpoint": emu.ws_url(), "createdAtMs": 0});
    let mut all = vec![header];
    all.extend_from_slice(records);
    write_jsonl(path, &all);
}

fn hours_ago_ms(h: u64) -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    u64::try_from(now.as_millis()).unwrap() - h * 3_600_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_older_than_the_servers_memory_is_looked_up_before_it_is_resent() {
    let emu = emulator(fast()).await;
    let dir = scratch("work-stale");
    let (input, out, results) = (dir.join("tasks.jsonl"), dir.join("images"), dir.join("tasks.results.jsonl"));
    write_jsonl(
        &input,
        &[
            json!({"id": "forgotten", "positivePrompt": "sent long ago", "size": "1:1"}),
            json!({"id": "remembered", "positivePrompt": "ran long ago", "size": "1:1", "numberResults": 2}),
        ],
    );
    // "remembered" ran on the server; "forgotten" is a taskUUID it never saw.
    let ran = Uuid::new_v4();
    let c = runware_ws::Client::builder().url(emu.ws_url()).api_key(KEY).connect().await.unwrap();
    let task = runware_ws::Kontext::builder()
        .prompt("ran long ago")
        .size(runware_ws::KontextSize::R1x1)
        .number_results(2)
        .task_uuid(ran)
        .build()
        .unwrap();
    c.kontext(task).await.expect("runs");
    c.close(Duration::from_secs(1)).await;
    let forgotten = Uuid::new_v4();
    let attempt = |key: &str, line: u64, uuid: Uuid, n: u32| {
        json!({"type": "attempt", "key": key, "line": line, "attempt": 1, "taskUUID": uuid,
               "numberResults": n, "sentAtMs": hours_ago_ms(3)})
    };
    write_journal(&results, &emu, &[attempt("id:forgotten", 1, forgotten, 1), attempt("id:remembered", 2, ran, 2)]);

    let mut cmd = batch_cmd(&emu, &input, &out);
    cmd.args(["--json", "--no-download"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 1, "a line is left pending: {run:?}");
    assert!(run.stderr.contains("no longer knows") && run.stderr.contains("--resubmit-stale"), "{}", run.stderr);
    assert_eq!(summary(&run)["pending"], 1);
    assert_eq!(emu.executions(forgotten), 0, "a forgotten attempt is not resent");
    let remembered = &of_line(&results, "result", 2)[0];
    assert_eq!((remembered["status"].as_str(), uuid_of(remembered)), (Some("ok"), ran), "{remembered}");
    assert_eq!(remembered["images"].as_array().unwrap().len(), 2);
    assert_eq!(emu.executions(ran), 1, "recovered, not run again");

    let mut cmd = batch_cmd(&emu, &input, &out);
    cmd.args(["--json", "--no-download", "--resubmit-stale"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    let attempts = of_line(&results, "attempt", 1);
    assert_eq!(attempts.len(), 2);
    assert_eq!(of_line(&results, "attemptFailed", 1)[0]["code"], "staleTaskUUID");
    let result = &of_line(&results, "result", 1)[0];
    assert_eq!(uuid_of(result), uuid_of(&attempts[1]));
    assert_ne!(uuid_of(result), forgotten);
    assert_eq!(emu.executions(forgotten), 0);
    assert_nothing_ran_twice(&emu);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_lines_end_after_the_right_count_and_async_ones_are_polled() {
    let emu = emulator(fast()).await;
    let dir = scratch("work-raw");
    let (input, out, results) = (dir.join("tasks.jsonl"), dir.join("images"), dir.join("tasks.results.jsonl"));
    write_jsonl(
        &input,
        &[
            json!({"taskType": "promptEnhance", "prompt": "a quiet harbour", "promptVersions": 3, "promptMaxLength": 100}),
            json!({"taskType": "imageInference", "model": "bfl:3@1", "positivePrompt": "async edit", "size": "1:1",
                   "numberResults": 2, "deliveryMethod": "async"}),
        ],
    );
    let mut cmd = batch_cmd(&emu, &input, &out);
    cmd.args(["--json", "--no-download", "--timeout", "30s"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    let enhanced = &of_line(&results, "result", 1)[0];
    assert_eq!(enhanced["results"].as_array().unwrap().len(), 3, "{enhanced}");
    let polled = &of_line(&results, "result", 2)[0];
    assert_eq!(polled["images"].as_array().unwrap().len(), 2, "{polled}");
    let latency = polled["latencyMs"].as_f64().unwrap();
    assert!(latency < 30_000.0, "polled, not left to its deadline: {latency} ms");
    emu.shutdown().await;
}
