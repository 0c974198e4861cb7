//! `runware auth login|status|logout` and `config.toml`: the stored key, its file's
//! permissions, the masking, and the precedence flags > environment > file.

mod cli_support;

use cli_support::*;
use serde_json::{Value, json};
use std::path::Path;

fn in_config(dir: &Path) -> tokio::process::Command {
    let mut cmd = runware();
    cmd.env("RUNWARE_CONFIG_DIR", dir);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_stores_the_key_owner_only_status_masks_it_and_later_commands_use_it() {
    let emu = emulator(fast()).await;
    let dir = scratch("auth");
    let config = dir.join("config");
    let credentials = config.join("credentials");

    // A key the server refuses is not stored.
    let mut cmd = in_config(&config);
    cmd.args(["--url", &emu.ws_url(), "auth", "login"]);
    let refused = exec_with_stdin(cmd, "not-the-key\n").await;
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(!credentials.exists(), "a refused key is not stored");

    // The right key, from stdin, checked with a round trip and stored 0600.
    let mut cmd = in_config(&config);
    cmd.args(["--url", &emu.ws_url(), "auth", "login"]);
    let login = exec_with_stdin(cmd, &format!("{KEY}\n")).await;
    assert_eq!(login.code, 0, "{login:?}");
    assert_eq!(std::fs::read_to_string(&credentials).expect("stored").trim(), KEY);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&credentials).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key file is the owner's only: {mode:o}");
    }

    // status: masked (exec_with_stdin checks the key itself never shows).
    let mut cmd = in_config(&config);
    cmd.args(["auth", "status", "--json"]);
    let status = exec_with_stdin(cmd, "").await;
    assert_eq!(status.code, 0, "{status:?}");
    let report: Value = serde_json::from_str(status.stdout.trim()).expect("json");
    assert_eq!(report["keySource"], "the stored key", "{report}");
    assert!(report["key"].as_str().is_some_and(|k| k.starts_with("********")), "{report}");
    assert_eq!(report["endpoint"], "wss://ws-api.runware.ai/v1", "{report}");

    // config.toml gives the URL, the output folder and the concurrency; no flag, no
    // environment: the stored key authenticates (the emulator knows only KEY).
    let out = dir.join("from-config");
    std::fs::write(
        config.join("config.toml"),
        format!("url = \"{}\"\nout = \"{}\"\nconcurrency = 2\n", emu.ws_url(), out.display()),
    )
    .unwrap();
    let input = dir.join("tasks.jsonl");
    let lines: Vec<Value> = (0..3)
        .map(|i| json!({"positivePrompt": format!("Make it snow, take {i}"), "width": 1024, "height": 1024}))
        .collect();
    write_jsonl(&input, &lines);
    let mut cmd = in_config(&config);
    cmd.args(["batch", input.to_str().unwrap(), "--json"]);
    let batch = exec_with_stdin(cmd, "").await;
    assert_eq!(batch.code, 0, "{batch:?}");
    assert!(!batch.stderr.contains("embedded"), "the stored key, not the embedded emulator: {}", batch.stderr);
    let images = std::fs::read_dir(&out).expect("config.toml's out was used").count();
    assert_eq!(images, 3, "one image per line in {}", out.display());
    assert!(emu.stats().max_outstanding <= 2, "config.toml's concurrency: {:?}", emu.stats());

    // Precedence: the environment beats the file, a flag beats the environment.
    let dead = format!(
        "ws://127.0.0.1:{}/v1",
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    let mut cmd = in_config(&config);
    cmd.env("RUNWARE_URL", &dead).args(["--connect-timeout", "1s", "ping", "-n", "1"]);
    let env_wins = exec_with_stdin(cmd, "").await;
    assert_eq!(env_wins.code, 3, "RUNWARE_URL over config.toml: {env_wins:?}");
    let mut cmd = in_config(&config);
    cmd.env("RUNWARE_URL", &dead).args(["--url", &emu.ws_url(), "ping", "-n", "1"]);
    let flag_wins = exec_with_stdin(cmd, "").await;
    assert_eq!(flag_wins.code, 0, "--url over RUNWARE_URL: {flag_wins:?}");
    let mut cmd = in_config(&config);
    cmd.args([
        "batch",
        input.to_str().unwrap(),
        "--fresh",
        "--concurrency",
        "1",
        "--out",
        dir.join("flag").to_str().unwrap(),
    ]);
    let flag_out = exec_with_stdin(cmd, "").await;
    assert_eq!(flag_out.code, 0, "{flag_out:?}");
    assert_eq!(std::fs::read_dir(dir.join("flag")).expect("--out over config.toml").count(), 3);

    // logout removes it; the URL from config.toml then has no key.
    let mut cmd = in_config(&config);
    cmd.args(["auth", "logout"]);
    let logout = exec_with_stdin(cmd, "").await;
    assert_eq!(logout.code, 0, "{logout:?}");
    assert!(!credentials.exists());
    let mut cmd = in_config(&config);
    cmd.args(["ping"]);
    let no_key = exec_with_stdin(cmd, "").await;
    assert_eq!(no_key.code, 2, "{no_key:?}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_file_names_the_file_and_the_field() {
    let config = scratch("auth-bad");
    std::fs::write(config.join("config.toml"), "concurency = 3\n").unwrap();
    let mut cmd = in_config(&config);
    cmd.args(["auth", "status"]);
    let run = exec_with_stdin(cmd, "").await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("config.toml") && run.stderr.contains("concurency"), "{}", run.stderr);
    // An empty key is refused before any connection.
    let config = scratch("auth-empty");
    let mut cmd = in_config(&config);
    cmd.args(["--url", "ws://127.0.0.1:9/v1", "auth", "login"]);
    let empty = exec_with_stdin(cmd, "\n").await;
    assert_eq!(empty.code, 2, "{empty:?}");
    assert!(empty.stderr.contains("empty"), "{}", empty.stderr);
}
