//! The module graph stays layered: within the client, the protocol, the
//! emulator, the job runner and the CLI, no two modules import each other,
//! directly or through others. (The emulator's stores know nothing of
//! connections, its handlers work over the stores, and its server sits on top.
//! The CLI: parsing and settled settings at the bottom, the shared pieces above,
//! one module per command on top; no command imports another.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module name → the sibling modules it names (`super::x`, `crate::x` or
/// `crate::PREFIX::x`), for the `.rs` files directly in `dir`.
fn imports(dir: &Path, crate_prefix: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    let files: Vec<_> = std::fs::read_dir(dir)
        .expect("the source dir is readable")
        .map(|e| e.expect("a dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    let names: BTreeSet<String> =
        files.iter().map(|p| p.file_stem().expect("a file name").to_string_lossy().into_owned()).collect();
    for path in &files {
        let me = path.file_stem().expect("a file name").to_string_lossy().into_owned();
        let text = std::fs::read_to_string(path).expect("a source file is readable");
        let mut deps = BTreeSet::new();
        for prefix in ["super::".to_string(), format!("{crate_prefix}::")] {
            for (at, _) in text.match_indices(&prefix) {
                let rest = &text[at + prefix.len()..];
                let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                if name != me && names.contains(&name) {
                    deps.insert(name);
                }
            }
        }
        graph.insert(me, deps);
    }
    graph
}

/// A cycle in `graph`, if there is one, as the path that closes it.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, done, path) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(found) = visit(node, graph, &mut done, &mut Vec::new()) {
            return Some(found);
        }
    }
    None
}

fn assert_layered(dir: &str, crate_prefix: &str) {
    let graph = imports(&Path::new(env!("CARGO_MANIFEST_DIR")).join(dir), crate_prefix);
    assert!(graph.len() >= 3, "{dir} was read: {graph:?}");
    if let Some(found) = cycle(&graph) {
        panic!("modules of {dir} import each other: {}", found.join(" → "));
    }
}

#[test]
fn the_emulator_is_layered() {
    assert_layered("crates/emulator/src", "crate");
}

#[test]
fn the_client_is_layered() {
    assert_layered("src/client", "crate::client");
}

#[test]
fn the_protocol_is_layered() {
    assert_layered("src/protocol", "crate::protocol");
}

/// Module name → the top-level modules it names, for a crate whose modules are
/// files (`x.rs`) or folders (`x/mod.rs` and more files): a folder module's
/// imports are those of every file in it (`crate::y`, and `super::y` from its
/// `mod.rs`, `super::super::y` from its other files).
fn crate_imports(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let entries: Vec<_> =
        std::fs::read_dir(dir).expect("the source dir is readable").map(|e| e.expect("a dir entry").path()).collect();
    let name_of = |p: &Path| p.file_stem().expect("a file name").to_string_lossy().into_owned();
    let names: BTreeSet<String> = entries
        .iter()
        .filter(|p| p.is_dir() || p.extension().is_some_and(|x| x == "rs"))
        .map(|p| name_of(p))
        .filter(|n| n != "lib" && n != "main")
        .collect();
    let named = |text: &str, prefix: &str, deps: &mut BTreeSet<String>, me: &str| {
        for (at, _) in text.match_indices(prefix) {
            // `super::x` that is the tail of `super::super::x` is not the file's parent.
            if prefix == "super::" && text[..at].ends_with("super::") {
                continue;
            }
            let rest = &text[at + prefix.len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if name != me && names.contains(&name) {
                deps.insert(name);
            }
        }
    };
    let mut graph = BTreeMap::new();
    for me in &names {
        let mut deps = BTreeSet::new();
        let file = dir.join(format!("{me}.rs"));
        if file.exists() {
            let text = std::fs::read_to_string(&file).expect("a source file is readable");
            named(&text, "crate::", &mut deps, me);
            named(&text, "super::", &mut deps, me);
        } else {
            let mut stack = vec![dir.join(me)];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).expect("a module folder is readable") {
                    let p = e.expect("a dir entry").path();
                    if p.is_dir() {
                        stack.push(p);
                        continue;
                    }
                    let text = std::fs::read_to_string(&p).expect("a source file is readable");
                    named(&text, "crate::", &mut deps, me);
                    if d == dir.join(me) && p.file_name().is_some_and(|f| f == "mod.rs") {
                        named(&text, "super::", &mut deps, me);
                    } else {
                        named(&text, "super::super::", &mut deps, me);
                    }
                }
            }
        }
        graph.insert(me.clone(), deps);
    }
    graph
}

#[test]
fn the_cli_is_layered_and_no_command_imports_another() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/cli/src");
    let graph = crate_imports(&dir);
    assert!(graph.len() > 10 && graph.contains_key("batch") && graph.contains_key("fleet"), "{graph:?}");
    if let Some(found) = cycle(&graph) {
        panic!("modules of the CLI import each other: {}", found.join(" → "));
    }
    let commands = ["auth", "batch", "conformance", "edit", "fleet", "media", "ping", "result_cmd", "serve", "upload"];
    for c in commands {
        for d in graph.get(c).into_iter().flatten() {
            assert!(!commands.contains(&d.as_str()), "the {c} command imports the {d} command");
        }
    }
    // The bottom: parsing and settled settings import no other module but errors
    // and output.
    for bottom in ["args", "settings", "input", "output", "error"] {
        let deps = graph.get(bottom).cloned().unwrap_or_default();
        let allowed = ["error", "output", "settings", "input", "conninfo"];
        assert!(deps.iter().all(|d| allowed.contains(&d.as_str())), "{bottom} imports {deps:?}");
    }
    assert_layered("crates/cli/src/batch", "crate::batch");
    assert_layered("crates/cli/src/fleet", "crate::fleet");
}

#[test]
fn the_job_runner_is_layered() {
    assert_layered("crates/jobs/src", "crate");
    assert_layered("crates/jobs/src/store", "crate::store");
}

#[test]
fn a_cycle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["c".to_string()])),
        ("c".to_string(), BTreeSet::from(["a".to_string()])),
        ("d".to_string(), BTreeSet::new()),
    ]
    .into();
    assert_eq!(cycle(&graph), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
}
