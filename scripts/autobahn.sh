#!/usr/bin/env bash
# Runs the Autobahn|Testsuite in both roles and fails unless every case passes:
#   - the fuzzing client against the release server's /echo: all 517 cases (1-13, with
#     permessage-deflate in 12.* and 13.*);
#   - the fuzzing server against pushwire's client (examples/autobahn_client.rs): all cases.
# A run fails on any FAILED, NON-STRICT, UNIMPLEMENTED or MISSING case (INFORMATIONAL cases have
# no verdict by design). The HTML reports are kept under target/autobahn/ (paths printed).
#
# The suite is installed with the Python 3 port's setup.sh, found in $AUTOBAHN_SETUP,
# ../shared/autobahn/setup.sh (beside the repository) or /work/shared/autobahn/setup.sh; it
# needs python3 with venv and lib2to3 (Debian: python3-venv python3-lib2to3) and PyPI.
# Several minutes on 2 cores, most of it cases 12.* and 13.*. AUTOBAHN_ROLES="server" (or
# "client") runs one role only.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

setup=${AUTOBAHN_SETUP:-}
if [[ -z $setup ]]; then
  for candidate in ../shared/autobahn/setup.sh /work/shared/autobahn/setup.sh; do
    if [[ -f $candidate ]]; then setup=$candidate; break; fi
  done
fi
[[ -n $setup && -f $setup ]] || { echo "autobahn: setup.sh not found (set AUTOBAHN_SETUP)" >&2; exit 1; }

export AUTOBAHN_HOME=${AUTOBAHN_HOME:-$root/target/autobahn/suite}
if [[ ! -x $AUTOBAHN_HOME/run-server-test.sh || ! -x $AUTOBAHN_HOME/venv/bin/python ]]; then
  echo "autobahn: installing the suite into $AUTOBAHN_HOME"
  bash "$setup" > "$root/target/autobahn-setup.log" 2>&1 || { tail -30 "$root/target/autobahn-setup.log" >&2; exit 1; }
fi

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

status=0
roles=" ${AUTOBAHN_ROLES:-server client} "

# 1. The server: the fuzzing client against /echo.
server_log=$reports/server.log
if [[ $roles == *" server "* ]]; then
target/release/pushwire serve --listen 127.0.0.1:0 > "$reports/pushwire.out" 2> "$reports/pushwire.err" &
server_pid=$!
trap 'kill $server_pid 2>/dev/null || true' EXIT
port=
for _ in $(seq 100); do
  port=$(sed -n 's|^pushwire listening on http://127.0.0.1:\([0-9]*\)$|\1|p' "$reports/pushwire.out" | head -1)
  [[ -n $port ]] && break
  sleep 0.1
done
[[ -n $port ]] || { echo "autobahn: the server did not start" >&2; cat "$reports/pushwire.err" >&2; exit 1; }
WS_PATH=/echo AGENT=pushwire bash "$AUTOBAHN_HOME/run-server-test.sh" 127.0.0.1 "$port" "$reports/server" 2>&1 | tee "$server_log" | tail -3
kill $server_pid 2>/dev/null || true
wait $server_pid 2>/dev/null || true
trap - EXIT
check server "$server_log" || status=1
echo "autobahn: server report: $reports/server/index.html"
fi

# 2. The client: the fuzzing server against examples/autobahn_client.rs.
client_log=$reports/client.log
if [[ $roles == *" client "* ]]; then
client_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
AGENT=pushwire bash "$AUTOBAHN_HOME/run-client-test.sh" "$client_port" "$reports/client" -- \
  "$root/target/release/examples/autobahn_client" 2>&1 | tee "$client_log" | tail -3
check client "$client_log" || status=1
echo "autobahn: client report: $reports/client/index.html"
fi

exit $status
