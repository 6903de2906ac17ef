#!/usr/bin/env bash
# Installs everything backupctl and its tests need on a fresh Debian machine:
# redis-server/redis-tools, restic, zstd (peer tools used as oracles), Azurite
# (Node, pinned to a version that runs on Node 20) and a Python venv in .venv.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for bin in redis-server:redis-server redis-cli:redis-tools restic:restic zstd:zstd; do
  command -v "${bin%%:*}" >/dev/null 2>&1 || need_apt+=("${bin##*:}")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ "${BACKUPCTL_SKIP_NODE:-0}" != "1" ] && [ ! -x node_modules/.bin/azurite-blob ]; then
  if command -v npm >/dev/null 2>&1; then
    npm install --no-save --no-audit --no-fund --loglevel=error azurite@3.35.0 >/dev/null
  else
    echo "bootstrap: npm not found; Azure Blob tests will be skipped" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
extras="${1:-test}"
# Reinstall only when pyproject.toml (or the extras asked for) changed.
stamp=".venv/.backupctl-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) ${extras}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log="$(mktemp)"
  if ! { .venv/bin/python -m pip install -q --upgrade pip &&
         .venv/bin/python -m pip install -q -e ".[${extras}]"; } >"$log" 2>&1; then
    cat "$log" >&2; echo "bootstrap: pip install failed (output above)" >&2; exit 1
  fi
  rm -f "$log"
  echo "$want" > "$stamp"
fi
