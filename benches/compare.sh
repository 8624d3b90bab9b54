#!/usr/bin/env bash
# pushwire against its peers, side by side, in one run: `bash benches/compare.sh`.
#
# Installs the peers from registries only (Debian: nginx, libnginx-mod-nchan; npm: ws, pinned by
# benches/peers/node-ws/package-lock.json; crates.io: tokio-tungstenite and mio, pinned by each
# peer's Cargo.lock), builds pushwire and the peers in release mode, then runs the same
# `pushwire bench` modes against each server on this machine (server and load generator share
# its cores), one server at a time:
#
#   echo     C=100 connections, W=8 in flight, 32 B and 16 KiB, ECHO_SECONDS each:
#            pushwire, tokio-tungstenite, Node ws, and a plain mio TCP echo (`--protocol raw`)
#   fanout   10,000 subscribers, FANOUT_MESSAGES messages of 64 B back to back, ws and SSE:
#            pushwire and Nchan (ws and SSE), tokio-tungstenite and Node ws (ws)
#   latency  10,000 subscribers, 5 messages/s for LATENCY_MESSAGES messages, p99 delivery
#            latency, ws and SSE: pushwire and Nchan
#   idle     10,000 idle ws and SSE subscriptions, server RSS per connection, a fresh server
#            each: pushwire, Nchan (ws, SSE), tokio-tungstenite and Node ws (ws)
#   deflate  10,000 ws subscribers, FANOUT_MESSAGES messages of 1 KiB JSON (`--json-payload`)
#            back to back, without and with permessage-deflate (`--deflate`): deliveries/s,
#            server CPU per delivery and bytes written per delivery (pushwire_bytes_out_total).
#            THREADS client threads and a 60 s `--timeout`: inflating 1 M messages is more client
#            work than the server's one compression per message, and with one client thread and
#            the default 10 s a loaded machine counted written but unread messages as missing
#   rooms    issue #13, many channels on one connection (what benches/rooms.sh runs alone), one
#            pushwire server: fan-out to SUBSCRIBERS SSE connections, one channel and ROOMS_MESSAGES
#            (20) messages as the reference; each connection on ROOMS_K (10) of ROOMS_CHANNELS
#            (1,000) channels drawn at random, as many deliveries in messages to random channels;
#            each on the same ROOMS_K channels, ROOMS_MESSAGES messages in turn. Then idle memory,
#            a fresh server each, SUBSCRIBERS connections over SSE and over ws (`pushwire.v1`):
#            one channel (`/channels/NAME`), one channel in the multi-channel form
#            (`/channels?channel=NAME`, the same session as several channels) and ROOMS_K
#            channels (`/channels/NAME,NAME.1,…`); the table derives the bytes per idle
#            subscription beyond the first, (K channels - multi form) / (K - 1), target <= 64
#   tls      echo over wss:// as the echo group (C=100, W=8, 32 B and 16 KiB, every round):
#            pushwire (--tls-cert) and tokio-tungstenite with tokio-rustls (tt-peer --tls), both
#            on rustls' ring provider, `pushwire bench echo` speaking TLS with the same client;
#            then IDLE_TLS_CONNECTIONS (2,000) idle subscriptions over wss:// and, measured the
#            same way, over ws:// (benches/idle_tls.py); server RSS per connection. One test
#            CA and certificate (P-256, made with openssl) for all of it
#   xnode    across nodes (issue #14): one redis-server (--save '' --appendonly no, a free
#            port), SUBSCRIBERS (10,000) subscribers spread over two nodes (half each: one
#            `--subscribe-url` per node, THREADS client threads split between them), publishes
#            into the first node, FANOUT_MESSAGES back to back and LATENCY_MESSAGES at 5/s, over
#            XNODE_TRANSPORTS ("ws sse"): pushwire-memory (one node, no Redis, every subscriber
#            on it), pushwire (two `pushwire serve --redis` nodes) and nchan-redis (two nginx
#            instances with `nchan_redis_url` on the same Redis). NODE_THREADS (1) event loops
#            per node and nginx workers per instance; the single node gets 2 × NODE_THREADS.
#            Server CPU is every server process's: both nodes and redis-server (whose own share
#            is shown apart)
#
# The echo and fan-out groups run ROUNDS times (3), every server once per round in turn, so a
# burst of load from other jobs falls on one round rather than on one server; the table shows
# each server's median run and the range of the rounds. Idle memory runs once (it is not a rate).
#
# Prints one table (each figure, and each target's ratio against the peer it names) and leaves
# the raw JSON lines of every run in target/compare/RUN/results.jsonl (one per run, with
# "case" and "server" added), the servers' logs beside them, and the table in table.txt.
# Every server it started is stopped on exit. Took about 10 minutes on 2 cores with 3 rounds
# (plus installing and building).
#
# Every echo and fan-out run also reports the server's CPU (user + system, from /proc/PID/stat)
# over exactly the measured window (`pushwire bench --server-pid`; nginx: master and workers)
# and the load generator's own; the table shows CPU-seconds per million messages or deliveries
# and pushwire's ratio on it against each peer. pushwire's fan-out runs also read its
# /metrics before and after the window (`--server-metrics`) and show the server-side p50/p99 of
# publish -> each subscriber's write and publish -> a fan-out's last write.
#
# Environment: PARTS ("echo fanout idle deflate tls xnode rooms": which groups to run; the
# script's arguments, when given, are the parts instead: `bash benches/compare.sh rooms`), IDLE_TLS_CONNECTIONS
# (2,000), ROUNDS (3), ECHO_SECONDS (5), FANOUT_MESSAGES (100), LATENCY_MESSAGES (25), SUBSCRIBERS
# (10000), THREADS (2: client threads of the fan-out load generator), ROOMS_K (10), ROOMS_CHANNELS
# (1000), ROOMS_MESSAGES (20), SKIP_INSTALL=1 (use what
# is installed and built; a peer not installed is shown as not run), PUSHWIRE (the binary to
# test, default target/release/pushwire), XNODE_TRANSPORTS and NODE_THREADS (xnode), OUT_DIR (where the run's directory goes, default
# target/compare), PEERS ("tt node mio nchan": which peers may run; the others are shown as
# not run), SERVER_CPUS and CLIENT_CPUS (`taskset -c` lists, e.g. 0 and 1: the servers, Redis
# included, run on the first CPUs and `pushwire bench` on the second, so the load generator does
# not take the servers' cores; unset: no pinning). QUICK=1: small counts (1 round, 1 s
# echoes, 300 subscribers, 20 messages), SKIP_INSTALL=1, about 30 s: checks that the script
# works, measures nothing worth quoting.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
if [ "${QUICK:-0}" = 1 ]; then
    : "${ROUNDS:=1}" "${ECHO_SECONDS:=1}" "${FANOUT_MESSAGES:=20}" "${LATENCY_MESSAGES:=5}" "${SUBSCRIBERS:=300}"
    : "${SKIP_INSTALL:=1}"
