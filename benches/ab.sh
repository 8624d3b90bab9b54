#!/usr/bin/env bash
# pushwire at two revisions, side by side: `bash benches/ab.sh` (BASE=main against the work tree).
#
# Builds a release binary of BASE (a git revision, checked out in a temporary worktree) and one
# of the work tree, sharing one target directory so the dependencies build once, then runs the
# same `pushwire bench` cases against each, alternating A, B, A, B for ROUNDS rounds so a burst
# of load from other jobs falls on one round rather than on one revision:
#
#   echo-32      C=100 WebSocket connections, W=8 in flight, 32 B, ECHO_SECONDS
#   fanout-ws    SUBSCRIBERS WebSocket subscribers, FANOUT_MESSAGES x 64 B back to back
#
# and reports for each case and revision the median over the rounds of the server's CPU time
# (user + system, all threads; proc(5) fields 14 and 15) per message (echoed, or delivered), the
# rate, and the ratio B/A. Raw JSON lines go to target/ab/RUN/results.jsonl.
#
# Environment: BASE (main), ROUNDS (3), ECHO_SECONDS (5), FANOUT_MESSAGES (100), SUBSCRIBERS
# (10000).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BASE=${BASE:-main}
ROUNDS=${ROUNDS:-3}
ECHO_SECONDS=${ECHO_SECONDS:-5}
FANOUT_MESSAGES=${FANOUT_MESSAGES:-100}
SUBSCRIBERS=${SUBSCRIBERS:-10000}
RUN_DIR="$ROOT/target/ab/$(date -u +%Y%m%dT%H%M%SZ)"
RESULTS="$RUN_DIR/results.jsonl"
CLK_TCK=$(getconf CLK_TCK)
mkdir -p "$RUN_DIR"
: >"$RESULTS"

PID=
SRC="$ROOT/target/ab/base-src"
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    git -C "$ROOT" worktree remove --force "$SRC" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build: BASE in a worktree, then the work tree, into one target directory ----------------------
git -C "$ROOT" worktree remove --force "$SRC" 2>/dev/null || true
git -C "$ROOT" worktree add --detach --quiet "$SRC" "$BASE"
A_REV=$(git -C "$SRC" rev-parse --short HEAD)
B_REV="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml || echo +)"
(cd "$SRC" && CARGO_TARGET_DIR="$ROOT/target" cargo build --release --quiet --locked)
cp target/release/pushwire "$RUN_DIR/pushwire-a"
cargo build --release --quiet --locked
cp target/release/pushwire "$RUN_DIR/pushwire-b"
BENCH="$RUN_DIR/pushwire-b"

# --- runs ---------------------------------------------------------------------------------------
start() { # start A|B: sets ADDR and PID
    local log="$RUN_DIR/server-$1.log"
    "$RUN_DIR/pushwire-${1,,}" serve --listen 127.0.0.1:0 --max-connections 30000 \
        --max-connections-per-ip 30000 >"$log" 2>&1 &
    PID=$!
    for _ in $(seq 100); do
        if ADDR=$(grep -m1 -o 'listening on http://[0-9.]*:[0-9]*' "$log" 2>/dev/null); then
            ADDR=${ADDR##*http://}
            return 0
        fi
        sleep 0.1
    done
    echo "ab.sh: server $1 did not start" >&2
    exit 2
}
stop() {
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=
}
ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
bench() { # bench CASE REV ARGS...
    local case=$1 rev=$2 before line cpu
    shift 2
    before=$(ticks)
    line=$("$BENCH" bench "$@" --json)
    cpu=$(awk -v t=$(($(ticks) - before)) -v hz="$CLK_TCK" 'BEGIN {printf "%.3f", t / hz}')
    echo "{\"case\":\"$case\",\"rev\":\"$rev\",\"server_cpu_s\":$cpu,${line#\{}" | tee -a "$RESULTS" >&2
}
for round in $(seq "$ROUNDS"); do
    for rev in A B; do
        echo "== round $round of $ROUNDS: $rev" >&2
        start "$rev"
        bench echo-32 "$rev" echo --url "ws://$ADDR/echo" -c 100 -w 8 -s 32 --duration "$ECHO_SECONDS"
        bench fanout-ws "$rev" fanout --publish-url "http://$ADDR/channels/ab" \
            --subscribe-url "http://$ADDR/channels/ab" --transport ws -c "$SUBSCRIBERS" --size 64 \
            -k "$FANOUT_MESSAGES"
        stop
    done
done

# --- table: medians over the rounds ----------------------------------------------------------------
echo
echo "A = $BASE ($A_REV), B = work tree ($B_REV); medians of $ROUNDS rounds"
python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'case':<10} {'rev':<3} {'server CPU µs/msg':>18} {'rate /s':>12}")
for case in ["echo-32", "fanout-ws"]:
    per = {}
    for rev in "AB":
        runs = [r for r in rows if r["case"] == case and r["rev"] == rev]
        count = "messages" if case.startswith("echo") else "deliveries"
        rate = "messages_per_s" if case.startswith("echo") else "deliveries_per_s"
        cpu = statistics.median(r["server_cpu_s"] / max(r[count], 1) * 1e6 for r in runs)
        per[rev] = cpu
        print(f"{case:<10} {rev:<3} {cpu:>18.3f} {statistics.median(r[rate] for r in runs):>12.0f}")
    print(f"{case:<10} B/A {per['B'] / per['A']:>18.3f}")
EOF
