//! The module graph stays layered: within the client, the protocol and the
//! emulator, no two modules import each other, directly or through others. (The
//! emulator's stores know nothing of connections, its handlers work over the
//! stores, and its server sits on top.)

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
    assert!(graph.len() > 5, "{dir} was read: {graph:?}");
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