fi
ROUNDS=${ROUNDS:-3}
ECHO_SECONDS=${ECHO_SECONDS:-5}
FANOUT_MESSAGES=${FANOUT_MESSAGES:-100}
LATENCY_MESSAGES=${LATENCY_MESSAGES:-25}
SUBSCRIBERS=${SUBSCRIBERS:-10000}
THREADS=${THREADS:-2}
PEERS=${PEERS-tt node mio nchan}
PARTS=${PARTS:-echo fanout idle deflate tls xnode rooms}
[ $# -eq 0 ] || PARTS="$*"
XNODE_TRANSPORTS=${XNODE_TRANSPORTS:-ws sse}
NODE_THREADS=${NODE_THREADS:-1}
ROOMS_K=${ROOMS_K:-10}
ROOMS_CHANNELS=${ROOMS_CHANNELS:-1000}
ROOMS_MESSAGES=${ROOMS_MESSAGES:-20}
IDLE_TLS_CONNECTIONS=${IDLE_TLS_CONNECTIONS:-2000}
PIN_SERVER=()
[ -z "${SERVER_CPUS:-}" ] || PIN_SERVER=(taskset -c "$SERVER_CPUS")
PIN_CLIENT=()
[ -z "${CLIENT_CPUS:-}" ] || PIN_CLIENT=(taskset -c "$CLIENT_CPUS")
part() { [[ " $PARTS " == *" $1 "* ]]; }
RUN_DIR="${OUT_DIR:-$ROOT/target/compare}/$(date -u +%Y%m%dT%H%M%SZ)"
RESULTS="$RUN_DIR/results.jsonl"
BUILD="$ROOT/target/compare-build"
PUSHWIRE=${PUSHWIRE:-"$ROOT/target/release/pushwire"}
TT_PEER="$BUILD/tt/release/tt-peer"
MIO_ECHO="$BUILD/mio-echo/release/mio-echo"
NCHAN_MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so
# Debian installs nginx in /usr/sbin, which a user's PATH may lack.
[[ ":$PATH:" == *:/usr/sbin:* ]] || PATH="$PATH:/usr/sbin"

# --- system packages: checked before anything is built or run ------------------------------------
# The Debian packages this run needs and lacks: nginx and libnginx-mod-nchan (the Nchan peer, when
# nchan is in PEERS and a part runs it: fanout, idle, xnode), redis-server (xnode), nodejs (free
# ports, the table) and npm (installing the node-ws peer; not with SKIP_INSTALL=1). Without
# SKIP_INSTALL=1 they are installed below (as root, or through sudo); where that cannot be done,
# or with SKIP_INSTALL=1, the exact command is printed: the run stops if node is missing and
# otherwise goes on, showing a missing peer's runs as not run.
apt_missing=()
if [[ " $PEERS " == *" nchan "* ]] && { part fanout || part idle || part xnode; }; then
    command -v nginx >/dev/null || apt_missing+=(nginx)
    [ -e "$NCHAN_MODULE" ] || apt_missing+=(libnginx-mod-nchan)
fi
! part xnode || command -v redis-server >/dev/null || apt_missing+=(redis-server)
command -v node >/dev/null || apt_missing+=(nodejs)
[ "${SKIP_INSTALL:-0}" = 1 ] || command -v npm >/dev/null || apt_missing+=(npm)
apt_install="apt-get update && apt-get install -y --no-install-recommends ${apt_missing[*]}"
if [ ${#apt_missing[@]} -gt 0 ]; then
    can_install=1
    [ "${SKIP_INSTALL:-0}" != 1 ] || can_install=0
    [ "$(id -u)" = 0 ] || command -v sudo >/dev/null || can_install=0
    if [ $can_install = 0 ]; then
        echo "compare.sh: not installed: ${apt_missing[*]}; to install them, as root: $apt_install" >&2
        # Without node there is no table; without SKIP_INSTALL=1 the run was to install them.
        if [ "${SKIP_INSTALL:-0}" != 1 ] || ! command -v node >/dev/null; then
            exit 2
        fi
        echo "compare.sh: SKIP_INSTALL=1: going on; the runs of a missing peer are shown as not run" >&2
    fi
fi
mkdir -p "$RUN_DIR"
: >"$RESULTS"
began=$(date +%s)

say() { printf '\n== %s\n' "$*" >&2; }

# --- servers: every one started is stopped on exit ------------------------------------------
SERVER_PIDS=()
cleanup() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${SERVER_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server NAME CMD...: starts CMD in the background, waits for its `listening on` line and
# sets ADDR (host:port) and PID.
start_server() {
    local name=$1 log="$RUN_DIR/$1${round:+-r$round}.log"
    shift
    "${PIN_SERVER[@]}" "$@" >"$log" 2>&1 &
    PID=$!
    SERVER_PIDS+=("$PID")
    for _ in $(seq 100); do
        if ADDR=$(grep -m1 -o 'listening on [a-z]*:*/*[0-9.]*:[0-9]*' "$log" 2>/dev/null); then
            ADDR=${ADDR##*listening on }
            ADDR=${ADDR#http://}
            return 0
        fi
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "compare.sh: $name did not start; its log:" >&2
    cat "$log" >&2
    exit 2
}

stop_server() {
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
}

free_port() {
    node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# start_nchan NAME WORKERS [REDIS_URL]: nginx with benches/peers/nchan/nginx.conf.in in its own
# directory (with REDIS_URL: Nchan's Redis storage, `nchan_redis_url`); sets ADDR, PID (the
# master) and WORKER_PID (the first worker).
start_nchan() {
    local name=$1 workers=$2 dir="$RUN_DIR/$1" port redis=
    port=$(free_port)
    mkdir -p "$dir"
    [ -z "${3:-}" ] || redis="nchan_redis_url \"$3\"; nchan_use_redis on;"
    sed -e "s#@DIR@#$dir#g; s#@PORT@#$port#g; s#@WORKERS@#$workers#g; s#@NOFILE@#$(ulimit -Hn)#g" \
        -e "s#@REDIS@#$redis#g" benches/peers/nchan/nginx.conf.in >"$dir/nginx.conf"
    "${PIN_SERVER[@]}" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$RUN_DIR/$name.log" 2>&1 &
    PID=$!
    SERVER_PIDS+=("$PID")
    ADDR="127.0.0.1:$port"
    for _ in $(seq 100); do
        WORKER_PID=$(pgrep -P "$PID" | head -1 || true)
        if [ -n "$WORKER_PID" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "compare.sh: nginx (Nchan) did not start:" >&2
    cat "$dir/error.log" "$RUN_DIR/$name.log" >&2
    exit 2
}

start_pushwire() {
    start_server "$1" "$PUSHWIRE" serve --listen 127.0.0.1:0 \
        --max-connections 30000 --max-connections-per-ip 30000
}
start_tt() { start_server "$1" "$TT_PEER" 127.0.0.1:0; }
start_node() { start_server "$1" node benches/peers/node-ws/server.js 127.0.0.1:0; }
start_mio() { start_server "$1" "$MIO_ECHO" 127.0.0.1:0; }

# start_redis: a redis-server without persistence on a free port; sets REDIS_PORT, REDIS_PID.
start_redis() {
    REDIS_PORT=$(free_port)
    "${PIN_SERVER[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$RUN_DIR" \
        >"$RUN_DIR/redis${round:+-r$round}.log" 2>&1 &
    REDIS_PID=$!
    SERVER_PIDS+=("$REDIS_PID")
    for _ in $(seq 100); do
        [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" != PONG ] || return 0
        kill -0 "$REDIS_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "compare.sh: redis-server did not start; its log:" >&2
    cat "$RUN_DIR/redis${round:+-r$round}.log" >&2
    exit 2
}

# The server's processes as `--server-pid` flags: its PID (or every PID in BENCH_PIDS, for a
# server of several nodes) and, for nginx, its workers (their CPU is summed over the measured
# window by `pushwire bench`, from /proc/PID/stat).
server_pid_flags() {
    local pid
    for pid in ${BENCH_PIDS:-$PID} $(for p in ${BENCH_PIDS:-$PID}; do pgrep -P "$p" || true; done); do
        printf -- '--server-pid\n%s\n' "$pid"
    done
}

# CPU clock ticks (user + system) of a process so far: fields 14 and 15 of /proc/PID/stat.
cpu_ticks() {
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# bench CASE SERVER MODE ARGS...: one `pushwire bench` run with the server's CPU over the
# measured window (and for pushwire, with METRICS set, its /metrics histograms); its JSON line
# goes to RESULTS with the case and the server added (an `error` line when it could not run).
bench() {
    local case=$1 server=$2 line status=0 probe=() bytes_before redis_before extra=
    shift 2
    echo "-- $case: $server" >&2
    if [ "$1" = echo ] || [ "$1" = fanout ]; then
        mapfile -t probe < <(server_pid_flags)
        [ -z "${METRICS:-}" ] || probe+=(--server-metrics "$METRICS")
    fi
    # METRICS_URL set: pushwire's bytes written during the run are added as server_bytes_out.
    [ -z "${METRICS_URL:-}" ] || bytes_before=$(bytes_out)
    # REDIS_CPU_PID set: redis-server's CPU over the whole run (subscribing included) as redis_cpu_s.
    [ -z "${REDIS_CPU_PID:-}" ] || redis_before=$(cpu_ticks "$REDIS_CPU_PID")
    line=$("${PIN_CLIENT[@]}" "$PUSHWIRE" bench "$@" "${probe[@]}" --json 2>>"$RUN_DIR/bench.err") || status=$?
    [ -z "${METRICS_URL:-}" ] || extra="\"server_bytes_out\":$(($(bytes_out) - bytes_before)),"
    [ -z "${REDIS_CPU_PID:-}" ] ||
        extra+="\"redis_cpu_s\":$(awk -v t=$(($(cpu_ticks "$REDIS_CPU_PID") - redis_before)) -v hz="$(getconf CLK_TCK)" 'BEGIN {print t / hz}'),"
    if [ -z "$line" ]; then
        line="{\"error\":\"pushwire bench exited $status: $(tail -1 "$RUN_DIR/bench.err" | tr -d '"\\')\"}"
    fi
    echo "{\"case\":\"$case\",\"server\":\"$server\",\"round\":${round:-1},$extra${line#\{}" |
        tee -a "$RESULTS" >&2
}

# pushwire_bytes_out_total of the server at METRICS_URL.
bytes_out() {
    curl -sS --max-time 10 "$METRICS_URL" | sed -n 's/^pushwire_bytes_out_total //p'
}

# not_installed CASE... SERVER: records that SERVER could not run CASE (SKIP_INSTALL=1 and the
# peer is missing), so the table says so instead of leaving it out.
not_installed() {
    local server=${*: -1} case
    for case in "${@:1:$#-1}"; do
        echo "{\"case\":\"$case\",\"server\":\"$server\",\"round\":${round:-1},\"error\":\"not run (not installed, or not in PEERS)\"}" >>"$RESULTS"
    done
}
have() { # have PEER: whether a peer's server may and can be started (redis: installed; not a peer)
    if [ "$1" = redis ]; then
        command -v redis-server >/dev/null && command -v redis-cli >/dev/null
        return
    fi
    [[ " $PEERS " == *" $1 "* ]] || return 1
    case $1 in
        tt) [ -x "$TT_PEER" ] ;;
        mio) [ -x "$MIO_ECHO" ] ;;
        node) [ -d benches/peers/node-ws/node_modules/ws ] && command -v node >/dev/null ;;
        nchan) [ -e "$NCHAN_MODULE" ] && command -v nginx >/dev/null ;;
    esac
}

# --- install and build -------------------------------------------------------------------------
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    say "installing peers (apt: ${apt_missing[*]:-nothing missing}; npm: ws; crates.io via Cargo.lock)"
    if [ ${#apt_missing[@]} -gt 0 ]; then
        apt_get=(apt-get)
        [ "$(id -u)" = 0 ] || apt_get=(sudo apt-get)
        "${apt_get[@]}" update -qq
        DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq --no-install-recommends "${apt_missing[@]}"
    fi
    (cd benches/peers/node-ws && npm ci --no-audit --no-fund --silent)
    cargo build --release --quiet
    cargo build --release --quiet --locked --manifest-path benches/peers/tokio-tungstenite/Cargo.toml \
        --target-dir "$BUILD/tt"
    cargo build --release --quiet --locked --manifest-path benches/peers/mio-echo/Cargo.toml \
        --target-dir "$BUILD/mio-echo"
fi

# 10,000 connections on each side: raise the soft limit to the hard one (root may raise both).
ulimit -Hn 65536 2>/dev/null || true
ulimit -Sn "$(ulimit -Hn)"
if [ "$(ulimit -Sn)" -lt $((SUBSCRIBERS + 100)) ]; then
    echo "compare.sh: RLIMIT_NOFILE is $(ulimit -Sn); $SUBSCRIBERS subscribers need more" >&2
    exit 2
fi

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    [ -z "${SERVER_CPUS:-}${CLIENT_CPUS:-}" ] ||
        echo "pinned: servers on CPUs ${SERVER_CPUS:-any}, load generator on CPUs ${CLIENT_CPUS:-any}"
    [ "${QUICK:-0}" != 1 ] || echo "QUICK=1: $SUBSCRIBERS subscribers, $ECHO_SECONDS s echoes, one round: a check that the script works, not figures to quote"
    echo "pushwire: $(git rev-parse --short HEAD 2>/dev/null || echo '?'); nginx $(command -v nginx >/dev/null && nginx -v 2>&1 | sed 's#.*/##' || echo 'not installed');" \
        "Nchan $(dpkg-query -W -f '${Version}' libnginx-mod-nchan 2>/dev/null || echo '?');" \
        "redis $(redis-server --version 2>/dev/null | sed -n 's/.*v=\([0-9.]*\).*/\1/p');" \
        "node $(node --version); ws $(node -p 'require("./benches/peers/node-ws/node_modules/ws/package.json").version' 2>/dev/null || echo '?');" \
        "tokio-tungstenite $(grep -A1 'name = "tokio-tungstenite"' benches/peers/tokio-tungstenite/Cargo.lock | sed -n 's/version = "\(.*\)"/\1/p')"
} >"$RUN_DIR/conditions.txt"
cat "$RUN_DIR/conditions.txt" >&2

# A test CA and a `localhost` certificate it signs for the TLS runs (openssl; the clients trust
# the CA through --cacert: rustls refuses a CA certificate used as the server's own).
if part tls; then
    pki="$RUN_DIR/pki"
    mkdir -p "$pki"
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -keyout "$pki/ca-key.pem" -out "$pki/ca.pem" -days 2 \
        -subj "/CN=pushwire bench CA" 2>/dev/null
    openssl req "${ec[@]}" -keyout "$pki/key.pem" -out "$pki/leaf.csr" -subj /CN=localhost 2>/dev/null
    openssl x509 -req -in "$pki/leaf.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca-key.pem" -CAcreateserial \
        -out "$pki/cert.pem" -days 2 -extfile <(printf '%s\n' subjectAltName=DNS:localhost \
        basicConstraints=critical,CA:FALSE keyUsage=digitalSignature extendedKeyUsage=serverAuth) 2>/dev/null
fi

# --- echo ----------------------------------------------------------------------------------------
echo_runs() { # echo_runs SERVER URL [ARGS...]; ECHO_CASE names the cases (default echo-SIZE)
    local server=$1 url=$2
    shift 2
    for size in 32 16384; do
        bench "${ECHO_CASE:-echo}-$size" "$server" echo --url "$url" "$@" -c 100 -w 8 -s "$size" --duration "$ECHO_SECONDS"
    done
}
for round in $(seq "$ROUNDS"); do
if part echo; then
say "echo, round $round of $ROUNDS: C=100, W=8, 32 B and 16 KiB, $ECHO_SECONDS s each"
start_pushwire pushwire-echo
echo_runs pushwire "ws://$ADDR/echo"
stop_server
if have tt; then
    start_tt tt-echo
    echo_runs tokio-tungstenite "ws://$ADDR/echo"
    stop_server
else not_installed echo-32 echo-16384 tokio-tungstenite; fi
if have node; then
    start_node node-echo
    echo_runs node-ws "ws://$ADDR/echo"
    stop_server
else not_installed echo-32 echo-16384 node-ws; fi
if have mio; then
    start_mio mio-echo
    echo_runs mio-raw "tcp://$ADDR" --protocol raw
    stop_server
else not_installed echo-32 echo-16384 mio-raw; fi
fi

# --- echo over TLS: the same load through `pushwire bench echo`'s TLS client -------------------
if part tls; then
say "TLS echo, round $round of $ROUNDS: wss://, C=100, W=8, 32 B and 16 KiB, $ECHO_SECONDS s each"
start_server pushwire-tls-echo "$PUSHWIRE" serve --listen 127.0.0.1:0 --max-connections 30000 \
    --max-connections-per-ip 30000 --tls-cert "$pki/cert.pem" --tls-key "$pki/key.pem"
ECHO_CASE=echo-tls echo_runs pushwire "wss://localhost:${ADDR##*:}/echo" --cacert "$pki/ca.pem"
stop_server
if have tt; then
    start_server tt-tls-echo "$TT_PEER" 127.0.0.1:0 --tls "$pki/cert.pem" "$pki/key.pem"
    ECHO_CASE=echo-tls echo_runs tokio-tungstenite "wss://localhost:${ADDR##*:}/echo" --cacert "$pki/ca.pem"
    stop_server
else not_installed echo-tls-32 echo-tls-16384 tokio-tungstenite; fi
fi

# --- fan-out, back to back, and at 5 messages/s ---------------------------------------------------
fan() { # fan CASE SERVER TRANSPORT PUBLISH_URL SUBSCRIBE_URL [ARGS...]
    local case=$1 server=$2 transport=$3 pub=$4 sub=$5
    shift 5
    bench "$case" "$server" fanout --publish-url "$pub" --subscribe-url "$sub" --transport "$transport" \
        -c "$SUBSCRIBERS" --threads "$THREADS" --size 64 "$@"
}
if part fanout; then
say "fan-out, round $round of $ROUNDS: $SUBSCRIBERS subscribers, $FANOUT_MESSAGES x 64 B back to back; then 5 messages/s"
start_pushwire pushwire-fanout
for t in ws sse; do
    METRICS="http://$ADDR/metrics" fan "fanout-$t" pushwire $t "http://$ADDR/channels/f$t" \
        "http://$ADDR/channels/f$t" -k "$FANOUT_MESSAGES"
    METRICS="http://$ADDR/metrics" fan "latency-$t" pushwire $t "http://$ADDR/channels/l$t" \
        "http://$ADDR/channels/l$t" -k "$LATENCY_MESSAGES" --rate 5
done
stop_server
if have nchan; then
    start_nchan nchan-fanout 2
    for t in ws sse; do
        fan "fanout-$t" nchan $t "http://$ADDR/pub?id=f$t" "http://$ADDR/sub/f$t" -k "$FANOUT_MESSAGES" \
            --no-open-cursor --settle 1
        fan "latency-$t" nchan $t "http://$ADDR/pub?id=l$t" "http://$ADDR/sub/l$t" -k "$LATENCY_MESSAGES" \
            --rate 5 --no-open-cursor --settle 1
    done
    stop_server
else not_installed fanout-ws latency-ws fanout-sse latency-sse nchan; fi
for peer in tt node; do
    name=$([ $peer = tt ] && echo tokio-tungstenite || echo node-ws)
    if ! have $peer; then
        not_installed fanout-ws "$name"
        continue
    fi
    "start_$peer" "$peer-fanout"
    fan fanout-ws "$name" ws "http://$ADDR/channels/f" "http://$ADDR/channels/f" -k "$FANOUT_MESSAGES" \
        --no-open-cursor --settle 1
    stop_server
done
fi
done # rounds
unset round

# --- idle memory: a fresh server for each run -----------------------------------------------------
idle() { # idle CASE SERVER PID URL [ARGS...]
    local case=$1 server=$2 pid=$3 url=$4
    shift 4
    bench "$case" "$server" idle --url "$url" --pid "$pid" -c "$SUBSCRIBERS" --hold 2 "$@"
}
if part idle; then
say "idle: $SUBSCRIBERS subscriptions held 2 s, server RSS per connection"
for t in ws sse; do
    start_pushwire "pushwire-idle-$t"
    idle "idle-$t" pushwire "$PID" "http://$ADDR/channels/i" --transport $t
    stop_server
    # One worker, so that one process's RSS holds every subscription.
    if have nchan; then
        start_nchan "nchan-idle-$t" 1
        idle "idle-$t" nchan "$WORKER_PID" "http://$ADDR/sub/i" --transport $t --no-open-cursor
        stop_server
    else not_installed "idle-$t" nchan; fi
done
for peer in tt node; do
    name=$([ $peer = tt ] && echo tokio-tungstenite || echo node-ws)
    if ! have $peer; then
        not_installed idle-ws "$name"
        continue
    fi
    "start_$peer" "$peer-idle"
    idle idle-ws "$name" "$PID" "http://$ADDR/channels/i" --transport ws --no-open-cursor
    stop_server
done
fi

# --- permessage-deflate fan-out: 1 KiB JSON to every subscriber, without and with the extension --
if part deflate; then
say "deflate: $SUBSCRIBERS ws subscribers, $FANOUT_MESSAGES messages of 1 KiB JSON, without and with permessage-deflate"
for round in $(seq "$ROUNDS"); do
    for mode in plain deflate; do
        start_pushwire "pushwire-json-$mode"
        METRICS="http://$ADDR/metrics" METRICS_URL="http://$ADDR/metrics" bench "fanout-ws-json$([ "$mode" = deflate ] && echo -deflate)" pushwire fanout \
            --url "http://$ADDR/channels/j" --transport ws -c "$SUBSCRIBERS" -k "$FANOUT_MESSAGES" \
            --threads "$THREADS" --timeout 60 --size 1024 --json-payload $([ "$mode" = deflate ] && echo --deflate)
        stop_server
    done
done
unset round
fi

# --- idle subscriptions over TLS, beside plain ones measured the same way -------------------------
if part tls; then
say "tls: $IDLE_TLS_CONNECTIONS idle ws subscriptions over wss:// and ws:// (benches/idle_tls.py)"
for scheme in ws wss; do
    tls_flags=()
    [ "$scheme" = ws ] || tls_flags=(--tls-cert "$pki/cert.pem" --tls-key "$pki/key.pem")
    start_server "pushwire-idle-$scheme-py" "$PUSHWIRE" serve --listen 127.0.0.1:0 \
        --max-connections 30000 --max-connections-per-ip 30000 "${tls_flags[@]}"
    echo "-- idle-$scheme-py: pushwire" >&2
    line=$(python3 benches/idle_tls.py "$scheme://localhost:${ADDR##*:}/channels/i" "$PID" \
        "$IDLE_TLS_CONNECTIONS" 2 "$pki/ca.pem" 2>>"$RUN_DIR/bench.err") ||
        line="{\"error\":\"idle_tls.py failed: $(tail -1 "$RUN_DIR/bench.err" | tr -d '"\\')\"}"
    [[ $line == *'"error"'* ]] || line=${line%\}}',"ok":true}'
    echo "{\"case\":\"idle-$scheme-py\",\"server\":\"pushwire\",\"round\":1,${line#\{}" | tee -a "$RESULTS" >&2
    stop_server
done
fi

# --- across nodes: SUBSCRIBERS over two nodes sharing one Redis, publishes into the first -------
# xfan CASE SERVER TRANSPORT PUBLISH_URL SUBSCRIBE_URL_A SUBSCRIBE_URL_B [ARGS...]
xfan() {
    local case=$1 server=$2 transport=$3 pub=$4 a=$5 b=$6
    shift 6
    bench "$case" "$server" fanout --publish-url "$pub" --subscribe-url "$a" --subscribe-url "$b" \
        --transport "$transport" -c "$SUBSCRIBERS" --threads "$THREADS" --size 64 "$@"
}
if part xnode; then
if [ $((THREADS % 2)) != 0 ]; then
    echo "compare.sh: xnode needs an even THREADS (half the client threads subscribe on each node)" >&2
    exit 2
fi
for round in $(seq "$ROUNDS"); do
say "across nodes, round $round of $ROUNDS: $SUBSCRIBERS subscribers over two nodes on one Redis, publishes into one"
xcases=()
for t in $XNODE_TRANSPORTS; do xcases+=("xnode-fanout-$t" "xnode-latency-$t"); done
# xnode_runs SERVER PUBLISH_URL SUB_A SUB_B [ARGS...]: back to back, then 5 messages/s.
xnode_runs() {
    local server=$1 pub=$2 a=$3 b=$4 t
    shift 4
    for t in $XNODE_TRANSPORTS; do
        xfan "xnode-fanout-$t" "$server" $t "$pub$t" "$a$t" "$b$t" -k "$FANOUT_MESSAGES" "$@"
        xfan "xnode-latency-$t" "$server" $t "$pub${t}l" "$a${t}l" "$b${t}l" -k "$LATENCY_MESSAGES" --rate 5 "$@"
    done
}
# (a) one node in memory, every subscriber on it (the same load, no Redis).
start_server pushwire-memory "$PUSHWIRE" serve --listen 127.0.0.1:0 --threads $((2 * NODE_THREADS)) \
    --max-connections 30000 --max-connections-per-ip 30000
xnode_runs pushwire-memory "http://$ADDR/channels/x" "http://$ADDR/channels/x" "http://$ADDR/channels/x"
stop_server
if have redis; then
    # (b) two pushwire nodes on one Redis.
    start_redis
    redis_node() { # redis_node NAME: a pushwire node on this round's Redis; sets ADDR and PID
        start_server "$1" "$PUSHWIRE" serve --listen 127.0.0.1:0 --threads "$NODE_THREADS" \
            --max-connections 30000 --max-connections-per-ip 30000 --redis "redis://127.0.0.1:$REDIS_PORT"
    }
    redis_node pushwire-node-a; a=$ADDR; a_pid=$PID
    redis_node pushwire-node-b; b=$ADDR; b_pid=$PID
    BENCH_PIDS="$a_pid $b_pid $REDIS_PID" REDIS_CPU_PID=$REDIS_PID xnode_runs pushwire \
        "http://$a/channels/x" "http://$a/channels/x" "http://$b/channels/x"
    kill "$a_pid" "$b_pid" 2>/dev/null || true
    wait "$a_pid" "$b_pid" 2>/dev/null || true
    # (c) two nginx instances with Nchan on the same Redis (a fresh one: no pushwire keys).
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    if have nchan; then
        start_nchan "nchan-redis-a-r$round" "$NODE_THREADS" "redis://127.0.0.1:$REDIS_PORT"; a=$ADDR; a_pid=$PID
        start_nchan "nchan-redis-b-r$round" "$NODE_THREADS" "redis://127.0.0.1:$REDIS_PORT"; b=$ADDR; b_pid=$PID
        BENCH_PIDS="$a_pid $b_pid $REDIS_PID" REDIS_CPU_PID=$REDIS_PID xnode_runs nchan-redis \
            "http://$a/pub?id=x" "http://$a/sub/x" "http://$b/sub/x" --no-open-cursor --settle 1
        kill "$a_pid" "$b_pid" 2>/dev/null || true
        wait "$a_pid" "$b_pid" 2>/dev/null || true
    else not_installed "${xcases[@]}" nchan-redis; fi
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
else not_installed "${xcases[@]}" pushwire; not_installed "${xcases[@]}" nchan-redis; fi
done # rounds
unset round
fi

# --- rooms: many channels on one connection (issue #13) -------------------------------------------
if part rooms; then
say "rooms: $SUBSCRIBERS SSE subscribers, one channel / $ROOMS_K of $ROOMS_CHANNELS at random / $ROOMS_K in turn; idle with 1 and $ROOMS_K channels"
start_pushwire pushwire-rooms
rooms_fan() { # rooms_fan CASE URL ARGS...
    local case=$1 url=$2
    shift 2
    METRICS="http://$ADDR/metrics" bench "$case" pushwire fanout --url "$url" --transport sse \
        -c "$SUBSCRIBERS" --threads "$THREADS" --size 64 --timeout 60 "$@"
}
rooms_fan rooms-fanout-one "http://$ADDR/channels/single" -k "$ROOMS_MESSAGES"
rooms_fan rooms-fanout-random "http://$ADDR/channels/room" -k $((ROOMS_MESSAGES * ROOMS_CHANNELS / ROOMS_K)) \
    --channels-per-subscriber "$ROOMS_K" --channels "$ROOMS_CHANNELS"
rooms_fan rooms-fanout-turn "http://$ADDR/channels/turn" -k "$ROOMS_MESSAGES" --channels-per-subscriber "$ROOMS_K"
stop_server
list=i
for i in $(seq 1 $((ROOMS_K - 1))); do list="$list,i.$i"; done
for t in sse ws; do
    for form in one multi many; do
        case $form in
            one) path=/channels/i ;;
            multi) path="/channels?channel=i" ;;
            many) path="/channels/$list" ;;
        esac
        start_pushwire "pushwire-rooms-idle-$t-$form"
        idle "rooms-idle-$t-$form" pushwire "$PID" "http://$ADDR$path" --transport $t
        stop_server
    done
done
fi

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); took $(($(date +%s) - began)) s" >>"$RUN_DIR/conditions.txt"

# --- the table -----------------------------------------------------------------------------------
say "results ($RESULTS)"
ROOMS_K=$ROOMS_K node benches/compare-table.js "$RESULTS" "$RUN_DIR/conditions.txt" | tee "$RUN_DIR/table.txt"
