//! `runware conformance` against the emulator: every check holds on the default
//! emulator, and each emulator quirk (a server that differs) is reported as
//! "differs" by exactly the check that covers it.

mod cli_support;

use cli_support::*;
use runware_emulator::{Emulator, EmulatorHandle, Latency, Quirk};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Long enough for the script to drop a socket before R's result is ready.
fn latency() -> Latency {
    Latency::Fixed(Duration::from_millis(400))
}

async fn emulator_with(quirk: Option<Quirk>) -> EmulatorHandle {
    let mut b = Emulator::builder().api_key(KEY).latency(latency()).render_divisor(16).seed(5);
    if let Some(q) = quirk {
        b = b.quirk(q);
    }
    b.start().await.expect("the emulator starts")
}

/// Runs the script with --yes and returns the exit code and the report's verdicts.
async fn conformance(emu: &EmulatorHandle, dir: &Path, extra: &[&str]) -> (i32, Value, BTreeMap<String, String>) {
    let report = dir.join(format!("report-{}.json", fastrand::u64(..)));
    let mut cmd = runware();
    cmd.arg("conformance").args(api(emu)).args(["--yes", "--task-timeout", "20s", "--report"]).arg(&report);
    cmd.args(extra);
    let run = exec(cmd).await;
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| panic!("no report ({e}): {run:?}"));
    assert!(!text.contains(KEY), "the key is in the report");
    let report: Value = serde_json::from_str(&text).expect("the report is JSON");
    let verdicts = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (c["id"].as_str().unwrap_or_default().to_string(), c["verdict"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    (run.code, report, verdicts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_holds_against_the_emulator() {
    let emu = emulator_with(None).await;
    let dir = scratch("conformance");
    let (code, report, verdicts) = conformance(&emu, &dir, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    for (id, verdict) in &verdicts {
        let want = if id == "idle" { "skipped" } else { "holds" };
        assert_eq!(verdict, want, "{id}: {report:#}");
    }
    assert_eq!(verdicts.len(), 10, "{verdicts:?}");
    // What the report says was made is what the server billed; nothing ran twice.
    let stats = emu.stats();
    assert_eq!((report["images"].as_u64(), stats.images_billed), (Some(3), 3), "{stats:?}");
    assert_eq!(stats.double_executed, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_quirk_is_reported_by_exactly_its_check() {
    let flips = [
        (Quirk::NoResume, "resume"),
        (Quirk::NoReplay, "replay"),
        (Quirk::NoCrossSessionConflict, "conflict-new-session"),
        (Quirk::NoSyncGetResponse, "get-response-sync"),
        (Quirk::NoPong, "ping"),
        (Quirk::ErrorsWithoutTaskUuid, "error-shape"),
    ];
    let dir = scratch("conformance-quirks");
    let runs = flips.iter().map(|&(quirk, check)| {
        let dir = dir.clone();
        async move {
            let emu = emulator_with(Some(quirk)).await;
            let (code, report, verdicts) = conformance(&emu, &dir, &[]).await;
            (quirk, check, code, report, verdicts)
        }
    });
    for (quirk, check, code, report, verdicts) in futures::future::join_all(runs).await {
        let differs: Vec<&str> = verdicts.iter().filter(|(_, v)| *v == "differs").map(|(id, _)| id.as_str()).collect();
        assert_eq!(differs, [check], "{quirk}: {report:#}");
        assert_eq!(code, 1, "{quirk}: a difference exits 1");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_closes_idle_sockets_early_differs_on_idle() {
    let emu = Emulator::builder()
        .api_key(KEY)
        .latency(latency())
        .idle_timeout(Duration::from_secs(2))
        .start()
        .await
        .expect("the emulator starts");
    let dir = scratch("conformance-idle");
    let (_, report, verdicts) = conformance(&emu, &dir, &["--idle", "30s"]).await;
    assert_eq!(verdicts["idle"], "differs", "{report:#}");
    let idle = report["checks"].as_array().and_then(|c| c.iter().find(|c| c["id"] == "idle")).expect("idle");
    assert!(idle["seen"].as_str().is_some_and(|s| s.contains("closed a silent socket after 2.")), "{idle}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cost_is_shown_and_asked_for_unless_yes() {
    let emu = emulator_with(None).await;
    let dir = scratch("conformance-ask");
    let report = dir.join("report.json");
    let ask = |answer: &'static str| {
        let mut cmd = runware();
        cmd.arg("conformance").args(api(&emu)).arg("--report").arg(&report).stdin(Stdio::piped());
        async move {
            let mut child = cmd.spawn().expect("the binary starts");
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(answer.as_bytes()).await.expect("the answer is written");
            drop(stdin);
            let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
                .await
                .expect("finishes")
                .expect("output");
            (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
        }
    };
    // Declined: the estimate and the question, then nothing sent.
    let (code, stderr) = ask("n\n").await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("3 Kontext [pro] tasks") && stderr.contains("$0.1200") && stderr.contains("$0.2000"),
        "{stderr}"
    );
    assert!(stderr.contains("[y/N]") && stderr.contains("nothing was sent"), "{stderr}");
    assert_eq!(emu.stats().tasks_received, 0, "a declined run sent a task");
    assert!(!report.exists());
    // Accepted: it runs.
    let (code, stderr) = ask("y\n").await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(report.exists());
    assert!(!stderr.contains(KEY));
    // --yes: no question.
    let run = exec({
        let mut cmd = runware();
        cmd.arg("conformance").args(api(&emu)).arg("--yes").arg("--report").arg(&report);
        cmd
    })
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stderr.contains("[y/N]"), "{run:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
