"""Run ``backupctl restore ...`` as the real CLI, and SIGKILL this process
just before the Nth step of the swap (crash-point tests of ``--to-dir``).

Usage: ``python -m support.restore_kill_at N restore STORE ID --to-dir DIR ...``.
Each step's name is printed on stderr (``step: NAME``) before it runs, so a
test learns the steps from a run with N=0 (never kills). The hook reaches the
swap as the ``before_step`` parameter of ``restore_into_dir``: production
code reads no switch for this."""

from __future__ import annotations

import functools
import os
import signal
import sys

from backupctl.cli import restore as restore_cli
from backupctl.cli.app import main
from backupctl.cli.restore_dir import restore_into_dir
from backupctl.cli.restore_modes import DIR


def run(kill_at: int, argv: list[str]) -> None:
    calls = 0

    def before_step(step: str) -> None:
        nonlocal calls
        calls += 1
        print(f"step: {step}", file=sys.stderr, flush=True)
        if calls == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    restore_cli.MODES[DIR] = functools.partial(restore_into_dir, before_step=before_step)
    sys.argv = ["backupctl", *argv]
    main()


if __name__ == "__main__":
    run(int(sys.argv[1]), sys.argv[2:])
