"""SIGTERM and SIGINT unwind the command like an exception, so its cleanup runs.

Why a module of its own: Python dies on SIGTERM (what Kubernetes, ``timeout``
and ``kill`` send) without running ``finally`` blocks or ``ExitStack``
callbacks, so a killed ``run`` would leave a server's setting changed and a
killed ``verify`` or ``restore --to-redis`` its temporary folder. Inside
:func:`unwinding_signals` both signals raise :class:`Terminated` (a
``KeyboardInterrupt``, which is how Python already treats SIGINT) in the main
thread; the command's context managers undo what they did, and
:func:`backupctl.cli.output.user_errors` prints one line. A second signal
while that cleanup runs is ignored, so it is never cut short (SIGKILL still
ends the process at once; what that leaves is found by the next run).
A signal that arrives while a ``__del__`` runs (where a raised exception is
only printed, "Exception ignored", and lost) is sent again 50 ms later, to
be raised outside it.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["Terminated", "unwinding_signals"]

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Terminated(KeyboardInterrupt):
    """The process got SIGTERM or SIGINT; ``signal_name`` says which."""

    def __init__(self, signum: int) -> None:
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"interrupted by {self.signal_name}")


@contextmanager
def unwinding_signals() -> Iterator[None]:
    """Within the block, SIGTERM/SIGINT raise :class:`Terminated` once; the
    previous handlers are back afterwards. A no-op outside the main thread
    (only it may install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if fired:
            return  # the cleanup of the first one is under way
        if frame is not None and frame.f_code.co_name == "__del__":
            again = threading.Timer(0.05, os.kill, (os.getpid(), signum))
            again.daemon = True
            again.start()
            return
        fired = True
        raise Terminated(signum)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
