//! The crate's layers, checked: every module of the library imports only
//! from its own layer or from lower ones, the top-level modules form no
//! cycle, library code names items by their module (never through lib.rs's
//! re-exports), and the command-line files form no cycle among themselves.
//!
//! The layers are the folders of `src/` (README, "Architecture"), from the
//! bottom up. A module of a layer may use the modules of every lower layer
//! and the other files of its own folder, never a higher layer and never a
//! sibling of the same height (`daemon` and `server` know nothing of each
//! other). The check reads the source as text: every `crate::NAME` outside
//! comments is an import of the top-level module `NAME`, and `super::super`
//! is refused so that no path can climb out of a folder unseen.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The top-level modules of the library and their heights.
const LAYERS: &[(&str, u32)] = &[
    // The vocabulary every layer speaks, errors included.
    ("id", 0),
    // The error type, and a mutex helper.
    ("error", 1),
    ("sync", 1),
    // Parsing of times and sizes users write; child processes without secrets.
    ("timespec", 2),
    ("secrets", 2),
    // Pure encoders and decoders, and crypto: no I/O.
    ("format", 3),
    // Bytes by name; may use format's codec for its own bookkeeping.
    ("storage", 4),
    // An open repository.
    ("repo", 5),
    // The operations.
    ("ops", 6),
    // Applications and databases.
    ("apps", 7),
    // The two long-running callers of the library.
    ("daemon", 8),
    ("server", 8),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The lines of `text` with comments left out (line comments and doc
/// comments: a doc link is not an import), numbered from 1.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut in_block = false;
    text.lines().enumerate().filter_map(move |(n, line)| {
        let t = line.trim_start();
        if in_block {
            if t.contains("*/") {
                in_block = false;
            }
            return None;
        }
        if t.starts_with("/*") {
            in_block = !t.contains("*/");
            return None;
        }
        if t.starts_with("//") {
            return None;
        }
        // A trailing comment, unless `//` is inside a string on this line.
        let code = match line.find("//") {
            Some(at) if line[..at].matches('"').count() % 2 == 0 => &line[..at],
            _ => line,
        };
        Some((n + 1, code))
    })
}

/// The identifiers right after each `crate::` in `code`: a name, or each
/// first name of a `crate::{a::X, b}` group.
fn crate_names(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            let mut depth = 0;
            let mut item = String::new();
            for c in group[..end].chars().chain(std::iter::once(',')) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let first: String = item
                            .trim()
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        if !first.is_empty() {
                            names.push(first);
                        }
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.push(name);
            }
        }
    }
    names
}

/// The top-level module a library file belongs to: `src/ops/backup/mod.rs`
/// is `ops`, `src/error.rs` is `error`.
fn top_module(file: &Path) -> String {
    let rel = file.strip_prefix(src()).expect("under src/");
    let first = rel.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_owned()
}

#[test]
fn modules_import_only_from_their_own_layer_or_below() {
    let height: BTreeMap<&str, u32> = LAYERS.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut problems = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(src()).expect("under src/").to_owned();
        let top = top_module(file);
        // lib.rs is the front page and re-exports from every layer;
        // main.rs and cli/ are the binary, which sees only `cairn::`.
        if top == "lib" || top == "main" || top == "cli" {
            continue;
        }
        let Some(&own) = height.get(top.as_str()) else {
            problems.push(format!(
                "src/{}: the top-level module `{top}` has no layer: add it to LAYERS in tests/integration/layers.rs and to the README's Architecture section",
                rel.display()
            ));
            continue;
        };
        let text = fs::read_to_string(file).expect("source file");
        for (line, code) in code_lines(&text) {
            if code.contains("super::super") {
                problems.push(format!(
                    "src/{}:{line}: `super::super` climbs out of a folder; name the item with `crate::`",
                    rel.display()
                ));
            }
            for name in crate_names(code) {
                if name == top {
                    continue;
                }
                match height.get(name.as_str()) {
                    Some(&h) => {
                        edges.entry(top.clone()).or_default().insert(name.clone());
                        if h >= own {
                            problems.push(format!(
                                "src/{}:{line}: `{top}` (layer {own}) imports `crate::{name}` (layer {h}): {}",
                                rel.display(),
                                if h == own {
                                    "modules of the same layer do not use each other"
                                } else {
                                    "a lower layer must not use a higher one"
                                }
                            ));
                        }
                    }
                    None => problems.push(format!(
                        "src/{}:{line}: `crate::{name}` goes through lib.rs's re-exports: name it by its module",
                        rel.display()
                    )),
                }
            }
        }
    }
    for cycle in cycles(&edges, &BTreeSet::new()) {
        problems.push(format!(
            "top-level modules in a cycle: {}",
            cycle.join(", ")
        ));
    }
    assert!(
        problems.is_empty(),
        "{} layering problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The groups of modules that import each other in a circle (strongly
/// connected components of more than one module), leaving out `skip`.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>, skip: &BTreeSet<String>) -> Vec<Vec<String>> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_owned()];
        while let Some(m) = stack.pop() {
            for next in edges.get(&m).into_iter().flatten() {
                if !skip.contains(next) && seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let mut groups: BTreeSet<Vec<String>> = BTreeSet::new();
    for m in edges.keys().filter(|m| !skip.contains(*m)) {
        let from_m = reach(m);
        let group: Vec<String> = from_m
            .iter()
            .filter(|other| reach(other).contains(m))
            .cloned()
            .collect();
        if group.len() > 1 {
            groups.insert(group);
        }
    }
    groups.into_iter().collect()
}

#[test]
fn the_command_line_files_form_no_cycle() {
    let dir = src().join("cli");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    let name_of = |p: &Path| {
        p.strip_prefix(&dir)
            .expect("under src/cli")
            .with_extension("")
            .to_string_lossy()
            .replace('/', "::")
    };
    let modules: BTreeSet<String> = files.iter().map(|f| name_of(f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let me = name_of(file);
        let text = fs::read_to_string(file).expect("source file");
        for (_, code) in code_lines(&text) {
            for prefix in ["crate::cli::", "super::"] {
                let mut rest = code;
                while let Some(at) = rest.find(prefix) {
                    rest = &rest[at + prefix.len()..];
                    let mut targets = Vec::new();
                    if let Some(group) = rest.strip_prefix('{') {
                        let end = group.find('}').unwrap_or(group.len());
                        targets.extend(group[..end].split(',').map(|s| {
                            s.trim()
                                .chars()
                                .take_while(|c| c.is_alphanumeric() || *c == '_')
                                .collect::<String>()
                        }));
                    } else {
                        targets.push(
                            rest.chars()
                                .take_while(|c| c.is_alphanumeric() || *c == '_')
                                .collect(),
                        );
                    }
                    for t in targets {
                        // `super::X` from mod.rs's children: X is a sibling
                        // file when one has that name, else an item of mod.rs.
                        let to = if modules.contains(&t) {
                            t
                        } else {
                            "mod".to_owned()
                        };
                        if to != me {
                            edges.entry(me.clone()).or_default().insert(to);
                        }
                    }
                }
            }
        }
    }
    // mod.rs declares and dispatches to every command, and the commands
    // use the items it defines: it is the top of the graph, and a circle
    // through it is not one among the command files.
    let top = BTreeSet::from(["mod".to_owned()]);
    let problems: Vec<String> = cycles(&edges, &top)
        .into_iter()
        .map(|c| format!("files in a cycle in src/cli: {}", c.join(", ")))
        .collect();
    assert!(
        problems.is_empty(),
        "the command-line files import each other in a circle:\n{}",
        problems.join("\n")
    );
}
