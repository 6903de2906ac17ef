"""Run ``backupctl delete --force ARGS`` and stop (sleep 60 s) right after
its N-th delete, so a test can SIGKILL it exactly there (as
prune_with_pause.py does for prune).

    python tests/support/delete_with_pause.py N STORE ID...

Each delete is reported on stderr as ``deleted KEY`` (flushed); the N-th is
followed by a ``paused`` line.
"""

from __future__ import annotations

import sys
import time

from backupctl.cli.app import app
from backupctl.cli.prune import PruneHooks


def main(argv: list[str]) -> None:
    stop_at, args = int(argv[0]), argv[1:]
    count = 0

    def deleted(key: str) -> None:
        nonlocal count
        count += 1
        sys.stderr.write(f"deleted {key}\n" + ("paused\n" if count == stop_at else ""))
        sys.stderr.flush()
        if count == stop_at:
            time.sleep(60)

    app(args=["delete", "--force", *args], prog_name="backupctl", obj=PruneHooks(on_delete=deleted))


if __name__ == "__main__":
    main(sys.argv[1:])
