#!/usr/bin/env bash
# The embedded default: install what is needed, start a throwaway local
# redis-server with sample data (appendonly yes, as in the seed examples),
# back it up to a file:// store, list, verify, restore into a second
# throwaway Redis, and show that both datasets are equal (DEBUG DIGEST).
# Everything lives in .demo/ and both servers are stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
# The demo needs only Debian 12's Redis: skip the newer servers the test matrix uses.
BACKUPCTL_SKIP_TRIXIE=1 bash scripts/bootstrap.sh test >/dev/null
export PATH="$PWD/.venv/bin:$PATH"
DEMO="$PWD/.demo"; rm -rf "$DEMO"; mkdir -p "$DEMO/src" "$DEMO/dst" "$DEMO/store"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_redis() { # dir port
  redis-server --bind 127.0.0.1 --port "$2" --dir "$1" --save '' --appendonly yes \
    --enable-debug-command local --repl-diskless-sync-delay 0 --daemonize yes \
    --pidfile "$1/redis.pid" --logfile "$1/redis.log"
  for _ in $(seq 1 100); do redis-cli -p "$2" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "redis on port $2 did not start; see $1/redis.log" >&2; return 1
}
stop_all() {
  for d in "$DEMO/src" "$DEMO/dst"; do
    [ -f "$d/redis.pid" ] && kill "$(cat "$d/redis.pid")" 2>/dev/null || true
  done
}
trap stop_all EXIT
P1=$(free_port); start_redis "$DEMO/src" "$P1"
echo "== source Redis on 127.0.0.1:$P1 with 200,000 sample keys"
redis-cli -p "$P1" DEBUG POPULATE 200000 demo 64 >/dev/null
redis-cli -p "$P1" HSET demo:hash f1 v1 f2 v2 >/dev/null
redis-cli -p "$P1" RPUSH demo:list a b c >/dev/null
redis-cli -p "$P1" XADD demo:stream '*' k v >/dev/null
echo "== backupctl run"
backupctl run --redis "redis://127.0.0.1:$P1" --to "file://$DEMO/store" --target demo/redis
echo "== backupctl list"
backupctl list "file://$DEMO/store"
echo "== backupctl verify"
backupctl verify "file://$DEMO/store" latest
echo "== backupctl restore latest into a second data directory"
backupctl restore "file://$DEMO/store" latest --to-dir "$DEMO/dst"
P2=$(free_port); start_redis "$DEMO/dst" "$P2"
SRC=$(redis-cli -p "$P1" DEBUG DIGEST); DST=$(redis-cli -p "$P2" DEBUG DIGEST)
echo "source   DBSIZE $(redis-cli -p "$P1" DBSIZE)  DEBUG DIGEST $SRC"
echo "restored DBSIZE $(redis-cli -p "$P2" DBSIZE)  DEBUG DIGEST $DST"
if [ "$SRC" = "$DST" ]; then echo "OK: the restored dataset equals the source"; else echo "MISMATCH" >&2; exit 1; fi
