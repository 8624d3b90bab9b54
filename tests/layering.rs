//! The layering invariant (GUIDE §1): pure protocol code never touches a socket, reads the
//! clock or draws randomness. Only `src/net/`, `src/client/`, `src/bench/` and the binary may.

use std::path::Path;

const PURE: &[&str] = &[
    "src/http1",
    "src/ws",
    "src/sse",
    "src/hub",
    "src/redis",
    "src/transport",
    "src/conn.rs",
    "src/output.rs",
    "src/metrics.rs",
];
const FORBIDDEN: &[&str] =
    &["mio", "std::net", "Instant::now", "SystemTime::now", "rand::", "std::thread", "std::fs"];

fn rust_files(path: &Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            rust_files(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
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
