#!/usr/bin/env bash
# Runs every test: unit, spec-vector, scripted-conversation, loopback end-to-end and layering
# tests, and compiles the benchmarks. This is the README's test command; .ci/run calls it after
# installing system packages and checking formatting and lints.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-interop.sh   # the interop tests' peers (Python websockets, Node ws); quick when present
cargo build --locked --release --bin pushwire
cargo test --locked --all-targets
cargo test --locked --doc
cargo bench --locked --no-run
