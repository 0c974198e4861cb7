//! References sent once: a local reference image shared by many lines is
//! uploaded once (`imageUpload`), every task references its imageUUID, the
//! upload is journaled and reused by later runs; `--inline-references` keeps the
//! data URIs.

mod cli_support;

use cli_support::*;
use runware_emulator::{Emulator, EmulatorHandle};
use serde_json::{Value, json};
use std::path::Path;

/// A PNG of random pixels (incompressible): about 1 MiB.
fn write_noise_png(path: &Path) {
    let mut rng = fastrand::Rng::with_seed(7);
    let img = image::RgbImage::from_fn(600, 600, |_, _| image::Rgb([rng.u8(..), rng.u8(..), rng.u8(..)]));
    img.save(path).expect("the reference is written");
    let size = std::fs::metadata(path).expect("written").len();
    assert!(size > 1_000_000, "about 1 MiB: {size}");
}

async fn emulator_small() -> EmulatorHandle {
    Emulator::builder().api_key(KEY).latency(fast()).render_divisor(16).seed(9).start().await.expect("starts")
}

fn lines(n: usize, from: usize) -> Vec<Value> {
    (from..from + n)
        .map(|i| {
            json!({"positivePrompt": format!("shared reference edit {i}"), "size": "1:1",
                "inputs": {"referenceImages": ["ref.png"]}})
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_shared_by_a_thousand_lines_is_uploaded_once() {
    let emu = emulator_small().await;
    let dir = scratch("refs-once");
    write_noise_png(&dir.join("ref.png"));
    let input = dir.join("tasks.jsonl");
    write_jsonl(&input, &lines(1000, 0));
    let batch = || {
        let mut cmd = runware();
        cmd.args(api(&emu)).args(["--json", "batch"]).arg(&input).args(["--no-download", "--concurrency", "64"]);
        cmd
    };
    let run = exec(batch()).await;
    assert_eq!(run.code, 0, "{run:?}");
    let stats = emu.stats();
    assert_eq!(stats.uploads, 1, "uploaded once: {stats:?}");
    assert_eq!(stats.executions_total, 1000, "1,000 edits");
    assert!(stats.largest_inference_in < 2048, "every task frame under 2 KiB: {}", stats.largest_inference_in);
    // The upload frame carries the image; every task frame after it is small.
    assert!(stats.largest_frame_in > 1_000_000, "the upload itself: {}", stats.largest_frame_in);
    let results = dir.join("tasks.results.jsonl");
    let uploads = entries_of(&results, "upload");
    assert_eq!(uploads.len(), 1, "journaled once: {uploads:?}");
    let image_uuid = uploads[0]["imageUUID"].as_str().expect("its imageUUID").to_string();

    // Lines added later reuse the journaled upload: nothing is uploaded again, and
    // no frame of this run comes near the reference's size.
    let emu_frames_before = emu.stats().largest_frame_in;
    let mut more = lines(1000, 0);
    more.extend(lines(20, 1000));
    write_jsonl(&input, &more);
    let again = exec(batch()).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(emu.stats().uploads, 1, "the journaled upload is reused");
    assert_eq!(emu.stats().executions_total, 1020, "only the 20 new lines ran");
    assert_eq!(entries_of(&results, "upload").len(), 1);
    assert_eq!(emu_frames_before, emu.stats().largest_frame_in, "no new large frame");
    let _ = image_uuid;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_frames_stay_small_and_inline_references_keep_the_old_way() {
    let dir = scratch("refs-inline");
    write_noise_png(&dir.join("ref.png"));
    let input = dir.join("tasks.jsonl");
    write_jsonl(&input, &lines(5, 0));

    // Uploaded once: the largest frame is the upload; a task frame is tiny.
    let emu = emulator_small().await;
    let mut cmd = runware();
    cmd.args(api(&emu)).args(["--json", "batch"]).arg(&input).args(["--no-download", "--concurrency", "1"]);
    cmd.arg("--results").arg(dir.join("uploaded.jsonl"));
    assert_eq!(exec(cmd).await.code, 0);
    assert_eq!(emu.stats().uploads, 1);
    let upload_frame = emu.stats().largest_frame_in;
    assert!(emu.stats().largest_inference_in < 2048, "{:?}", emu.stats());
    emu.shutdown().await;

    // With --inline-references every task frame carries the image.
    let emu = emulator_small().await;
    let mut cmd = runware();
    cmd.args(api(&emu)).args(["--json", "batch"]).arg(&input).args(["--no-download", "--inline-references"]);
    cmd.arg("--results").arg(dir.join("inline.jsonl"));
    assert_eq!(exec(cmd).await.code, 0);
    assert_eq!(emu.stats().uploads, 0, "nothing uploaded");
    assert!(emu.stats().largest_inference_in > 1_000_000, "the data URI is in the task frames");
    assert!(upload_frame > 1_000_000);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_the_server_forgot_is_uploaded_again_once() {
    let emu = emulator_small().await;
    let dir = scratch("refs-forgot");
    write_noise_png(&dir.join("ref.png"));
    let input = dir.join("tasks.jsonl");
    write_jsonl(&input, &lines(3, 0));
    let batch = || {
        let mut cmd = runware();
        cmd.args(api(&emu)).args(["--json", "batch"]).arg(&input).args(["--no-download", "--concurrency", "4"]);
        cmd
    };
    assert_eq!(exec(batch()).await.code, 0);
    assert_eq!(emu.stats().uploads, 1);

    // The server forgets it; new lines first reference the journaled upload, are
    // refused with invalidReferenceImage, upload it again and run.
    emu.inject(runware_emulator::Fault::ForgetUploads);
    let mut more = lines(3, 0);
    more.extend(lines(4, 3));
    write_jsonl(&input, &more);
    let run = exec(batch()).await;
    assert_eq!(run.code, 0, "{run:?}");
    let s: Value = serde_json::from_str(run.stdout.trim()).expect("a JSON summary");
    assert_eq!(s["ok"].as_u64(), Some(4), "{s}");
    assert_eq!(emu.stats().uploads, 2, "uploaded again once");
    let results = dir.join("tasks.results.jsonl");
    assert_eq!(entries_of(&results, "upload").len(), 2, "the new upload is journaled");
    let refused = entries_of(&results, "attemptFailed");
    assert!(refused.iter().all(|f| f["code"] == "invalidReferenceImage"), "{refused:?}");
    assert!(!refused.is_empty() && refused.len() <= 4, "{refused:?}");
    for (uuid, t) in emu.task_stats() {
        assert!(t.executions <= 1, "{uuid} ran {} times", t.executions);
    }
    emu.shutdown().await;
}
