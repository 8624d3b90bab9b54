//! The layering invariants: pure protocol code never touches a socket, reads the clock or draws
//! randomness (ARCHITECTURE.md "Layer rules"; only `src/net/`, `src/client/`, `src/bench/` and the binary may), and
//! no two source files import each other, directly or through others (ARCHITECTURE.md
//! "Layer rules").

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const PURE: &[&str] = &[
    "src/http1",
    "src/ws",
    "src/sse",
    "src/hub",
    "src/redis",
    "src/transport",
    "src/conn.rs",
    "src/fanout.rs",
    "src/output.rs",
    "src/protocol",
    "src/metrics.rs",
];
const FORBIDDEN: &[&str] =
    &["mio", "std::net", "Instant::now", "SystemTime::now", "rand::", "std::thread", "std::fs"];

fn rust_files(path: &Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            rust_files(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tests.rs") {
        // A `tests.rs` is a module's test suite moved beside it (`#[cfg(test)] mod tests;`):
        // test code, like the `#[cfg(test)]` tail of a file.
        out.push(path.to_path_buf());
    }
}

#[test]
fn pure_layers_do_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for p in PURE {
        rust_files(&root.join(p), &mut files);
    }
    assert!(files.len() > 5, "the pure folders exist");
    let mut violations = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        // Tests may use the clock to build a fake one; only the code above them counts.
        let code = text.split("#[cfg(test)]").next().unwrap();
        for (n, line) in code.lines().enumerate() {
            let line = line.split("//").next().unwrap();
            for word in FORBIDDEN {
                let hit = if *word == "mio" {
                    line.split(|c: char| !c.is_alphanumeric() && c != '_').any(|w| w == "mio")
                } else {
                    line.contains(word)
                };
                if hit {
                    violations.push(format!("{}:{}: {word}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(violations.is_empty(), "I/O in pure code:\n{}", violations.join("\n"));
}

/// The module path of a source file: `src/a/b.rs` and `src/a/b/mod.rs` are `["a", "b"]`.
fn module_of(file: &str) -> Vec<String> {
    let path = file.strip_prefix("src/").unwrap().strip_suffix(".rs").unwrap();
    let mut parts: Vec<String> = path.split('/').map(str::to_string).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// The file that defines the longest prefix of `path` (the item's own file, or its module's).
fn file_of(path: &[String], files: &BTreeSet<String>) -> Option<String> {
    (1..=path.len()).rev().find_map(|n| {
        let base = format!("src/{}", path[..n].join("/"));
        [format!("{base}.rs"), format!("{base}/mod.rs")].into_iter().find(|f| files.contains(f))
    })
}

/// Every `crate::…` and `super::…` path in `code`, expanded over `{…}` groups, as module paths
/// relative to the crate root. (`self::` re-exports from a parent and `mod` declarations are
/// how a parent owns its children, not imports.)
fn imported_paths(code: &str, me: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    for start in
        code.match_indices("crate::").map(|(i, _)| i).chain(code.match_indices("super::").map(|(i, _)| i))
    {
        if start > 0
            && (bytes[start - 1].is_ascii_alphanumeric()
                || bytes[start - 1] == b'_'
                || bytes[start - 1] == b':')
        {
            continue;
        }
        // The path runs to the first character that cannot continue it; a `{` group runs to
        // its matching `}`.
        let rest = &code[start..];
        let mut end = 0;
        let mut depth = 0;
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth > 0 => depth -= 1,
                c if depth == 0 && !(c.is_alphanumeric() || c == '_' || c == ':') => {
                    end = i;
                    break;
                }
                _ => {}
            }
            end = i + c.len_utf8();
        }
        for path in expand(&rest[..end]) {
            let mut segments: Vec<String> =
                path.split("::").map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
            let mut base: Vec<String> = Vec::new();
            if segments.first().map(String::as_str) == Some("crate") {
                segments.remove(0);
            } else {
                base = me.to_vec();
                while segments.first().map(String::as_str) == Some("super") {
                    segments.remove(0);
                    base.pop();
                }
            }
            segments.retain(|s| s != "self");
            base.extend(segments.into_iter().map(|s| s.split(" as ").next().unwrap().trim().to_string()));
            found.push(base);
        }
    }
    found
}

/// `a::{b, c::{d, e}}` as `a::b`, `a::c::d`, `a::c::e`.
fn expand(path: &str) -> Vec<String> {
    let Some(open) = path.find('{') else { return vec![path.to_string()] };
    let Some(close) = path.rfind('}') else { return vec![path[..open].to_string()] };
    let prefix = &path[..open];
    let inner = &path[open + 1..close];
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut from = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[from..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(|p| expand(&format!("{prefix}{}", p.trim())))
        .collect()
}

/// The file-level import graph of `src/` (test modules and comments left out).
fn import_graph(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut paths = Vec::new();
    rust_files(&root.join("src"), &mut paths);
    let name = |p: &PathBuf| p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
    let files: BTreeSet<String> = paths.iter().map(name).collect();
    let mut graph = BTreeMap::new();
    for path in &paths {
        let file = name(path);
        let text = std::fs::read_to_string(path).unwrap();
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap()
            .lines()
            .map(|l| l.split("//").next().unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let me = module_of(&file);
        let edges = imported_paths(&code, &me)
            .iter()
            .filter_map(|p| file_of(p, &files))
            .filter(|f| *f != file)
            .collect();
        graph.insert(file, edges);
    }
    graph
}

#[test]
fn no_file_imports_itself_through_others() {
    let graph = import_graph(Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(graph.len() > 50, "the source files are found");
    assert!(
        graph["src/config.rs"].contains("src/net/limits.rs"),
        "the graph sees imports: {:?}",
        graph["src/config.rs"]
    );
    // A circle exists when a file reaches itself; report each file on one.
    let mut on_circle = Vec::new();
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = graph[start].iter().collect();
        while let Some(file) = stack.pop() {
            if file == start {
                on_circle.push(format!("{start} -> {:?}", graph[start]));
                break;
            }
            if seen.insert(file) {
                stack.extend(graph.get(file).into_iter().flatten());
            }
        }
    }
    assert!(on_circle.is_empty(), "import circles:\n{}", on_circle.join("\n"));
}

#[test]
fn the_import_scanner_expands_groups_and_super() {
    let me = vec!["transport".to_string(), "sse".to_string()];
    let paths =
        imported_paths("use crate::hub::{Cursor, message::{Message, Payload}};\nuse super::feed::Feed;", &me);
    let text: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        text,
        ["hub::Cursor", "hub::message::Message", "hub::message::Payload", "transport::feed::Feed"]
    );
}
