"""``run`` is never silent for long (issue 17): on a terminal (a pty) the
progress display is redrawn at least every 2 s, also while BGSAVE runs and
nothing moves; off a terminal (a pipe, a Kubernetes Job's log) a
``progress:`` line comes at least every 10 s, naming the step.

Before this change ``run`` showed an unlabelled ``backup 0/? bytes`` during
BGSAVE on a terminal and printed nothing at all off one until the end.

A real ``redis-server`` on 127.0.0.1 whose BGSAVE is slowed down with
``rdb-key-save-delay`` (microseconds per key) so it lasts ~12 s.
"""

from __future__ import annotations

import itertools
import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.redis_servers import RedisFactory, RedisServer, populate

KEYS = 4000
DELAY_US = 3000  # x KEYS = ~12 s of BGSAVE


@pytest.fixture
def slow_server(redis_factory: RedisFactory) -> RedisServer:
    server = redis_factory()
    with server.client() as c:
        populate(c, KEYS)
        c.config_set("rdb-key-save-delay", DELAY_US)
    return server


def _argv(server: RedisServer, store: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "backupctl", "run", "--redis", server.url, "--to", str(store),
            *extra]  # fmt: skip


def _gaps(times: list[float], start: float, end: float) -> float:
    points = [start, *times, end]
    return max(b - a for a, b in itertools.pairwise(points))


def test_off_a_terminal_a_progress_line_comes_at_least_every_10_s(
    slow_server: RedisServer, tmp_path: Path
) -> None:
    start = time.monotonic()
    lines: list[tuple[float, str]] = []
    with subprocess.Popen(
        _argv(slow_server, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stderr is not None and proc.stdout is not None
        deadline = start + 120
        for line in proc.stderr:  # ends when the process closes stderr
            lines.append((time.monotonic(), line.rstrip("\n")))
            assert time.monotonic() < deadline
        proc.wait(timeout=30)
        end = time.monotonic()
        printed = proc.stdout.read()
    assert proc.returncode == 0, lines
    assert end - start > 11, "the BGSAVE was not slow: the test shows nothing"
    progress = [(t, text) for t, text in lines if text.startswith("progress: ")]
    assert any("waiting for BGSAVE" in text for _, text in progress), lines
    assert any(text.startswith("progress: upload: ") for _, text in progress), lines
    assert _gaps([t for t, _ in lines], start, end) <= 10, lines
    assert printed.strip().startswith("backup-")


def test_log_format_json_writes_one_object_per_line_with_stable_fields(
    slow_server: RedisServer, tmp_path: Path
) -> None:
    with slow_server.client() as c:
        c.config_set("rdb-key-save-delay", 0)
    proc = subprocess.run(
        _argv(slow_server, tmp_path, "--log-format", "json"),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stderr.splitlines()]
    assert all({"time", "level", "message"} <= set(r) for r in records)
    steps = [r["step"] for r in records if r.get("event") == "progress"]
    assert "waiting for BGSAVE" in steps and "upload" in steps
    (stored,) = [r for r in records if r.get("event") == "stored"]
    assert stored["keys"] >= KEYS and stored["size"] > 0


def test_on_a_terminal_the_display_is_redrawn_at_least_every_2_s(
    slow_server: RedisServer, tmp_path: Path
) -> None:
    master, slave = pty.openpty()
    start = time.monotonic()
    proc = subprocess.Popen(
        _argv(slow_server, tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
    )
    os.close(slave)
    chunks: list[tuple[float, bytes]] = []
    try:
        while time.monotonic() < start + 120:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the pty
                    break
                if not data:
                    break
                chunks.append((time.monotonic(), data))
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    end = time.monotonic()
    assert proc.returncode == 0
    assert end - start > 11, "the BGSAVE was not slow: the test shows nothing"
    shown = b"".join(c for _, c in chunks).decode(errors="replace")
    # every step is drawn, also one shorter than a redraw interval (writing the manifest)
    for step in ("waiting for BGSAVE", "upload", "writing manifest"):
        assert step in shown, step
    times = [t for t, _ in chunks]
    # from the first drawing (after Python's start-up, which the pty shows nothing of) to the end
    assert times[0] - start < 10
    assert _gaps(times, times[0], end) <= 2, [round(t - start, 1) for t in times]
