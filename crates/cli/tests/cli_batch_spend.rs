//! Spend you can see and cap: the billed total reported exactly, `--dry-run`
//! estimates and sends nothing, `--max-cost` stops at the cap and a re-run
//! finishes the rest without running anything twice.

mod cli_support;

use cli_support::*;
use runware_emulator::{Emulator, EmulatorHandle};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn summary(run: &Run) -> Value {
    serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("a JSON summary ({e}): {run:?}"))
}

fn billed(emu: &EmulatorHandle) -> f64 {
    emu.stats().billed_micro_usd as f64 / 1e6
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kontext-edits.jsonl")
}

async fn small_images_emulator() -> EmulatorHandle {
    Emulator::builder().api_key(KEY).latency(fast()).render_divisor(16).seed(5).start().await.expect("starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reports_what_the_server_billed_without_include_cost_on_its_lines() {
    let emu = emulator(fast()).await;
    let dir = scratch("spend-billed");
    let input = dir.join("tasks.jsonl");
    let lines: Vec<Value> = (0..12)
        .map(|i| json!({"positivePrompt": format!("billed edit {i}"), "size": "1:1", "numberResults": 1 + i % 3}))
        .collect();
    write_jsonl(&input, &lines);
    let mut cmd = runware();
    cmd.args(api(&emu)).args(["--json", "batch"]).arg(&input).arg("--out").arg(dir.join("out"));
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    let s = summary(&run);
    let images: u64 = (0..12).map(|i| 1 + i % 3).sum();
    assert!((billed(&emu) - images as f64 * 0.04).abs() < 1e-9, "the emulator billed every image");
    assert!((s["cost"].as_f64().unwrap() - billed(&emu)).abs() < 1e-9, "summary {s} vs billed {}", billed(&emu));
    assert!((s["batchCost"].as_f64().unwrap() - billed(&emu)).abs() < 1e-9, "{s}");
    // Every journaled image carries its cost.
    let journaled = entries_of(&dir.join("tasks.results.jsonl"), "image");
    assert_eq!(journaled.len() as u64, images);
    assert!(journaled.iter().all(|r| r["cost"].as_f64() == Some(0.04)), "{journaled:?}");
    // A line that says otherwise is not asked for its cost.
    let other = dir.join("no-cost.jsonl");
    write_jsonl(&other, &[json!({"positivePrompt": "a quiet edit", "size": "1:1", "includeCost": false})]);
    let mut cmd = runware();
    cmd.args(api(&emu)).args(["--json", "batch"]).arg(&other).arg("--out").arg(dir.join("out"));
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(summary(&run)["cost"].as_f64(), Some(0.0), "no cost was reported for it");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_of_the_example_estimates_it_and_sends_nothing() {
    let emu = emulator(fast()).await;
    let dir = scratch("spend-dry");
    let mut cmd = runware();
    cmd.args(api(&emu)).args(["--json", "batch"]).arg(example()).arg("--dry-run");
    cmd.arg("--results").arg(dir.join("r.jsonl"));
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    let report: Value = serde_json::from_str(run.stdout.trim()).expect("JSON");
    let e = &report["estimate"];
    assert_eq!(
        (e["tasks"].as_u64(), e["images"].as_u64(), e["invalid"].as_u64()),
        (Some(300), Some(701), Some(0)),
        "{report}"
    );
    assert!((e["estimatedCost"].as_f64().unwrap() - 28.04).abs() < 1e-9, "{report}");
    assert_eq!(e["sizes"].as_object().map(|s| s.values().filter_map(Value::as_u64).sum::<u64>()), Some(701));
    assert_eq!(emu.stats().connections, 0, "a dry run never connects");
    assert!(!dir.join("r.jsonl").exists(), "nor writes a journal");

    // Text output, key-less: no emulator starts either.
    let mut cmd = runware();
    cmd.arg("batch").arg(example()).arg("--dry-run").arg("--results").arg(dir.join("r.jsonl"));
    let text = exec(cmd).await;
    assert_eq!(text.code, 0, "{text:?}");
    assert!(text.stdout.contains("300 tasks · 701 images") && text.stdout.contains("$28.0400"), "{}", text.stdout);
    assert!(!text.stderr.contains("embedded"), "no emulator for a dry run: {}", text.stderr);

    // A bad line or a missing reference: exit 2, every error named.
    let bad = dir.join("bad.jsonl");
    write_jsonl(
        &bad,
        &[
            json!({"positivePrompt": "fine", "size": "1:1"}),
            json!({"positivePrompt": "missing", "size": "1:1", "inputs": {"referenceImages": ["nowhere.png"]}}),
            json!({"positivePrompt": "x", "size": "1:1"}),
            json!({"taskType": "imageInference", "model": "runware:100@1", "positivePrompt": "other model", "width": 512, "height": 512}),
        ],
    );
    let mut cmd = runware();
    cmd.args(api(&emu)).args(["--json", "batch"]).arg(&bad).arg("--dry-run");
    let run = exec(cmd).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("line 2") && run.stderr.contains("line 3"), "{}", run.stderr);
    let e = &serde_json::from_str::<Value>(run.stdout.trim()).expect("JSON")["estimate"];
    assert_eq!(
        (e["tasks"].as_u64(), e["invalid"].as_u64(), e["unpricedTasks"].as_u64()),
        (Some(2), Some(2), Some(1)),
        "{e}"
    );
    assert_eq!(emu.stats().connections, 0);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_cost_stops_at_the_cap_and_a_re_run_finishes_without_running_anything_twice() {
    let emu = small_images_emulator().await;
    let dir = scratch("spend-cap");
    let results = dir.join("r.jsonl");
    let batch = |cap: Option<&str>| {
        let mut cmd = runware();
        cmd.args(api(&emu)).args(["--json", "batch"]).arg(example()).arg("--results").arg(&results);
        cmd.arg("--out").arg(dir.join("out")).args(["--concurrency", "8"]);
        if let Some(c) = cap {
            cmd.args(["--max-cost", c]);
        }
        cmd
    };
    let capped = exec(batch(Some("1.00"))).await;
    assert_eq!(capped.code, 5, "the cap stops the batch with its own code: {capped:?}");
    assert!(capped.stderr.contains("--max-cost $1.0000"), "it says why: {}", capped.stderr);
    let spent = billed(&emu);
    assert!(spent <= 1.0 + 1e-9 && spent > 0.5, "stopped at or under the cap: {spent}");
    let s = summary(&capped);
    assert!(s["pending"].as_u64().unwrap() > 0, "the rest is pending: {s}");

    // A second capped run has nothing left under the cap: it sends nothing.
    let again = exec(batch(Some("1.00"))).await;
    assert_eq!(again.code, 5, "{again:?}");
    assert!(billed(&emu) <= 1.0 + 1e-9, "still at or under the cap: {}", billed(&emu));

    // Without the cap the rest runs; nothing runs twice and the whole file is billed once.
    let rest = exec(batch(None)).await;
    assert_eq!(rest.code, 0, "{rest:?}");
    for (uuid, t) in emu.task_stats() {
        assert!(t.executions <= 1, "{uuid} ran {} times", t.executions);
    }
    assert!((billed(&emu) - 28.04).abs() < 1e-6, "701 images billed once: {}", billed(&emu));
    assert!((summary(&rest)["batchCost"].as_f64().unwrap() - 28.04).abs() < 1e-6, "{}", rest.stdout);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_asks_for_its_cost_and_takes_the_safety_flags() {
    let emu = emulator(fast()).await;
    let mut cmd = runware();
    cmd.args([
        "edit",
        "--prompt",
        "Make it snow",
        "--aspect",
        "1:1",
        "--check-content",
        "--safety-mode",
        "fast",
        "--dry-run",
    ]);
    let dry = exec(cmd).await;
    assert_eq!(dry.code, 0, "{dry:?}");
    let frame: Value = serde_json::from_str(dry.stdout.trim()).expect("the frame");
    assert_eq!(frame[0]["includeCost"], true, "{frame}");
    assert_eq!(frame[0]["safety"], json!({"checkContent": true, "mode": "fast"}), "{frame}");

    let dir = scratch("spend-edit");
    let mut cmd = runware();
    cmd.args(api(&emu)).args(["edit", "--prompt", "Make it snow", "--aspect", "1:1", "-n", "2", "--out"]).arg(&dir);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.matches("cost $0.0400").count(), 2, "each image's cost is shown: {}", run.stdout);
    let mut cmd = runware();
    cmd.args(api(&emu)).args(["edit", "--prompt", "Make it snow", "--aspect", "1:1", "--no-cost", "--dry-run"]);
    let quiet = exec(cmd).await;
    assert!(quiet.stdout.contains("\"includeCost\":false"), "{}", quiet.stdout);
    emu.shutdown().await;
}
