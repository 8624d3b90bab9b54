#!/usr/bin/env bash
# Installs the peers of the interop tests (tests/interop.rs): Python `websockets` in a venv at
# .venv/ and Node `ws` in tests/interop/node_modules/. Idempotent: when both are installed at
# the pinned versions it only checks them and returns in well under a second.
# Needs python3 (with venv) and node with npm on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

# Keep in step with tests/interop.rs (which reports the version it expects when one is missing).
WEBSOCKETS_VERSION=17.4
# A Python SSE reader that reconnects with Last-Event-ID by itself, and its HTTP library.
SSECLIENT_VERSION=0.0.27
REQUESTS_VERSION=2.32.3

for tool in python3 node npm; do
  command -v "$tool" >/dev/null || { echo "setup-interop: $tool is not on PATH" >&2; exit 1; }
done

installed=$(.venv/bin/python3 -c 'import websockets, requests, sseclient; print(websockets.__version__, requests.__version__)' 2>/dev/null || true)
if [[ "$installed" != "$WEBSOCKETS_VERSION $REQUESTS_VERSION" ]]; then
  echo "setup-interop: installing websockets, sseclient and requests into .venv/"
  [[ -x .venv/bin/python3 ]] || python3 -m venv .venv
  .venv/bin/python3 -m pip install --quiet --disable-pip-version-check "websockets==$WEBSOCKETS_VERSION" \
    "sseclient==$SSECLIENT_VERSION" "requests==$REQUESTS_VERSION"
fi

# The version package.json pins (exactly) must be the one in node_modules.
wanted=$(node -p 'require("./tests/interop/package.json").dependencies.ws')
have=$(node -p 'try { require("./tests/interop/node_modules/ws/package.json").version } catch (e) { "" }')
if [[ "$have" != "$wanted" ]]; then
  echo "setup-interop: installing ws@$wanted into tests/interop/node_modules/"
  (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
fi
