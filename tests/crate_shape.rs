//! What a library user builds: a fresh project that depends on `runware-ws` with
//! its default features gets the client and protocol only — none of the CLI's or
//! the emulator's dependencies.

use std::path::Path;
use std::process::Command;

/// Crates that belong to the CLI or the emulator, never to the library.
const NOT_IN_THE_LIBRARY: [&str; 7] =
    ["clap", "indicatif", "axum", "image", "reqwest", "runware-emulator", "tracing-subscriber"];

#[test]
fn a_fresh_project_gets_no_cli_or_emulator_dependency() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let project = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fresh-user-{}", std::process::id()));
    std::fs::create_dir_all(project.join("src")).expect("a scratch project");
    let manifest = format!(
        "[package]\nname = \"fresh-user\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\n\
         [dependencies]\nrunware-ws = {{ path = {:?} }}\n\n\
         # Its own workspace, not the one it sits in.\n[workspace]\n",
        root.display().to_string()
    );
    std::fs::write(project.join("Cargo.toml"), manifest).expect("the manifest");
    std::fs::write(project.join("src/main.rs"), "fn main() {}\n").expect("main.rs");
    // The workspace's lock file pins the versions already in the local cache.
    std::fs::copy(root.join("Cargo.lock"), project.join("Cargo.lock")).expect("the lock file");

    let out = Command::new(env!("CARGO"))
        .args(["tree", "-e", "normal", "--prefix", "none", "--offline"])
        .current_dir(&project)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("cargo runs");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let names: Vec<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(names.contains(&"runware-ws") && names.contains(&"tokio"), "the tree lists the library:\n{tree}");
    for name in NOT_IN_THE_LIBRARY {
        assert!(!names.contains(&name), "{name} is in a library user's build:\n{tree}");
    }
    let _ = std::fs::remove_dir_all(&project);
}
