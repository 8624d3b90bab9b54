#!/usr/bin/env bash
# Runs every test: unit, spec-vector, scripted-conversation, loopback end-to-end and layering
# tests, compiles the benchmarks, then runs the browser tests (Chromium driving the demo page and
# pushwire.js; scripts/setup-browser.sh installs their npm dependency once). This is the README's
# test command; .ci/run calls it after installing system packages and checking formatting and
# lints. Last, the Autobahn|Testsuite in both roles (scripts/autobahn.sh, about 7 minutes on 2
# cores), failing on any FAILED, NON-STRICT, UNIMPLEMENTED or MISSING case.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-interop.sh   # the interop tests' peers (Python websockets, Node ws); quick when present
bash scripts/setup-browser.sh   # playwright-core for the browser tests; checks that Chromium is installed
# tests/redis_*.rs start their own redis-server (Debian's package, Redis 7; .ci/run installs it).
if ! command -v redis-server >/dev/null; then
  echo "redis-server is missing: apt-get install redis-server" >&2
  exit 1
fi
cargo build --locked --release --bin pushwire
cargo test --locked --all-targets
cargo test --locked --doc
cargo bench --locked --no-run

# The browser tests start target/debug/pushwire themselves; they fail if Chromium or
# tests/browser/node_modules is missing.
cargo build --locked --bin pushwire
(cd tests/browser && node --test --test-concurrency=1 browser.test.mjs)

# Both roles of the Autobahn|Testsuite at once; prints the report paths.
bash scripts/autobahn.sh
