"""Run ``backupctl ARGS`` with a pause at one step of ``run``, so a test can
SIGKILL it exactly there.

    python tests/support/run_with_pause.py STEP SECONDS run [run options...]

Every step (:data:`backupctl.ops.backup_options.STEPS`) is reported on
stderr as ``step NAME`` (flushed); at STEP the run then sleeps SECONDS.
Runs the real CLI app in this process, with the hook passed as click's
context object (:class:`backupctl.ops.backup_options.RunHooks`).
"""

from __future__ import annotations

import sys
import time

from backupctl.cli.app import app
from backupctl.ops.backup_options import STEPS, RunHooks


def main(argv: list[str]) -> None:
    stop_at, pause, args = argv[0], float(argv[1]), argv[2:]
    assert stop_at in STEPS, f"unknown step {stop_at!r}: one of {STEPS}"

    def on_step(name: str) -> None:
        sys.stderr.write(f"step {name}\n")
        sys.stderr.flush()
        if name == stop_at:
            time.sleep(pause)

    app(args=args, prog_name="backupctl", obj=RunHooks(on_step=on_step))


if __name__ == "__main__":
    main(sys.argv[1:])
