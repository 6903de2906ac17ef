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
    """Exit code 1, exactly one ``error: ...`` line on stderr containing every
    needle (case-insensitive), no traceback. Returns that line."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
    return lines[0]
