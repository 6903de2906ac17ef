"""``--limit-upload`` / ``--limit-download`` (KiB/s) on every command that
moves archives: ``run``, ``copy``, ``verify``, ``restore`` and ``check``,
each timed against the same command without a limit, on one real backup of
~3 MiB of incompressible values (a limit of 1 MiB/s makes it take 2 s
more: the first second's worth is a burst).

Each command also accepts its ``BACKUPCTL_LIMIT_*`` variable; ``run`` is
timed with the variable to show that path too."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from support.cli_runner import cli
from support.redis_servers import RedisFactory

LIMIT = "1024"  # KiB/s
PAYLOAD = 3 * 1024 * 1024
#: A limited command takes this much longer than the same unlimited at least
#: (in theory 2 s: 3 MiB at 1 MiB/s after a 1 MiB burst).
MARGIN = 1.0


def timed(*args: object, env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.monotonic()
    proc = cli(*args, env=env)
    return time.monotonic() - start, proc.stdout


def test_every_transfer_command_holds_its_bandwidth_limit(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    server = redis_factory()
    client = server.client()
    for i in range(PAYLOAD // (64 * 1024)):
        client.set(f"k{i}", os.urandom(64 * 1024))
    store = tmp_path / "store"
    store.mkdir()
    base = ("--redis", server.url, "--to", str(store), "--target", "ns/a", "--json")

    free, out = timed("run", *base)
    bid = json.loads(out)["id"]
    archive = sum(f.stat().st_size for f in store.rglob("*.tar.zst"))
    #: what the token bucket alone must make a limited transfer of it wait
    floor = 0.9 * (archive - 1024 * 1024) / (1024 * 1024)
    limited, _ = timed("run", *base, env={"BACKUPCTL_LIMIT_UPLOAD": LIMIT})
    times = {"run": (free, limited)}

    offsite = tmp_path / "offsite"
    offsite.mkdir()
    for flag in ("--limit-download", "--limit-upload"):
        free, _ = timed("copy", store, _empty(offsite / f"free{flag}"), bid)
        limited, _ = timed("copy", store, _empty(offsite / f"limited{flag}"), bid, flag, LIMIT)
        times[f"copy {flag}"] = (free, limited)

    free, _ = timed("verify", store, bid)
    limited, _ = timed("verify", store, bid, "--limit-download", LIMIT)
    times["verify"] = (free, limited)

    free, _ = timed("restore", store, bid, "--to-dir", _empty(tmp_path / "free-dir"))
    limited, _ = timed(
        "restore", store, bid, "--to-dir", _empty(tmp_path / "dir"), "--limit-download", LIMIT
    )
    times["restore"] = (free, limited)

    free, _ = timed("check", store, "--read-data")
    limited, _ = timed("check", store, "--read-data", "--limit-download", LIMIT)
    times["check"] = (free, limited)

    assert floor > 1.5, archive
    for command, (free, limited) in times.items():
        assert limited >= floor and limited - free >= MARGIN, (command, free, limited, floor)


def _empty(path: Path) -> Path:
    path.mkdir()
    return path
