//! Replays the fuzz seeds (`fuzz/seeds/<target>/`) and the minimized crashes the fuzzer found
//! (`fuzz/regressions/<target>/`) through the harnesses of `pushwire::fuzzing`, on the stable
//! toolchain, so every property the fuzz targets assert is checked by `cargo test` too.

use std::path::Path;

use pushwire::fuzzing;

/// A harness: panics when a property breaks on its input.
type Harness = fn(&[u8]);

/// Every fuzz target and the harness it calls.
const TARGETS: &[(&str, Harness)] = &[
    ("ws_frame_header", fuzzing::ws_frame_header),
    ("ws_conn_server", fuzzing::ws_conn_server),
    ("ws_conn_client", fuzzing::ws_conn_client),
    ("ws_handshake", fuzzing::ws_handshake),
    ("http_head", fuzzing::http_head),
    ("chunked_decode", fuzzing::chunked_decode),
    ("response_body", fuzzing::response_body),
    ("sse_parse", fuzzing::sse_parse),
    ("cursor_parse", fuzzing::cursor_parse),
    ("hub_ops", fuzzing::hub_ops),
    ("conn_server", fuzzing::conn_server),
    ("composite_cursor", fuzzing::composite_cursor),
    ("v1_command", fuzzing::v1_command),
    ("rooms_request", fuzzing::rooms_request),
    ("resp_decode", fuzzing::resp_decode),
    ("redis_frame", fuzzing::redis_frame),
    ("redis_control", fuzzing::redis_control),
    ("ws_inflate", fuzzing::ws_inflate),
    ("ws_extensions", fuzzing::ws_extensions),
    ("envelope", fuzzing::envelope),
    ("token_verify", fuzzing::token_verify),
    ("api_call", fuzzing::api_call),
];

/// Runs every file under `fuzz/<kind>/<target>/` through its harness; returns how many ran.
fn replay(kind: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(kind);
    let mut count = 0;
    let mut failures = Vec::new();
    for (target, harness) in TARGETS {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else { continue };
        let mut paths: Vec<_> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
        paths.sort();
        for path in paths {
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| harness(&data));
            if outcome.is_err() {
                failures.push(format!("{target}: {}", path.display()));
            }
            count += 1;
        }
    }
    assert!(failures.is_empty(), "properties broken on:\n{}", failures.join("\n"));
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries {
            let name = entry.unwrap().file_name();
            let name = name.to_string_lossy();
            assert!(TARGETS.iter().any(|(t, _)| *t == name), "fuzz/{kind}/{name} is not a target");
        }
    }
    count
}

#[test]
fn fuzz_seeds_pass_every_property() {
    let count = replay("seeds");
    assert!(count >= TARGETS.len(), "every target has seeds ({count} files)");
}

#[test]
fn fuzz_regressions_stay_fixed() {
    replay("regressions");
}
