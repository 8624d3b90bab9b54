#!/usr/bin/env bash
# Rooms fan-out: the cost of holding several channels on one connection, in one run:
# `bash benches/rooms.sh` (after `cargo build --release`).
#
# Starts one release pushwire on a free loopback port and runs `pushwire bench fanout` against
# it with SUBSCRIBERS subscribers over TRANSPORT (sse), MESSAGES messages of 64 B back to back:
# each subscriber on 1 channel, then on K channels of one connection (`--channels-per-subscriber
# K`, messages spread over the K channels in turn, so both runs deliver the same count), ROUNDS
# times in turn. Prints per run: deliveries/s, p99 latency, and the server's CPU seconds per
# million deliveries over the measured window (`--server-pid`: user + system from
# /proc/PID/stat), then the K-channel/1-channel ratios of the medians, and the load average
# before and after (server and load generator share the cores).
#
# Environment: SUBSCRIBERS (1000), MESSAGES (200), K (10), TRANSPORT (sse or longpoll), ROUNDS (3).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PUSHWIRE="$ROOT/target/release/pushwire"
SUBSCRIBERS=${SUBSCRIBERS:-1000}
MESSAGES=${MESSAGES:-200}
K=${K:-10}
TRANSPORT=${TRANSPORT:-sse}
ROUNDS=${ROUNDS:-3}
[[ -x "$PUSHWIRE" ]] || { echo "rooms.sh: $PUSHWIRE is missing: cargo build --release" >&2; exit 1; }

out=$(mktemp)
"$PUSHWIRE" serve --listen 127.0.0.1:0 --max-connections 100000 >"$out" 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 100); do grep -q listening "$out" && break; sleep 0.1; done
url=$(sed -n 's/^pushwire listening on \(http:\/\/[^ ]*\)$/\1/p' "$out" | head -1)
[[ -n "$url" ]] || { echo "rooms.sh: the server did not start" >&2; exit 1; }
field() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"; }

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A rates cpus
for round in $(seq "$ROUNDS"); do
    for k in 1 "$K"; do
        json=$("$PUSHWIRE" bench fanout --url "$url/channels/rooms$round-$k" --transport "$TRANSPORT" \
            -c "$SUBSCRIBERS" -k "$MESSAGES" --channels-per-subscriber "$k" --timeout 30 \
            --server-pid "$server" --json)
        rate=$(field "$json" deliveries_per_s)
        cpu=$(field "$json" server_cpu_s_per_million_deliveries)
        printf 'round %s  K=%-3s %s subscribers: %10.0f deliveries/s  p99 %s us  missing %s  server CPU %.2f s per million deliveries\n' \
            "$round" "$k" "$SUBSCRIBERS" "$rate" "$(field "$json" latency_p99_us)" "$(field "$json" missing)" "$cpu"
        rates[$k]+="$rate "
        cpus[$k]+="$cpu "
    done
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
r1=$(median "${rates[1]}"); rk=$(median "${rates[$K]}"); c1=$(median "${cpus[1]}"); ck=$(median "${cpus[$K]}")
awk -v r1="$r1" -v rk="$rk" -v c1="$c1" -v ck="$ck" -v k="$K" 'BEGIN {
    printf "median: 1 channel %.0f deliveries/s, %.2f server CPU s per million; %d channels %.0f deliveries/s, %.2f s per million; ratio K/1: %.2fx rate, %.2fx CPU per delivery\n",
        r1, c1, k, rk, ck, rk / r1, ck / c1 }'
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
