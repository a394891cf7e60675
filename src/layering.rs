//! The crate's dependencies run one way: webhook -> kinds -> runtime -> shared, and
//! among the kinds none is used by a kind it uses (no cycle). Read from the source:
//! every `crate::` path of every file (tests included) says which unit it uses.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A unit: a layer, or one kind (`kinds::<name>`).
fn unit_of(file: &Path, src: &Path) -> Option<String> {
    let rel: Vec<String> = file.strip_prefix(src).ok()?.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    match rel.first()?.as_str() {
        "kinds" if rel.len() > 2 => Some(format!("kinds::{}", rel[1])),
        "kinds" => Some("kinds".into()),
        layer @ ("shared" | "runtime" | "webhook") => Some(layer.into()),
        "layering.rs" => None,
        other => Some(other.trim_end_matches(".rs").into()),
    }
}

/// A unit's layer: it may use units of its own or a lower layer only.
fn rank(unit: &str) -> usize {
    match unit.split("::").next().unwrap_or(unit) {
        "shared" => 0,
        "runtime" => 1,
        "kinds" => 2,
        "webhook" => 3,
        _ => 4,
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The items of a `{...}` group (`text` starts after its `{`), split at its own
/// commas only, up to its closing brace.
fn group_items(text: &str) -> Vec<&str> {
    let (mut depth, mut start, mut items) = (0usize, 0usize, Vec::new());
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(text[start..i].trim());
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    items
}

fn segment(s: &str) -> String {
    s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
}

/// The unit a path below `crate::` names (`kinds::oidc::X` names `kinds::oidc`).
fn units_of_path(path: &str, used: &mut BTreeSet<String>) {
    if let Some(group) = path.strip_prefix('{') {
        group_items(group).into_iter().for_each(|item| units_of_path(item, used));
        return;
    }
    let first = segment(path);
    if first == "kinds" {
        let rest = path.strip_prefix("kinds::").unwrap_or("");
        if let Some(group) = rest.strip_prefix('{') {
            for item in group_items(group) {
                let kind = segment(item);
                if !kind.is_empty() && kind != "self" {
                    used.insert(format!("kinds::{kind}"));
                }
            }
        } else {
            let kind = segment(rest);
            used.insert(if kind.is_empty() { "kinds".into() } else { format!("kinds::{kind}") });
        }
    } else if !first.is_empty() {
        used.insert(first);
    }
}

/// The units `text` names through `crate::` paths, grouped imports included.
fn used_units(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        units_of_path(&text[i + "crate::".len()..], &mut used);
    }
    used
}

/// Unit -> the units it uses.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(unit) = unit_of(&file, &src) else { continue };
        let text = std::fs::read_to_string(&file).unwrap();
        let used: Vec<String> = used_units(&text).into_iter().filter(|u| *u != unit).collect();
        graph.entry(unit).or_default().extend(used);
    }
    graph
}

/// A cycle through `from`, if any, as the units on it.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        at: &str,
        target: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == target {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, next, target, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![from.to_string()];
    walk(graph, from, from, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn dependencies_run_one_way_and_form_no_cycle() {
    let graph = graph();
    for (unit, used) in &graph {
        println!("{unit} -> {}", used.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    assert!(graph.contains_key("kinds::mcpserver") && graph.contains_key("runtime"), "the layout is read: {graph:?}");
    for (unit, used) in &graph {
        for other in used {
            assert!(rank(other) <= rank(unit), "{unit} uses {other}, a layer above it");
        }
        if let Some(cycle) = cycle(&graph, unit) {
            panic!("a dependency cycle: {} -> {unit}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_check_sees_grouped_imports_and_finds_cycles() {
    let used = used_units("use crate::kinds::{oidc::{X, Z}, mcpserver::api::Y};\nuse crate::{runtime::cache, shared::refs};");
    assert_eq!(used.into_iter().collect::<Vec<_>>(), ["kinds::mcpserver", "kinds::oidc", "runtime", "shared"]);
    let graph: BTreeMap<String, BTreeSet<String>> =
        [("a", "b"), ("b", "c"), ("c", "a")].into_iter().map(|(from, to)| (from.to_string(), BTreeSet::from([to.to_string()]))).collect();
    assert_eq!(cycle(&graph, "a"), Some(vec!["a".into(), "b".into(), "c".into()]));
    assert_eq!(rank("kinds::oidc"), 2);
}

/// No source file grows past what one reader holds in mind.
#[test]
fn no_source_file_is_over_600_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            // Tests beside the code do not count.
            let code = text.split("\n#[cfg(test)]").next().unwrap_or(&text);
            let lines = code.lines().count();
            (lines > 600).then(|| format!("{} ({lines})", f.strip_prefix(&src).unwrap().display()))
        })
        .collect();
    assert!(long.is_empty(), "over 600 lines of code: {long:?}");
}
