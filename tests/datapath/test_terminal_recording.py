"""The terminal recording check of issue 17: ``run`` and ``restore --to-redis``
of a 500 MiB dataset are never silent for long.

- On a terminal: each command runs under ``script`` (util-linux; it gives the
  command a pty and copies what the pty shows to a pipe we read). Every chunk
  of that output is timestamped as it arrives and split at carriage returns
  and newlines, so each redraw of the progress line is one frame; a frame
  counts when it names a step (``upload``, ``download``, ``load``...). Frames
  come at least every 2 s from the first one to the command's end.
- Off a terminal (pipes, like a Kubernetes Job's log): a stderr line at least
  every 10 s.

One dataset serves the four commands (terminal run and restore, then piped
run and restore); both restores show that the data arrived (equal ``DEBUG
DIGEST``), so a quiet command that did nothing cannot pass. CPU time about
50 s in all (~60 s of wall time on an idle 2-core machine; 3 min at load 8).

Before this check, ``restore --to-redis`` on a terminal drew its own
``loading:`` line over the ``download`` bar (still at 100%), and off a
terminal kept printing ``download ... (100%)`` while it loaded keys.

The dataset is 64,000 strings of 8 KiB of random-looking bytes (500 MiB of
values; the RDB and the archive are ~450 MiB, since LZF and zstd gain little),
written by pipelined SETs in ~6 s.
"""

from __future__ import annotations

import itertools
import os
import re
import select
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.datasets import fill_bulk
from support.redis_servers import RedisFactory, RedisServer

KEYS, VALUE_BYTES = 64_000, 8192  # 500 MiB of values
#: The labels of the steps of ``run`` and ``restore --to-redis`` (docs/cli-output.md).
STEP = re.compile(r"\b(connect|waiting for BGSAVE|upload|writing manifest|download|load)\b")
ANSI = re.compile(rb"\x1b(\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")
SECOND_BUDGET = 240  # per command, on a loaded 2-core machine


@pytest.fixture
def servers(redis_factory: RedisFactory) -> tuple[RedisServer, RedisServer]:
    source, target = redis_factory(), redis_factory()
    with source.client() as c:
        fill_bulk(c, KEYS, VALUE_BYTES)
        assert c.dbsize() == KEYS
    return source, target


def _run(source: RedisServer, store: Path) -> list[str]:
    return [sys.executable, "-m", "backupctl", "run", "--redis", source.url, "--to", str(store),
            "--target", "big"]  # fmt: skip


def _restore(store: Path, target: RedisServer) -> list[str]:
    return [sys.executable, "-m", "backupctl", "restore", str(store), "latest", "--target", "big",
            "--to-redis", target.url, "--flush"]  # fmt: skip


def _digest(server: RedisServer) -> bytes:
    with server.client() as c:
        digest: bytes = c.execute_command("DEBUG", "DIGEST")
        return digest


def _max_gap(times: list[float], start: float, end: float) -> float:
    return max(b - a for a, b in itertools.pairwise([start, *times, end]))


def _frames(chunk: bytes) -> list[str]:
    """What one chunk of pty output draws: each redraw of a line is a frame."""
    text = ANSI.sub(b"", chunk).decode(errors="replace")
    return [f for f in re.split(r"[\r\n]", text) if f.strip()]


class Recording:
    """A command's pty output, frame by frame, with the time each was read."""

    def __init__(self, argv: list[str]) -> None:
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
        self.start = time.monotonic()
        proc = subprocess.Popen(
            ["script", "-q", "-e", "-c", shlex.join(argv), "/dev/null"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        assert proc.stdout is not None
        self.frames: list[tuple[float, str]] = []
        fd = proc.stdout.fileno()
        try:
            while time.monotonic() < self.start + SECOND_BUDGET:
                ready, _, _ = select.select([fd], [], [], 0.5)
                if not ready:
                    continue
                data = os.read(fd, 65536)
                if not data:  # script exited: the pty is closed
                    break
                now = time.monotonic()
                self.frames += [(now, f) for f in _frames(data)]
        finally:
            if proc.poll() is None:
                proc.kill()
            self.returncode = proc.wait(timeout=30)
            proc.stdout.close()
        self.end = time.monotonic()

    def progress_times(self) -> list[float]:
        return [t for t, f in self.frames if STEP.search(f)]

    def steps(self) -> list[str]:
        """The step labels shown, in order, each once."""
        seen: list[str] = []
        for _, f in self.frames:
            m = STEP.search(f)
            if m and m.group(1) not in seen:
                seen.append(m.group(1))
        return seen

    def explain(self) -> list[str]:
        return [f"{t - self.start:6.1f} {f[:100]}" for t, f in self.frames]


def _check_terminal(rec: Recording) -> None:
    assert rec.returncode == 0, rec.explain()
    times = rec.progress_times()
    assert times, rec.explain()
    # from the first drawing (Python's start-up shows nothing) to the end
    assert times[0] - rec.start < 10, rec.explain()
    assert _max_gap(times, times[0], rec.end) <= 2, rec.explain()


def _lines(argv: list[str]) -> tuple[float, float, list[tuple[float, str]]]:
    start = time.monotonic()
    lines: list[tuple[float, str]] = []
    with subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as proc:  # fmt: skip
        assert proc.stderr is not None
        for line in proc.stderr:  # ends when the process closes stderr
            lines.append((time.monotonic(), line.rstrip("\n")))
            assert time.monotonic() < start + SECOND_BUDGET, lines
        assert proc.wait(timeout=30) == 0, lines
    return start, time.monotonic(), lines


def test_run_and_restore_to_redis_of_500_mib_show_progress_on_a_terminal_and_off_one(
    servers: tuple[RedisServer, RedisServer], tmp_path: Path
) -> None:
    """One dataset for the four commands (filling it is a fifth of the time)."""
    source, target = servers
    store = tmp_path / "store"
    store.mkdir()
    took: dict[str, float] = {}

    # on a terminal: a frame at least every 2 s
    run = Recording(_run(source, store))
    _check_terminal(run)
    assert run.steps()[-2:] == ["upload", "writing manifest"], run.explain()
    restore = Recording(_restore(store, target))
    _check_terminal(restore)
    # the load is its own step, shown by the one display (no second line drawn over it)
    assert restore.steps() == ["download", "load"], restore.explain()
    assert not any("loading:" in f for _, f in restore.frames), restore.explain()
    assert _digest(target) == _digest(source)
    took["terminal run"], took["terminal restore"] = (
        run.end - run.start,
        restore.end - restore.start,
    )

    # off a terminal: a line at least every 10 s
    for name, argv in (
        ("piped run", _run(source, store)),
        ("piped restore", _restore(store, target)),
    ):
        start, end, lines = _lines(argv)
        assert _max_gap([t for t, _ in lines], start, end) <= 10, lines
        assert any(text.startswith("progress: ") for _, text in lines), lines
        took[name] = end - start
    # the load is reported as such, with the keys, not as a download at 100%
    assert any(text.startswith("progress: load: ") and " keys" in text for _, text in lines), lines
    assert _digest(target) == _digest(source)
    print(", ".join(f"{k} {v:.1f} s" for k, v in took.items()))
