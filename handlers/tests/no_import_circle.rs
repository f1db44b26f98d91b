//! No import circle inside the crate: the `use crate::…` and `use super::…` lines of every source file, resolved to
//! the files they name, form a graph without cycles. A module's own `mod.rs` is left out as a target (children
//! read their parent's constants, and a parent re-exports its children: that is one module, not a circle).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file (`lifecycle/vault.rs` → `["lifecycle", "vault"]`; `lifecycle/mod.rs` →
/// `["lifecycle"]`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    // `bin/<name>.rs` are crates of their own: keep them apart from the library's modules.
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The longest prefix of `path` that is a module file of the crate.
fn resolve(files: &BTreeMap<Vec<String>, PathBuf>, path: &[String]) -> Option<Vec<String>> {
    (1..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| files.contains_key(p))
}

#[test]
fn the_crates_files_import_each_other_without_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    let files: BTreeMap<Vec<String>, PathBuf> = paths.iter().map(|p| (module_of(&src, p), p.clone())).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path).unwrap();
        // A file's tests may import what they like; the crate's structure is in the code above them.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for line in code.lines().map(str::trim).filter(|l| l.starts_with("use ") || l.starts_with("pub use ")) {
            let target = line.trim_start_matches("pub ").trim_start_matches("use ");
            let mut resolved: Vec<String> = if let Some(rest) = target.strip_prefix("crate::") {
                rest.split("::").map(str::to_string).collect()
            } else if let Some(rest) = target.strip_prefix("super::") {
                // `super` is the parent of the file's module, whether the file is `a/b.rs` or `a/b/mod.rs`.
                let mut base = module[..module.len().saturating_sub(1)].to_vec();
                base.extend(rest.split("::").map(str::to_string));
                base
            } else {
                continue;
            };
            resolved.retain(|s| !s.starts_with('{'));
            let Some(to) = resolve(&files, &resolved) else { continue };
            let is_own_parent = module.starts_with(&to) && files[&to].file_name().is_some_and(|n| n == "mod.rs");
            if to != *module && !to.is_empty() && !is_own_parent {
                edges.entry(module.clone()).or_default().insert(to);
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        node: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) {
        if done.contains(node) {
            return;
        }
        if let Some(at) = stack.iter().position(|n| n == node) {
            let cycle: Vec<String> = stack[at..].iter().chain([node]).map(|m| m.join("::")).collect();
            panic!("import circle: {}", cycle.join(" → "));
        }
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, stack, done);
        }
        stack.pop();
        done.insert(node.clone());
    }
    let mut done = BTreeSet::new();
    for module in files.keys() {
        visit(module, &edges, &mut Vec::new(), &mut done);
    }
    assert!(edges.values().map(BTreeSet::len).sum::<usize>() > 30, "the imports were read: {edges:?}");
}
