"""SIGTERM and SIGINT (what Kubernetes, ``timeout`` and Ctrl-C send) unwind a
command so its cleanup runs (issue 13, findings 4 and 6).

- ``run --method replication --pause-rdbcompression`` stopped inside the
  window where the server's ``rdbcompression`` is ``no`` (before the snapshot
  child forks) sets it back to ``yes`` before exiting. Before this change a
  SIGTERM there left the production server changed.
- By default ``run`` never touches the server's settings.
- ``verify`` and ``restore --to-redis`` stopped while unpacking remove their
  temporary folder.

Real ``redis-server`` processes on 127.0.0.1; the CLI runs as a subprocess,
as Kubernetes would run it. The server's ``repl-diskless-sync-delay`` is set
to a few seconds so the window before the fork is wide enough to hit.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from support.cli_runner import assert_one_clear_error, cli
from support.redis_servers import RedisFactory, RedisServer, populate, wait_for

SYNC_DELAY = 6  # seconds the server waits before forking the snapshot child


def _rdbcompression(server: RedisServer) -> str:
    with server.client() as c:
        return str(c.config_get("rdbcompression")["rdbcompression"])


def _replica_waiting(server: RedisServer) -> bool:
    """Our replication connection is registered and waits for the fork."""
    with server.client() as c:
        info = c.info("replication")
    return any(k.startswith("slave") and isinstance(v, dict) for k, v in info.items())


def _start(*args: object, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "backupctl", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@contextmanager
def _reaped(proc: subprocess.Popen[str]) -> Iterator[None]:
    """The process is gone (killed if need be) and its pipes closed when the block ends."""
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def _stopped(proc: subprocess.Popen[str], sig: signal.Signals) -> subprocess.CompletedProcess[str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_in_the_rdbcompression_window_sets_it_back(
    redis_factory: RedisFactory, tmp_path: Path, sig: signal.Signals
) -> None:
    src = redis_factory(extra_args=["--repl-diskless-sync-delay", str(SYNC_DELAY)])
    populate(src.client(), 1_000)
    store = tmp_path / "store"
    store.mkdir()
    tlog = tmp_path / "termination-log"
    proc = _start(
        "run", "--redis", src.url, "--to", store, "--method", "replication",
        "--pause-rdbcompression", "--termination-log", tlog,
    )  # fmt: skip
    with _reaped(proc):
        # switched off, and our sync waits for the fork: the window is open
        wait_for(
            lambda: _rdbcompression(src) == "no" and _replica_waiting(src),
            timeout=30,
            what="rdbcompression off and the sync waiting",
        )
        done = _stopped(proc, sig)

    assert _rdbcompression(src) == "yes"
    assert_one_clear_error(done, f"interrupted by {sig.name}")
    assert json.loads(tlog.read_text())["ok"] is False
    assert json.loads(cli("list", store, "--json").stdout)["backups"] == []


def test_by_default_the_server_settings_are_never_touched(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    src = redis_factory(extra_args=["--repl-diskless-sync-delay", str(SYNC_DELAY)])
    populate(src.client(), 1_000)
    store = tmp_path / "store"
    store.mkdir()
    proc = _start("run", "--redis", src.url, "--to", store, "--method", "replication")
    with _reaped(proc):
        wait_for(lambda: _replica_waiting(src), timeout=30, what="the replication sync to start")
        assert _rdbcompression(src) == "yes"  # in the window the opt-in flag would open
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert _rdbcompression(src) == "yes"
    with src.client() as c:
        assert "cmdstat_config|set" not in c.info("commandstats")  # not even tried


def _big_backup(src: RedisServer, store: Path) -> str:
    with src.client() as c:  # ~200 MiB: unpacking takes long enough to be stopped
        # POPULATE pads values with zeros, which the RDB's LZF shrinks to ~2 MiB in all:
        # without compression the RDB, and so the archive, holds the 200 MiB
        c.config_set("rdbcompression", "no")
        c.execute_command("DEBUG", "POPULATE", 200, "big", 1024 * 1024)
    return cli("run", "--redis", src.url, "--to", store, "--compression", "none").stdout.strip()


def _leftovers(tmp: Path) -> list[Path]:
    return [p for p in tmp.iterdir() if p.name.startswith("backupctl-")]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopped_verify_and_restore_to_redis_remove_their_temp_folder(
    redis_factory: RedisFactory, tmp_path: Path, sig: signal.Signals
) -> None:
    src = redis_factory()
    store = tmp_path / "store"
    store.mkdir()
    backup_id = _big_backup(src, store)
    dest = redis_factory()
    commands = {
        "verify": ("verify", store, backup_id),
        "to-redis": ("restore", store, backup_id, "--to-redis", dest.url),
    }
    outputs: dict[str, str] = {}
    for name, args in commands.items():
        tmp = tmp_path / f"tmp-{name}"
        tmp.mkdir()
        # 20 MB/s: the first pass of the ~200 MiB archive lasts seconds, so the
        # signal lands in it, however fast unpacking gets (it took ~0.5 s unthrottled)
        proc = _start(*args, "--tmp-dir", tmp, "--limit-download", "20000")
        with _reaped(proc):
            wait_for(
                lambda tmp=tmp: any(p.is_file() for p in tmp.rglob("node-*/*")),  # type: ignore[misc]
                timeout=60,
                what=f"{name} to unpack",
            )
            done = _stopped(proc, sig)
        assert_one_clear_error(done, f"interrupted by {sig.name}")
        assert _leftovers(tmp) == [], name
        outputs[name] = done.stderr or ""
    # No key before the first pass (download and verification) was over: a key
    # copied means the signal landed in the load, which the progress shows.
    assert dest.dbsize() == 0 or "progress: load" in outputs["to-redis"]
