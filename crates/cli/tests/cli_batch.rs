//! `runware batch` against an in-process emulator: a full run, bad lines, a run
//! killed mid-way and resumed, Ctrl-C.

mod cli_support;

use cli_support::*;
use runware_emulator::Latency;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

fn batch_cmd(emu: &runware_emulator::EmulatorHandle, input: &Path, out: &Path) -> tokio::process::Command {
    let mut cmd = runware();
    cmd.args(api(emu)).arg("batch").arg(input).arg("--out").arg(out);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_saves_every_image_and_journals_every_line() {
    let emu = emulator(fast()).await;
    let dir = scratch("batch-full");
    let (input, out) = (dir.join("tasks.jsonl"), dir.join("images"));
    let data_uri =
        format!("data:image/png;base64,{}", base64_of(&std::fs::read(example_image("courtyard-tiles.png")).unwrap()));
    write_jsonl(
        &input,
        &[
            json!({"positivePrompt":"Make it snow","width":1024,"height":1024,"numberResults":2,"includeCost":true}),
            json!({"positivePrompt":"Paint it as a watercolor","size":"3:2","inputs":{"referenceImages":[data_uri]}}),
            json!({"positivePrompt":"Night under a full moon","size":"9:16","outputType":"base64Data","outputFormat":"PNG"}),
            json!({"taskType":"imageInference","model":"bfl:3@1","positivePrompt":"Golden hour","size":"21:9","outputType":"dataURI","outputFormat":"WEBP"}),
            json!({"taskType":"imageUpload","image":data_uri}),
        ],
    );
    let mut cmd = batch_cmd(&emu, &input, &out);
    cmd.args(["--json", "--concurrency", "3"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    let summary: Value = serde_json::from_str(run.stdout.trim()).expect("a JSON summary");
    assert_eq!(
        (summary["ok"].as_u64(), summary["failed"].as_u64(), summary["images"].as_u64()),
        (Some(5), Some(0), Some(6))
    );
    // Every image line is asked for its cost (includeCost by default): the summary
    // reports what the emulator billed.
    let billed = emu.stats().billed_micro_usd as f64 / 1e6;
    assert!(billed > 0.08 && (summary["cost"].as_f64().unwrap() - billed).abs() < 1e-9, "{summary} vs {billed}");
    for key in ["wallSeconds", "tasksPerSecond", "latencyMs", "reconnects"] {
        assert!(!summary[key].is_null(), "{key} in {summary}");
    }

    let records = journal(&dir.join("tasks.results.jsonl"));
    assert_eq!(records.len(), 5);
    let mut files = 0;
    for r in &records {
        assert_eq!(r["status"], "ok", "{r}");
        assert!(r["latencyMs"].is_f64() || r["latencyMs"].is_u64(), "{r}");
        let line = r["line"].as_u64().unwrap();
        for img in r["images"].as_array().unwrap() {
            let path = Path::new(img["path"].as_str().unwrap());
            let name = path.file_name().unwrap().to_str().unwrap();
            assert!(name.starts_with(&format!("{line:05}-")), "{name}");
            assert!(name.contains(img["imageUUID"].as_str().unwrap()), "{name}");
            assert!(std::fs::metadata(path).unwrap().len() > 100, "{path:?}");
            files += 1;
        }
        let uuid = uuid::Uuid::parse_str(r["taskUUID"].as_str().unwrap()).unwrap();
        if line <= 4 {
            assert_eq!(emu.executions(uuid), 1);
        }
    }
    // The upload (a raw task) came back as an image too, and was downloaded.
    assert_eq!(files, 6);
    let names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().any(|n| n.ends_with(".png")) && names.iter().any(|n| n.ends_with(".webp")), "{names:?}");
    assert!(!names.iter().any(|n| n.ends_with(".part")), "{names:?}");

    // Run again: nothing left to do, nothing executed again.
    let mut cmd = batch_cmd(&emu, &input, &out);
    cmd.arg("--json");
    let again = exec(cmd).await;
    assert_eq!(again.code, 0, "{again:?}");
    let summary: Value = serde_json::from_str(again.stdout.trim()).unwrap();
    assert_eq!((summary["ok"].as_u64(), summary["skippedOk"].as_u64()), (Some(0), Some(5)));
    assert_eq!(journal(&dir.join("tasks.results.jsonl")).len(), 5);
    assert_eq!(emu.stats().double_executed, 0);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_are_named_and_skipped_while_the_rest_runs() {
    let emu = emulator(fast()).await;
    let dir = scratch("batch-bad");
    std::fs::copy(example_image("pine-ridge.png"), dir.join("pine.png")).unwrap();
    let (input, out) = (dir.join("tasks.jsonl"), dir.join("images"));
    write_jsonl(
        &input,
        &[
            json!({"positivePrompt":"Make it snow","size":"1:1"}),
            json!(r#"{"positivePrompt": "broken", "width": 1024,"#),
            json!({"positivePrompt":"Make it snow","width":1024,"height":1024,"outputQuality":5}),
            json!({"positivePrompt":"Make it snow","size":"1:1","inputs":{"referenceImages":["missing/nothing.png"]}}),
            json!({"positivePrompt":"Make it snow","width":1000,"height":1000}),
            json!({"positivePrompt":"Make it snow","size":"5:4"}),
            json!(""),
            json!({"positivePrompt":"Make it rain","size":"4:3","inputs":{"referenceImages":["pine.png"]},"outputType":"base64Data"}),
            json!({"taskType":"videoInference","positivePrompt":"a cat"}),
        ],
    );
    let run = exec(batch_cmd(&emu, &input, &out)).await;
    assert_eq!(run.code, 1, "{run:?}");
    for (line, parameter) in [(3, "outputQuality"), (4, "inputs.referenceImages[0]"), (5, "width"), (6, "size")] {
        let msg = run.stderr.lines().find(|l| l.contains(&format!("line {line}:"))).unwrap_or_else(|| {
            panic!("no message for line {line}: {}", run.stderr);
        });
        assert!(msg.contains(parameter), "line {line} should name {parameter}: {msg}");
    }
    assert!(run.stderr.contains("line 2: malformed JSON"), "{}", run.stderr);
    assert!(run.stderr.contains("does not exist"), "{}", run.stderr);

    let by_line = latest_by_line(&journal(&dir.join("tasks.results.jsonl")));
    assert_eq!(by_line.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6, 8, 9]);
    // A task type the server refuses: its error, code and parameter included.
    assert_eq!(by_line[&9]["code"], "unsupportedTaskType", "{}", by_line[&9]);
    assert_eq!(by_line[&9]["parameter"], "taskType");
    assert!(run.stderr.contains("line 9: unsupportedTaskType [taskType]"), "{}", run.stderr);
    for ok in [1, 8] {
        assert_eq!(by_line[&ok]["status"], "ok", "{}", by_line[&ok]);
    }
    assert_eq!(by_line[&2]["code"], "invalidJson");
    for (line, parameter) in [(3, "outputQuality"), (4, "inputs.referenceImages[0]"), (5, "width"), (6, "size")] {
        let r = &by_line[&line];
        assert_eq!((r["status"].as_str(), r["parameter"].as_str()), (Some("error"), Some(parameter)), "{r}");
        assert_eq!(r["final"], true);
    }
    let saved = by_line[&8]["images"][0]["path"].as_str().unwrap();
    assert!(Path::new(saved).exists());
    // Only the two good lines ran.
    assert_eq!(emu.stats().executions_total, 2);

    // Final errors are not retried: a second run has nothing to do and still says so.
    let again = exec(batch_cmd(&emu, &input, &out)).await;
    assert_eq!(again.code, 1, "{again:?}");
    assert_eq!(emu.stats().executions_total, 2);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_killed_mid_run_resumes_without_running_anything_twice() {
    let emu = emulator(Latency::Range(Duration::from_millis(40), Duration::from_millis(160))).await;
    let dir = scratch("batch-kill");
    let (input, out) = (dir.join("tasks.jsonl"), dir.join("images"));
    let lines: Vec<Value> = (0..40)
        .map(|i| {
            let size = ["1:1", "3:2", "16:9", "9:21"][i % 4];
            json!({
                "positivePrompt": format!("Edit {i}: make it dusk"),
                "size": size,
                "numberResults": 1 + i % 3,
            })
        })
        .collect();
    write_jsonl(&input, &lines);
    let results = dir.join("tasks.results.jsonl");

    let mut cmd = batch_cmd(&emu, &input, &out);
    cmd.args(["--concurrency", "4", "--no-download"]);
    let mut child = cmd.spawn().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while journal(&results).len() < 6 {
        assert!(tokio::time::Instant::now() < deadline, "no progress within 60 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().await.unwrap();
    let first = journal(&results).len();
    assert!(first < 40, "the batch finished before it could be killed ({first} lines)");

    let mut cmd = batch_cmd(&emu, &input, &out);
    cmd.args(["--concurrency", "4", "--no-download", "--json"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    let summary: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["ok"].as_u64().unwrap() + summary["skippedOk"].as_u64().unwrap(), 40, "{summary}");

    let records = journal(&results);
    let by_line = latest_by_line(&records);
    assert_eq!(by_line.len(), 40);
    let mut uuids = std::collections::HashSet::new();
    for (line, r) in &by_line {
        assert_eq!(r["status"], "ok", "line {line}: {r}");
        let expected = 1 + (*line as usize - 1) % 3;
        assert_eq!(r["images"].as_array().unwrap().len(), expected, "line {line}: {r}");
        let uuid = uuid::Uuid::parse_str(r["taskUUID"].as_str().unwrap()).unwrap();
        assert!(uuids.insert(uuid), "taskUUIDs are distinct");
        assert_eq!(emu.executions(uuid), 1, "line {line} ran {} times", emu.executions(uuid));
    }
    let stats = emu.stats();
    assert_eq!(stats.double_executed, 0, "{stats:?}");
    assert_eq!(stats.max_executions_per_task, 1, "{stats:?}");
    assert_eq!(stats.executions_total, 40, "{stats:?}");
    emu.shutdown().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_submitting_lets_tasks_finish_and_flushes_the_journal() {
    a_signal_drains_the_batch("-INT", 130, "Interrupted").await;
}

/// `docker stop`, systemd and Kubernetes stop with SIGTERM: the batch drains as on
/// Ctrl-C and a re-run finishes every line, nothing run twice.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_batch_like_ctrl_c() {
    a_signal_drains_the_batch("-TERM", 143, "Terminated").await;
}

/// Sends `signal` (a `kill` option) mid-batch: the batch stops submitting, lets what
/// is in flight finish, journals it, exits with `code` saying `word`; a re-run
/// finishes the rest.
#[cfg(unix)]
async fn a_signal_drains_the_batch(signal: &str, code: i32, word: &str) {
    let emu = emulator(Latency::Range(Duration::from_millis(200), Duration::from_millis(400))).await;
    let dir = scratch("batch-signal");
    let (input, out) = (dir.join("tasks.jsonl"), dir.join("images"));
    let lines: Vec<Value> =
        (0..30).map(|i| json!({"positivePrompt": format!("Edit {i}: add fog"), "size": "1:1"})).collect();
    write_jsonl(&input, &lines);
    let results = dir.join("tasks.results.jsonl");

    let mut cmd = batch_cmd(&emu, &input, &out);
    cmd.args(["--concurrency", "3", "--no-download", "--grace", "20s"]);
    let child = cmd.spawn().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while journal(&results).len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "no progress within 60 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill").args([signal, &pid]).status().unwrap();
    assert!(status.success());
    let out_ = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&out_.stderr);
    assert_eq!(out_.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(word) && stderr.contains("in flight"), "{stderr}");
    // Every submitted task finished within the grace period and was journaled.
    let records = journal(&results);
    assert!(records.len() < 30, "{}", records.len());
    assert!(records.iter().all(|r| r["status"] == "ok"), "{records:?}");
    assert_eq!(emu.stats().executions_total as usize, records.len(), "{stderr}");

    let mut cmd = batch_cmd(&emu, &input, &out);
    cmd.arg("--no-download");
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(latest_by_line(&journal(&results)).len(), 30);
    assert_eq!(emu.stats().executions_total, 30);
    assert_eq!(emu.stats().double_executed, 0);
    emu.shutdown().await;
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_mid_batch_never_run_a_task_twice() {
    use runware_emulator::Fault;
    let emu = emulator(Latency::Range(Duration::from_millis(50), Duration::from_millis(150))).await;
    let dir = scratch("batch-faults");
    let (input, out) = (dir.join("tasks.jsonl"), dir.join("images"));
    let lines: Vec<Value> = (0..40)
        .map(|i| json!({"positivePrompt": format!("Edit {i}: add rain"), "size": "2:3", "numberResults": 1 + i % 2}))
        .collect();
    write_jsonl(&input, &lines);
    let mut cmd = batch_cmd(&emu, &input, &out);
    cmd.args(["--concurrency", "8", "--no-download", "--json"]);
    let child = cmd.spawn().unwrap();
    let faults = async {
        for fault in [Fault::Drop, Fault::Close, Fault::Restart, Fault::Drop, Fault::DuplicateResults(3), Fault::Drop] {
            tokio::time::sleep(Duration::from_millis(120)).await;
            emu.inject(fault);
        }
    };
    let (out_, ()) = tokio::join!(child.wait_with_output(), faults);
    let out_ = out_.unwrap();
    let stdout = String::from_utf8_lossy(&out_.stdout);
    assert_eq!(out_.status.code(), Some(0), "{}", String::from_utf8_lossy(&out_.stderr));
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["ok"], 40, "{summary}");
    assert!(summary["reconnects"].as_u64().unwrap() >= 1, "the faults hit the batch: {summary}");
    let by_line = latest_by_line(&journal(&dir.join("tasks.results.jsonl")));
    for (line, r) in &by_line {
        assert_eq!(r["status"], "ok", "line {line}: {r}");
        assert_eq!(r["images"].as_array().unwrap().len(), 1 + (*line as usize - 1) % 2, "line {line}: {r}");
        let uuid = uuid::Uuid::parse_str(r["taskUUID"].as_str().unwrap()).unwrap();
        assert_eq!(emu.executions(uuid), 1, "line {line}");
    }
    assert_eq!(emu.stats().double_executed, 0);
    emu.shutdown().await;
}
