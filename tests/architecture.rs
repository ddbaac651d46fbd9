//! The layout of `src/` as `ARCHITECTURE.md` draws it: imports flow one way, from the layers
//! above to the layers below, and no files import each other in a circle.
//!
//! Read from the source text: every `crate::…` path and every `use super::…` of a file, with
//! comments left out, resolved to the file that defines the module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crate's top-level modules, lowest layer first. A module may import from its own layer
/// and the ones below, never from above.
const LAYERS: &[&[&str]] = &[
    &["time_bounds", "predicate_fixes", "properties"],
    &["format"],
    &["error"],
    &["lake"],
    &["provider", "recorder", "metadata_tables", "lints"],
    &["spans", "thread_spans"],
    &["codec", "timeline"],
    &["udtf"],
    &["distributed", "ballista", "server"],
    &["lib"],
];

fn layer(top: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&top))
        .unwrap_or_else(|| panic!("module `{top}` has no layer in tests/architecture.rs"))
}

/// The module path of a source file: `src/provider/planning/mod.rs` → `provider::planning`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts == ["lib"] {
        return vec![];
    }
    parts
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "bin") {
                sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments (line comments, doc comments).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths a file refers to: `crate::a::b` anywhere, `super::x` and
/// `super::{x, y::z}` (first names only) in its code.
fn references(module: &[String], text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let ident = |s: &str| -> Vec<String> {
        let mut path = Vec::new();
        for part in s.split("::") {
            let name: String = part
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if name.is_empty() || name.chars().next().is_some_and(char::is_uppercase) {
                break;
            }
            path.push(name);
            if !part.chars().all(|c| c.is_alphanumeric() || c == '_') {
                break;
            }
        }
        path
    };
    for (i, _) in text.match_indices("crate::") {
        if text[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // `some_crate::`
        }
        out.push(ident(&text[i + "crate::".len()..]));
    }
    for (i, _) in text.match_indices("super::") {
        if text[..i].ends_with("::") {
            continue; // `super::super::` is read from the first one
        }
        let mut base: Vec<String> = module.to_vec();
        let mut rest = &text[i..];
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        let names: Vec<Vec<String>> = match rest.strip_prefix('{') {
            Some(group) => group
                .split('}')
                .next()
                .unwrap_or_default()
                .split(',')
                .map(|n| ident(n.trim()))
                .collect(),
            None => vec![ident(rest)],
        };
        for name in names {
            let mut path = base.clone();
            path.extend(name);
            out.push(path);
        }
    }
    out
}

#[test]
fn imports_flow_down_the_layers_without_circles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|f| (module_of(&src, f), f.clone()))
        .collect();
    assert!(modules.len() > 40, "read {} files", modules.len());
    // The longest module path that is a file: `provider::planning::ScanState` → provider::planning.
    let resolve = |path: &[String]| -> Option<Vec<String>> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| modules.contains_key(p))
    };
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    let mut upward = Vec::new();
    let mut edges = 0;
    for (module, file) in &modules {
        let text = code(&std::fs::read_to_string(file).unwrap());
        let top = module.first().map_or("lib", String::as_str);
        for target in references(module, &text) {
            let Some(target) = resolve(&target) else {
                continue; // a name re-exported at the crate root, such as `crate::Result`
            };
            if &target == module || module.starts_with(&target) {
                continue; // itself, or its own parent module's re-exports
            }
            let target_top = target.first().map_or("lib", String::as_str);
            if target_top != top && layer(target_top) > layer(top) {
                upward.push(format!("{} -> {}", module.join("::"), target.join("::")));
            }
            edges += 1;
            graph.entry(module.clone()).or_default().insert(target);
        }
    }
    assert!(edges > 100, "read only {edges} imports");
    assert!(
        upward.is_empty(),
        "imports running up the layers: {upward:#?}"
    );

    // Circles between files: a depth-first search for a back edge.
    fn visit(
        node: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
        circles: &mut Vec<String>,
    ) {
        state.insert(node.clone(), 1);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next) {
                Some(1) => {
                    let start = stack.iter().position(|n| n == next).unwrap_or(0);
                    let names: Vec<String> = stack[start..].iter().map(|n| n.join("::")).collect();
                    circles.push(format!("{} -> {}", names.join(" -> "), next.join("::")));
                }
                Some(_) => {}
                None => visit(next, graph, state, stack, circles),
            }
        }
        stack.pop();
        state.insert(node.clone(), 2);
    }
    let (mut state, mut circles) = (BTreeMap::new(), Vec::new());
    for node in graph.keys() {
        if !state.contains_key(node) {
            visit(node, &graph, &mut state, &mut Vec::new(), &mut circles);
        }
    }
    assert!(
        circles.is_empty(),
        "files importing each other: {circles:#?}"
    );
}

#[test]
fn the_reader_finds_what_it_checks() {
    // `references` on a fabricated file: the check above is only as good as this reader.
    let module = vec!["provider".to_string(), "exec".to_string()];
    let text = code(
        "use super::planning::{Partitions, ScanState};\nuse super::{runtime::ScanRuntime, stream};\n\
         use crate::format::Column; // crate::udtf is only in a comment\nlet x = crate::lake::Lake::open;",
    );
    let found: BTreeSet<String> = references(&module, &text)
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    let want: BTreeSet<String> = [
        "provider::planning",
        "provider::runtime",
        "provider::stream",
        "format",
        "lake",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(found, want);
}
