"""Running the real ``backupctl`` CLI from tests, as a user would: a
subprocess with the caller's environment, and the one-clear-error check
every user-caused failure must pass (exit 1, one ``error:`` line, no
traceback)."""

from __future__ import annotations

import os
import subprocess
import sys


def cli(
    *args: object, env: dict[str, str] | None = None, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``backupctl ARGS``; with ``check``, fail the test on a non-zero exit."""
    proc = subprocess.run(
        [sys.executable, "-m", "backupctl", *map(str, args)],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"backupctl {args} failed ({proc.returncode}): {proc.stderr}")
    return proc


def assert_one_clear_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """A failure's exit code (1-7, 130, 143: docs/cli-output.md), exactly one
    ``error: ...`` line on stderr (besides ``progress:`` lines) containing
    every needle (case-insensitive), no traceback. Returns that line."""
    assert proc.returncode in (*range(1, 8), 130, 143), (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [
        line
        for line in proc.stderr.splitlines()
        if line.strip() and not line.startswith("progress: ")
    ]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
    return lines[0]
