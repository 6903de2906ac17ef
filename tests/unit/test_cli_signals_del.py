"""A SIGTERM that arrives while a ``__del__`` runs is not lost (cli/signals.py)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from backupctl.cli.signals import Terminated, unwinding_signals


class _SignalledInDel:
    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # its handler runs inside this __del__


def test_a_signal_during_a_del_is_raised_after_it() -> None:
    with pytest.raises(Terminated, match="SIGTERM"), unwinding_signals():
        obj = _SignalledInDel()
        del obj
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # bounded: sent again within 50 ms
            time.sleep(0.01)
        pytest.fail("the signal was lost in __del__")
