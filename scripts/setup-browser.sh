#!/usr/bin/env bash
# Installs what the browser tests (tests/browser) need besides Chromium: playwright-core, pinned
# in tests/browser/package-lock.json (it never downloads a browser). Chromium comes from the
# system (Debian's `chromium` package, /usr/bin/chromium or $CHROMIUM).
set -euo pipefail
cd "$(dirname "$0")/.."

chromium="${CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$chromium" ]]; then
  echo "setup-browser: $chromium not found; install it with: apt-get install chromium" >&2
  exit 1
fi
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "setup-browser: $tool not found; install Node.js 20 or later" >&2; exit 1; }
done
(cd tests/browser && npm ci --no-audit --no-fund)
