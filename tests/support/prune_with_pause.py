"""Run ``backupctl prune ARGS`` with a pause after every delete, so a test
can SIGKILL the prune in the middle of its work.

    python tests/support/prune_with_pause.py SECONDS STORE [prune options...]

Each delete is reported on stderr as ``deleted KEY`` (flushed) before the
pause. Runs the real CLI app in this process, with the hook passed as click's
context object (:class:`backupctl.cli.prune.PruneHooks`).
"""

from __future__ import annotations

import sys
import time

from backupctl.cli.app import app
from backupctl.cli.prune import PruneHooks


def main(argv: list[str]) -> None:
    pause, args = float(argv[0]), argv[1:]

    def deleted(key: str) -> None:
        sys.stderr.write(f"deleted {key}\n")
        sys.stderr.flush()
        time.sleep(pause)

    app(args=["prune", *args], prog_name="backupctl", obj=PruneHooks(on_delete=deleted))


if __name__ == "__main__":
    main(sys.argv[1:])
