#!/usr/bin/env bash
# Rooms: what holding several channels on one connection costs, in one run (issue #13's
# performance items): `bash benches/rooms.sh` (after `cargo build --release`).
#
# 1. Fan-out, single channel (the reference of the same run): SUBSCRIBERS SSE subscribers of
#    one channel, MESSAGES messages of 64 B back to back.
# 2. Fan-out, rooms at random: SUBSCRIBERS SSE subscribers, each holding K of CHANNELS channels
#    drawn at random on its one connection (`/channels/a,b,…`), ROOM_MESSAGES messages each to
#    a random channel (`pushwire bench fanout --channels CHANNELS --channels-per-subscriber K`),
#    so each reaches about SUBSCRIBERS × K / CHANNELS subscribers; ROOM_MESSAGES defaults to
#    give as many deliveries as run 1.
# 3. Fan-out, K channels in turn: every subscriber on the same K channels, messages to them in
#    turn (every subscriber gets every message, as in run 1).
#    Per run: deliveries/s, p99 latency, missing, and the server's CPU seconds per million
#    deliveries over the measured window (`--server-pid`).
# 4. Idle memory: a fresh server each, SUBSCRIBERS idle SSE subscriptions held HOLD seconds,
#    the server's resident size before and after (`pushwire bench idle --pid`): on one channel
#    (`/channels/NAME`), on one channel in the multi-channel form (`/channels?channel=NAME`),
#    and on K channels (`/channels/NAME,NAME.1,…`); bytes per idle subscription beyond the
#    first = (K-channel − multi-form 1-channel) / (SUBSCRIBERS × (K − 1)).
# Then the ratios against run 1 and the load average before and after (server and load
# generator share the cores). The server runs with the default configuration (one event loop
# per core).
#
# Environment: SUBSCRIBERS (10000), MESSAGES (20), K (10), CHANNELS (1000), ROOM_MESSAGES
# (MESSAGES × CHANNELS / K), HOLD (3).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PUSHWIRE="$ROOT/target/release/pushwire"
SUBSCRIBERS=${SUBSCRIBERS:-10000}
MESSAGES=${MESSAGES:-20}
K=${K:-10}
CHANNELS=${CHANNELS:-1000}
ROOM_MESSAGES=${ROOM_MESSAGES:-$((MESSAGES * CHANNELS / K))}
HOLD=${HOLD:-3}
[[ -x "$PUSHWIRE" ]] || { echo "rooms.sh: $PUSHWIRE is missing: cargo build --release" >&2; exit 1; }

server=""
out=$(mktemp)
trap '[[ -n "$server" ]] && kill "$server" 2>/dev/null; rm -f "$out"' EXIT
# Starts a fresh server; sets $server and $url.
start() {
    [[ -n "$server" ]] && { kill "$server"; wait "$server" 2>/dev/null || true; }
    "$PUSHWIRE" serve --listen 127.0.0.1:0 --max-connections 100000 --max-connections-per-ip 100000 >"$out" 2>/dev/null &
    server=$!
    for _ in $(seq 100); do grep -q listening "$out" && break; sleep 0.1; done
    url=$(sed -n 's/^pushwire listening on \(http:\/\/[^ ]*\)$/\1/p' "$out" | head -1)
    [[ -n "$url" ]] || { echo "rooms.sh: the server did not start" >&2; exit 1; }
}
field() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"; }
fanout() { # NAME ARGS...: one fan-out run, its line, and $rate/$p99/$cpu set
    local name=$1
    shift
    local json
    json=$("$PUSHWIRE" bench fanout --transport sse -c "$SUBSCRIBERS" --timeout 60 --server-pid "$server" --json "$@")
    rate=$(field "$json" deliveries_per_s)
    p99=$(field "$json" latency_p99_us)
    cpu=$(field "$json" server_cpu_s_per_million_deliveries)
    printf '%-34s %s subscribers: %8s deliveries (missing %s)  %10.0f deliveries/s  p99 %8s us  server CPU %.2f s per million deliveries\n' \
        "$name" "$SUBSCRIBERS" "$(field "$json" deliveries)" "$(field "$json" missing)" "$rate" "$p99" "$cpu"
}
idle() { # NAME PATH: a fresh server, SUBSCRIBERS idle subscriptions on PATH; $bytes set
    start
    local json
    json=$("$PUSHWIRE" bench idle --url "$url$2" --transport sse -c "$SUBSCRIBERS" --pid "$server" --hold "$HOLD" --json)
    bytes=$(field "$json" bytes_per_connection)
    printf '%-34s %s connections: %6s bytes per connection (server RSS %s -> %s)\n' "$1" "$SUBSCRIBERS" "$bytes" \
        "$(field "$json" server_rss_before_bytes)" "$(field "$json" server_rss_after_bytes)"
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
start
fanout "1. one channel" --url "$url/channels/single" -k "$MESSAGES"
r1=$rate p1=$p99 c1=$cpu
fanout "2. $K of $CHANNELS channels at random" --url "$url/channels/room" -k "$ROOM_MESSAGES" \
    --channels-per-subscriber "$K" --channels "$CHANNELS"
r2=$rate p2=$p99 c2=$cpu
fanout "3. the same $K channels in turn" --url "$url/channels/turn" -k "$MESSAGES" --channels-per-subscriber "$K"
r3=$rate p3=$p99 c3=$cpu
idle "4a. idle, /channels/NAME" "/channels/idle"
b1=$bytes
idle "4b. idle, /channels?channel=NAME" "/channels?channel=idle"
bm=$bytes
list=idle
for i in $(seq 1 $((K - 1))); do list="$list,idle.$i"; done
idle "4c. idle, $K channels" "/channels/$list"
bk=$bytes
awk -v r1="$r1" -v r2="$r2" -v r3="$r3" -v p1="$p1" -v p2="$p2" -v p3="$p3" -v c1="$c1" -v c2="$c2" -v c3="$c3" \
    -v b1="$b1" -v bm="$bm" -v bk="$bk" -v k="$K" 'BEGIN {
    printf "against one channel: random rooms %.2fx deliveries/s, %.2fx p99, %.2fx CPU per delivery; %d channels in turn %.2fx, %.2fx, %.2fx\n",
        r2 / r1, p2 / p1, c2 / c1, k, r3 / r1, p3 / p1, c3 / c1
    printf "idle: %d channels cost %.2fx one channel per connection; %.0f bytes per idle subscription beyond the first (against the one-channel multi form; %.0f against /channels/NAME)\n",
        k, bk / b1, (bk - bm) / (k - 1), (bk - b1) / (k - 1) }'
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
