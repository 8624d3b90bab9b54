#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 30), starting from the
# committed seeds (fuzz/seeds/<target>/, copied into the scratch corpus fuzz/corpus/<target>/,
# which is not committed). Installs the nightly toolchain and cargo-fuzz if missing. Exits
# non-zero if any target finds a crash or a broken property; the input is left in
# fuzz/artifacts/<target>/ (minimize it with `cargo +nightly fuzz tmin <target> <file>` and
# commit it under fuzz/regressions/<target>/, which tests/fuzz_regressions.rs replays).
#
# Usage: bash scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
shift || true

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "== installing the nightly toolchain (cargo-fuzz needs it for sanitizer flags)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

targets=("$@")
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

echo "== building ${#targets[@]} fuzz targets"
start=$(date +%s)
cargo +nightly fuzz build
echo "   built in $(($(date +%s) - start)) s"

failed=()
for target in "${targets[@]}"; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  if [[ -d "fuzz/seeds/$target" ]]; then
    cp -n "fuzz/seeds/$target"/* "$corpus"/ 2>/dev/null || true
  fi
  echo "== fuzzing $target for $seconds s"
  # -max_len: inputs up to 8 KiB (limits inside the harnesses are small); -timeout: one input
  # taking over 10 s is a hang; -rss_limit_mb: memory is bounded.
  if ! cargo +nightly fuzz run "$target" "$corpus" -- \
      -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=1024 \
      -print_final_stats=1 2>"fuzz/$target.log"; then
    tail -n 60 "fuzz/$target.log"
    failed+=("$target")
  else
    grep -E "^stat::number_of_executed_units|^Done" "fuzz/$target.log" || true
  fi
done

echo "== fuzzing took $(($(date +%s) - start)) s"
if ((${#failed[@]})); then
  echo "fuzz targets that failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "no crashes"
