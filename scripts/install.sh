#!/usr/bin/env bash
# Installs what a clean machine lacks for `make dev` / `make test`: uv, the locked Python environment
# (which brings nats-server and PostgreSQL as wheels, and a Node for the dashboard build), a Chromium for
# the worker, and the dashboard (ui/dist, rebuilt only when a source changed).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
  echo "installing uv" >&2
  python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
  export PATH="$HOME/.local/bin:$PATH"
fi

# Bytecode now, not at every start: where PYTHONDONTWRITEBYTECODE is set nothing ever writes .pyc, and each
# process of the stack (and of every test platform) compiled all it imports, ~1.4 s of CPU per process.
# uv compiles site-packages; the workspace's own packages are editable installs, so compileall does them.
uv sync --frozen --all-packages --quiet --compile-bytecode
uv run --frozen python -m compileall -q -j 0 libs services tools >/dev/null

# The worker uses Playwright's own Chromium when installed, else $BROWSER_EXECUTABLE, else the system one.
have_browser() {
  [ -n "${BROWSER_EXECUTABLE:-}" ] && [ -x "${BROWSER_EXECUTABLE}" ] && return 0
  [ -x /usr/bin/chromium ] && return 0
  ls "${PLAYWRIGHT_BROWSERS_PATH:-$HOME/.cache/ms-playwright}"/chromium-*/chrome-linux/chrome >/dev/null 2>&1 && return 0
  return 1
}
if ! have_browser; then
  # Debian's package first where we can: Playwright's download needs hosts a closed network lacks.
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium" >&2
    (apt-get install -y -qq chromium >/dev/null 2>&1) || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
  elif timeout 300 uv run --frozen playwright install chromium >/dev/null 2>&1; then
    echo "installed Playwright's Chromium" >&2
  else
    echo "no Chromium found: run 'uv run playwright install chromium', or install your distribution's" \
         "chromium package, or set BROWSER_EXECUTABLE" >&2
    exit 1
  fi
fi

# UI_FORCE=1 (`make ui`) rebuilds even when ui/dist looks current
bash scripts/build_ui.sh ${UI_FORCE:+--force}
