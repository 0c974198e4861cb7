//! `runware edit` against an in-process emulator.

mod cli_support;

use cli_support::*;
use runware_ws::protocol::{ClientTask, OutputFormat, OutputType, encode_frame};
use runware_ws::{Kontext, KontextSize};
use serde_json::Value;
use std::path::Path;

#[tokio::test]
async fn dry_run_prints_the_frame_the_builder_makes() {
    let image = example_image("sunset-harbor.png");
    let task_uuid = uuid::Uuid::new_v4();
    let mut cmd = runware();
    cmd.args(["edit", "--prompt", "Turn the sky into a violet dusk", "--aspect", "3:2", "--seed", "42"]);
    cmd.args(["-n", "2", "--format", "png", "--quality", "90", "--cost", "--prompt-upsampling"]);
    cmd.args(["--safety-tolerance", "3", "--output", "datauri", "--dry-run", "--task-uuid", &task_uuid.to_string()]);
    cmd.args(["--image", image.to_str().unwrap(), "--image", "https://example.com/in.jpg"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    // Nothing was started: no emulator notice, nothing sent.
    assert!(run.stderr.is_empty(), "{}", run.stderr);

    let expected = Kontext::builder()
        .task_uuid(task_uuid)
        .prompt("Turn the sky into a violet dusk")
        .size(KontextSize::R3x2)
        .seed(42)
        .number_results(2)
        .output_format(OutputFormat::Png)
        .output_quality(90)
        .include_cost(true)
        .prompt_upsampling(true)
        .safety_tolerance(3)
        .output_type(OutputType::DataUri)
        .reference_image_file(&image)
        .reference_image("https://example.com/in.jpg")
        .build()
        .unwrap();
    let expected = encode_frame(&[ClientTask::from(expected)]).unwrap();
    assert_eq!(run.stdout.trim_end(), expected);
    let frame: Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(frame[0]["inputs"]["referenceImages"][0].as_str().unwrap().starts_with("data:image/png;base64,"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_saves_every_image_and_reports_them() {
    let emu = emulator(fast()).await;
    let dir = scratch("edit");
    let out = dir.join("out");
    let mut cmd = runware();
    cmd.args(api(&emu)).args(["--json", "edit", "--prompt", "Make it snow", "--size", "1024x1024", "-n", "2"]);
    cmd.args(["--cost", "--output", "base64", "--image", example_image("pine-ridge.png").to_str().unwrap()]);
    cmd.arg("--out").arg(&out);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    let report: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let images = report["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    for img in images {
        let path = Path::new(img["path"].as_str().unwrap());
        assert!(path.starts_with(&out), "{path:?}");
        assert!(std::fs::metadata(path).unwrap().len() > 100);
        assert!(img["imageUUID"].is_string() && img["seed"].is_u64());
        assert_eq!(img["cost"].as_f64(), Some(0.04));
    }
    let task_uuid = uuid::Uuid::parse_str(report["taskUUID"].as_str().unwrap()).unwrap();
    assert_eq!(emu.executions(task_uuid), 1);

    // URL output (the default) is downloaded; the text report has one line per image.
    let mut cmd = runware();
    cmd.args(api(&emu)).args(["-vvv", "edit", "--prompt", "Make it snow", "--aspect", "16:9", "--async"]);
    cmd.arg("--out").arg(&out);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    let line = run.stdout.lines().next().unwrap();
    let path = line.split_whitespace().next().unwrap();
    assert!(path.ends_with(".jpg") && Path::new(path).exists(), "{line}");
    assert!(line.contains("imageUUID") && line.contains("seed"), "{line}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_name_the_parameter_and_a_bad_key_exits_3() {
    let emu = emulator(fast()).await;
    let mut cmd = runware();
    cmd.args(api(&emu)).args(["edit", "--prompt", "Make it snow", "--quality", "10", "--size", "1000x1000"]);
    let bad = exec(cmd).await;
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("outputQuality") && bad.stderr.contains("width"), "{}", bad.stderr);

    let mut cmd = runware();
    cmd.args(["edit", "--prompt", "Make it snow", "--image", "/no/such/picture.png", "--dry-run"]);
    let missing = exec(cmd).await;
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(missing.stderr.contains("inputs.referenceImages[0]"), "{}", missing.stderr);
    assert!(missing.stderr.contains("does not exist"), "{}", missing.stderr);

    let mut cmd = runware();
    cmd.args(["-vvv", "--url", &emu.ws_url(), "--api-key", "sk-wrong-key-123", "edit", "--prompt", "Make it snow"]);
    let refused = exec(cmd).await;
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(refused.stderr.contains("authentication refused"), "{}", refused.stderr);
    assert!(!refused.stderr.contains("sk-wrong-key-123"), "{}", refused.stderr);

    // --url without a key is a usage error.
    let mut cmd = runware();
    cmd.args(["--url", &emu.ws_url(), "ping"]);
    let usage = exec(cmd).await;
    assert_eq!(usage.code, 2, "{usage:?}");
    emu.shutdown().await;
}
