#!/usr/bin/env bash
# Runs the Autobahn|Testsuite in both roles, side by side, and fails unless every case passes:
#   - the fuzzing client against the release server's /echo: all 517 cases (1-13, with
#     permessage-deflate in 12.* and 13.*);
#   - the fuzzing server against pushwire's client (examples/autobahn_client.rs): all cases.
# A run fails on any FAILED, NON-STRICT, UNIMPLEMENTED or MISSING case (INFORMATIONAL cases have
# no verdict by design). The HTML reports are kept under target/autobahn/reports/ (paths
# printed). scripts/test.sh runs it, so CI (.ci/run) runs it on every run.
#
# The suite is installed with the Python 3 port's setup.sh, found in $AUTOBAHN_SETUP,
# ../shared/autobahn/setup.sh (beside the repository) or /work/shared/autobahn/setup.sh; it
# needs python3 with venv and lib2to3 (Debian: python3-venv python3-lib2to3) and PyPI.
#
# Timeouts: the suite's cases wait fixed times for the peer (killAfter, closeAfter: 0.5-100 s;
# continueLater: the 1-5 s pauses of cases such as 5.19 and 6.4.1). On a loaded 2-core machine
# a process can stall longer than that, and the case fails though the peer is right. This
# script multiplies every such delay by AUTOBAHN_TIME_SCALE (default 3) by patching the
# installed suite's fuzzing.py (count-checked). A fail-fast case stays strict: the peer must
# still fail before the (longer) pause ends and the next frame is sent.
#
# Several minutes on 2 cores (both roles at once; cases 9.*, 12.* and 13.* dominate).
# AUTOBAHN_ROLES="server" (or "client") runs one role only.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
mkdir -p target

export AUTOBAHN_HOME=${AUTOBAHN_HOME:-$root/target/autobahn/suite}
if [[ ! -x $AUTOBAHN_HOME/run-server-test.sh || ! -x $AUTOBAHN_HOME/venv/bin/python ]]; then
  setup=${AUTOBAHN_SETUP:-}
  if [[ -z $setup ]]; then
    for candidate in ../shared/autobahn/setup.sh /work/shared/autobahn/setup.sh; do
      if [[ -f $candidate ]]; then setup=$candidate; break; fi
    done
  fi
  if [[ -z $setup || ! -f $setup ]]; then
    echo "autobahn: the suite is not installed in $AUTOBAHN_HOME and its setup.sh was not found" >&2
    echo "autobahn: expected ../shared/autobahn/setup.sh beside the repository (or set AUTOBAHN_SETUP)" >&2
    exit 1
  fi
  echo "autobahn: installing the suite into $AUTOBAHN_HOME with $setup"
  AUTOBAHN_HOME=$AUTOBAHN_HOME bash "$setup" > "$root/target/autobahn-setup.log" 2>&1 \
    || { tail -30 "$root/target/autobahn-setup.log" >&2; exit 1; }
fi

# Scale the suite's waits (see the header). Idempotent: the patched file carries a marker.
export AUTOBAHN_TIME_SCALE=${AUTOBAHN_TIME_SCALE:-3}
"$AUTOBAHN_HOME/venv/bin/python" - <<'PY'
import pathlib, autobahntestsuite
path = pathlib.Path(autobahntestsuite.__file__).parent / "fuzzing.py"
text = path.read_text()
marker = "# pushwire: AUTOBAHN_TIME_SCALE"
if marker not in text:
    calls = ["reactor.callLater(delay, self.executeContinueLater, fun, tag)",
             "reactor.callLater(delay, self.executeKillAfter)",
             "reactor.callLater(delay, self.executeCloseAfter)"]
    for call in calls:
        if text.count(call) != 1:
            raise SystemExit("autobahn: cannot patch %s: %r found %d times" % (path, call, text.count(call)))
        text = text.replace(call, call.replace("(delay,", "(delay * _TIME_SCALE,"))
    text = text.replace("\nimport os,", "\n%s\nimport os as _os\n_TIME_SCALE = float(_os.environ.get('AUTOBAHN_TIME_SCALE', '1'))\nimport os," % marker, 1)
    if marker not in text:
        raise SystemExit("autobahn: cannot patch %s: no 'import os,' line" % path)
    path.write_text(text)
PY

cargo build --release --locked --bin pushwire --example autobahn_client
reports=$root/target/autobahn/reports
rm -rf "$reports"
mkdir -p "$reports"

# Reads the suite's summary line and fails unless it is clean.
check() {
  local role=$1 log=$2 line
  line=$(grep '^autobahn ' "$log" | tail -1 || true)
  echo "autobahn $role: ${line:-no summary line}"
  [[ -n $line ]] || return 1
  local bad=0
  for verdict in FAILED NON-STRICT UNIMPLEMENTED MISSING; do
    if ! grep -q " $verdict=0 " <<<"$line "; then bad=1; fi
  done
  if ! grep -q ' OK=[1-9]' <<<"$line"; then bad=1; fi
  return $bad
}

start=$(date +%s)
roles=" ${AUTOBAHN_ROLES:-server client} "
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

# 1. The server: the fuzzing client against /echo (in the background).
server_log=$reports/server.log
server_role_pid=
if [[ $roles == *" server "* ]]; then
target/release/pushwire serve --listen 127.0.0.1:0 > "$reports/pushwire.out" 2> "$reports/pushwire.err" &
server_pid=$!
pids+=("$server_pid")
port=
for _ in $(seq 100); do
  port=$(sed -n 's|^pushwire listening on http://127.0.0.1:\([0-9]*\)$|\1|p' "$reports/pushwire.out" | head -1)
  [[ -n $port ]] && break
  sleep 0.1
done
[[ -n $port ]] || { echo "autobahn: the server did not start" >&2; cat "$reports/pushwire.err" >&2; exit 1; }
WS_PATH=/echo AGENT=pushwire bash "$AUTOBAHN_HOME/run-server-test.sh" 127.0.0.1 "$port" "$reports/server" \
  > "$server_log" 2>&1 &
server_role_pid=$!
pids+=("$server_role_pid")
fi

# 2. The client: the fuzzing server against examples/autobahn_client.rs (at the same time).
client_log=$reports/client.log
client_role_pid=
if [[ $roles == *" client "* ]]; then
client_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
AGENT=pushwire bash "$AUTOBAHN_HOME/run-client-test.sh" "$client_port" "$reports/client" -- \
  "$root/target/release/examples/autobahn_client" > "$client_log" 2>&1 &
client_role_pid=$!
pids+=("$client_role_pid")
fi

status=0
if [[ -n $server_role_pid ]]; then
  wait "$server_role_pid" || true
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  check server "$server_log" || status=1
  echo "autobahn: server report: $reports/server/index.html"
fi
if [[ -n $client_role_pid ]]; then
  wait "$client_role_pid" || true
  check client "$client_log" || status=1
  echo "autobahn: client report: $reports/client/index.html"
fi
trap - EXIT
echo "autobahn:${roles% } in $(($(date +%s) - start)) s (AUTOBAHN_TIME_SCALE=$AUTOBAHN_TIME_SCALE)"
exit $status
