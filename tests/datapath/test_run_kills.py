"""kill -9 at every step of ``run``, ``verify`` and ``restore --to-redis``,
then a rerun (issue 13, findings 4 and 6).

After every kill and one rerun: ``list`` shows only complete backups, the
complete backups from before are intact (``verify`` passes, a restore gives
the source's digest), no temp folder of a killed process is left, and the
server's configuration is what it was.

``run`` is stopped at a step by ``tests/support/run_with_pause.py``, which
runs the real CLI with a hook that pauses at that step (no environment
variable is read by the product); SIGKILL lands inside the pause. ``verify``
and ``--to-redis`` are killed once their files appear in ``--tmp-dir``, and
``--to-redis`` again once keys reach the target.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from support.cli_runner import cli
from support.redis_servers import RedisFactory, RedisServer, child_pids, populate, wait_for

REPO = Path(__file__).resolve().parents[2]
RUN_WITH_PAUSE = [sys.executable, str(REPO / "tests" / "support" / "run_with_pause.py")]
#: (method, step): every step of a run, for both snapshot methods.
STOPS = [
    ("bgsave", "snapshot"),
    ("bgsave", "upload"),
    ("bgsave", "manifest"),
    ("replication", "stream"),
    ("replication", "upload"),
    ("replication", "manifest"),
]


def _config(server: RedisServer) -> dict[str, Any]:
    with server.client() as c:
        return dict(c.config_get("*"))


def _listed(store: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(cli("list", store, "--json").stdout)["backups"]
    return out


def _leftovers(pids: list[int], *parents: Path) -> list[str]:
    """Temp folders, in ``parents``, of any of the processes ``pids``."""
    marks = [f"-{pid}-" for pid in pids]
    return [
        str(p)
        for parent in parents
        for p in parent.iterdir()
        if p.name.startswith(("backupctl-", "bkctl-")) and any(m in p.name for m in marks)
    ]


def _kill_at(step: str, args: list[object]) -> int:
    """Start ``backupctl ARGS`` paused at ``step``; SIGKILL it there. Its pid."""
    proc = subprocess.Popen(
        [*RUN_WITH_PAUSE, step, "60", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = []
    try:
        for _ in range(len(STOPS) + 1):  # one line per step at most
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line.strip())
            if line.strip() == f"step {step}":
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        _, rest = proc.communicate(timeout=30)
    assert f"step {step}" in seen, (step, seen, rest)
    assert proc.returncode == -signal.SIGKILL
    return proc.pid


def test_run_killed_at_every_step_then_a_rerun(redis_factory: RedisFactory, tmp_path: Path) -> None:
    src = redis_factory()
    populate(src.client(), 20_000)
    store = tmp_path / "store"
    store.mkdir()
    before = cli("run", "--redis", src.url, "--to", store, "--target", "t").stdout.strip()
    config = _config(src)
    digest = src.digest()

    killed = []
    for method, step in STOPS:
        args = ["run", "--redis", src.url, "--to", store, "--target", "t", "--method", method]
        if method == "replication":
            args.append("--pause-rdbcompression")
        killed.append(_kill_at(step, args))
        assert [b["id"] for b in _listed(store)] == [before], (method, step)
        assert _config(src) == config, (method, step)  # rdbcompression is back by "stream"

    after = cli("run", "--redis", src.url, "--to", store, "--target", "t").stdout.strip()
    listed = _listed(store)
    assert sorted(b["id"] for b in listed) == [before, after]
    assert all(b["complete"] for b in listed)
    everything = json.loads(cli("list", store, "--all", "--json").stdout)["backups"]
    assert len([b for b in everything if not b["complete"]]) >= 1  # the killed ones, marked
    assert _config(src) == config
    assert _leftovers(killed, Path(tempfile.gettempdir()), tmp_path) == []
    cli("verify", store, before)
    restored = tmp_path / "restored"
    cli("restore", store, before, "--target", "t", "--to-dir", restored)
    assert redis_factory(dir=restored).digest() == digest


def _kill_when(proc: subprocess.Popen[str], ready: Any, what: str) -> None:
    try:
        wait_for(ready, timeout=60, poll=0.005, what=what)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)


def _start(*args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "backupctl", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _files_in(folder: Path) -> bool:
    return any(p.is_file() and p.stat().st_size > 0 for p in folder.rglob("node-*/**/*"))


def test_verify_and_restore_to_redis_killed_then_rerun_leave_nothing(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    src = redis_factory()
    populate(src.client(), 50_000)
    with src.client() as c:  # ~150 MiB more: unpacking takes a while
        c.execute_command("DEBUG", "POPULATE", 150, "big", 1024 * 1024)
    store = tmp_path / "store"
    store.mkdir()
    backup_id = cli("run", "--redis", src.url, "--to", store, "--compression", "none")
    backup_id_text = backup_id.stdout.strip()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    killed = []

    proc = _start("verify", store, backup_id_text, "--tmp-dir", tmp)
    _kill_when(proc, lambda: _files_in(tmp), "verify to unpack")
    killed.append(proc.pid)
    assert _leftovers(killed, tmp)  # SIGKILL: nothing could clean up
    rerun = cli("verify", store, backup_id_text, "--tmp-dir", tmp)
    assert f"removed 1 leftover temp folder of killed runs: {tmp}" in rerun.stderr
    assert list(tmp.iterdir()) == []

    dest = redis_factory()
    proc = _start("restore", store, backup_id_text, "--to-redis", dest.url, "--tmp-dir", tmp)
    _kill_when(proc, lambda: _files_in(tmp), "--to-redis to unpack")
    killed.append(proc.pid)
    proc = _start("restore", store, backup_id_text, "--to-redis", dest.url, "--tmp-dir", tmp)
    servers: list[int] = []

    def copying() -> bool:
        servers[:] = [p for p in child_pids(proc.pid) if p]
        return dest.dbsize() > 0

    _kill_when(proc, copying, "--to-redis to copy keys")
    killed.append(proc.pid)
    for pid in servers:  # the local redis-server goes with us (setpriv --pdeathsig)
        wait_for(lambda pid=pid: not _alive(pid), timeout=15, what=f"local server {pid} to stop")

    rerun = cli("restore", store, backup_id_text, "--to-redis", dest.url, "--tmp-dir", tmp,
                "--flush")  # fmt: skip
    assert "leftover temp folder" in rerun.stderr
    assert dest.digest() == src.digest()
    assert list(tmp.iterdir()) == []
    assert _leftovers(killed, tmp, Path(tempfile.gettempdir()), Path("/tmp")) == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"
