//! The gallery: `runware batch … --gallery` and `runware gallery RESULTS.jsonl`
//! write a self-contained index.html with a card per line (reference, results,
//! prompt, size, seed, cost, status, error). The page's structure is checked
//! here; `a_real_browser_shows_every_card_image_and_error` loads it in headless
//! Chromium (run by `.ci/run`, which installs Debian's `chromium`).

mod cli_support;

use cli_support::*;
use runware_emulator::{FailMatch, FailRule, Fault};
use serde_json::json;
use std::path::{Path, PathBuf};

/// A batch of four lines (one refused for content, one with a reference image)
/// run with `--gallery`; returns the scratch dir and the page.
async fn batch_with_gallery(name: &str) -> (PathBuf, String) {
    let emu = emulator(fast()).await;
    emu.inject(Fault::FailTasks(FailRule::new(
        "contentPolicyViolation",
        FailMatch::PromptContains("forbidden".into()),
    )));
    let dir = scratch(name);
    std::fs::copy(example_image("pine-ridge.png"), dir.join("ref.png")).expect("a reference");
    let input = dir.join("tasks.jsonl");
    write_jsonl(
        &input,
        &[
            json!({"positivePrompt": "Make it snow", "size": "1:1", "numberResults": 2}),
            json!({"positivePrompt": "Turn the sky violet", "size": "3:2", "inputs": {"referenceImages": ["ref.png"]}}),
            json!({"positivePrompt": "A forbidden edit", "size": "1:1"}),
            json!({"positivePrompt": "Golden hour <b>light</b>", "size": "16:9", "seed": 42}),
        ],
    );
    let mut cmd = runware();
    cmd.current_dir(&dir).args(api(&emu)).args(["batch", "tasks.jsonl", "--gallery", "--out", "out"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 1, "one line fails: {run:?}");
    assert!(run.stderr.contains("Gallery of 4 line(s)"), "{}", run.stderr);
    emu.shutdown().await;
    let page = std::fs::read_to_string(dir.join("out/index.html")).expect("index.html is written");
    (dir, page)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gallery_has_a_card_per_line_with_its_images_and_errors() {
    let (dir, page) = batch_with_gallery("gallery").await;
    assert_eq!(page.matches("<article class=\"card").count(), 4, "{page}");
    assert_eq!(page.matches("<article class=\"card ok\"").count(), 3);
    assert_eq!(page.matches("<article class=\"card failed\"").count(), 1);
    assert_eq!(page.matches("<figure class=\"result\">").count(), 2 + 1 + 1, "every result image");
    assert_eq!(page.matches("<figure class=\"ref\">").count(), 1, "the reference thumbnail");
    assert!(page.contains("contentPolicyViolation"), "the error is shown");
    assert!(page.contains("seed 42") && page.contains("$0.0400") && page.contains("3:2"), "seed, cost, size");
    assert!(page.contains("Golden hour &lt;b&gt;light&lt;/b&gt;"), "prompts are escaped");
    assert!(!page.contains("http://") && !page.contains("https://"), "nothing on the network");
    // Every image the page shows is a file that exists.
    for src in page.split("src=\"file://").skip(1).map(|s| &s[..s.find('"').unwrap_or(0)]) {
        let path = src.replace("%20", " ");
        assert!(Path::new(&path).is_file(), "{path} exists");
    }

    // `runware gallery` writes the same page from the journal alone.
    std::fs::remove_file(dir.join("out/index.html")).expect("removed");
    let mut cmd = runware();
    cmd.current_dir(&dir).args(["gallery", "tasks.results.jsonl", "--out", "out"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    let again = std::fs::read_to_string(dir.join("out/index.html")).expect("rewritten");
    assert_eq!(again.matches("<article class=\"card").count(), 4);
}

/// The first Chromium on the machine.
fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a headless Chromium: .ci/run installs Debian's chromium and runs it"]
async fn a_real_browser_shows_every_card_image_and_error() {
    let browser = chromium().expect("a Chromium (apt-get install chromium)");
    let (dir, _) = batch_with_gallery("gallery-browser").await;
    let page = dir.join("out/index.html");
    let url = format!("file://{}", page.display());
    let base = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--allow-file-access-from-files",
        "--virtual-time-budget=10000",
    ];
    let dom =
        tokio::process::Command::new(&browser).args(base).arg("--dump-dom").arg(&url).output().await.expect("runs");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(dom.matches("<article class=\"card").count(), 4, "every card rendered: {dom}");
    assert_eq!(dom.matches("data-loaded=\"1\"").count(), 5, "every image loaded (4 results, 1 reference): {dom}");
    assert!(!dom.contains("data-loaded=\"0\""), "no broken image");
    assert!(dom.contains("contentPolicyViolation"), "the error is on the page");

    let shot = dir.join("gallery.png");
    let status = tokio::process::Command::new(&browser)
        .args(base)
        .arg("--window-size=1280,900")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .await
        .expect("runs");
    assert!(status.status.success(), "{status:?}");
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 20_000, "a screenshot with content: {size} bytes");
    if let Ok(keep) = std::env::var("GALLERY_SCREENSHOT") {
        std::fs::copy(&shot, keep).expect("the screenshot is kept");
    }
}
