#!/usr/bin/env bash
# Rooms alone (issue #13's performance items): the `rooms` part of benches/compare.sh, with what
# is already built (`cargo build --release` first; SKIP_INSTALL=1 unless set). compare.sh's
# header says what it runs; its environment applies (SUBSCRIBERS, THREADS, ROOMS_K,
# ROOMS_CHANNELS, ROOMS_MESSAGES, OUT_DIR). The table ends with the rooms runs against the
# one-channel run of the same server and the bytes per idle subscription beyond the first.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[[ -x "${PUSHWIRE:-$ROOT/target/release/pushwire}" ]] || {
    echo "rooms.sh: ${PUSHWIRE:-$ROOT/target/release/pushwire} is missing: cargo build --release" >&2
    exit 1
}
exec env SKIP_INSTALL="${SKIP_INSTALL:-1}" bash "$ROOT/benches/compare.sh" rooms
