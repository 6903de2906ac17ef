"""The API emulator in a process of its own, for the benchmarks.

Why a module of its own: ``bench/controller_scale.py`` and :mod:`support.kube.bench_requests`
both measure the emulator's CPU, so it must run outside the measuring process; both start it
the same way. ``tests`` is the ``tests`` folder whose emulator runs (``bench_requests
--baseline`` runs another checkout's).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["start_emulator", "stop"]

EMULATOR = """
import cProfile, signal, sys, time
sys.path.insert(0, sys.argv[1])
from support.kube.api_server import EmulatorThread
thread = EmulatorThread().start()
if len(sys.argv) > 2:  # a profile path: SIGUSR1 starts cProfile on the loop, SIGUSR2 saves it
    profile = cProfile.Profile(time.thread_time)
    signal.signal(signal.SIGUSR1, lambda *_: thread.call(profile.enable))
    signal.signal(signal.SIGUSR2, lambda *_: (thread.call(profile.disable),
                                              profile.dump_stats(sys.argv[2])))
print(thread.url, flush=True)
try:
    while True:
        time.sleep(3600)
except KeyboardInterrupt:
    thread.stop(timeout=5)
"""


def start_emulator(tests: Path, profile: Path | None = None) -> tuple[subprocess.Popen[str], str]:
    """The emulator of ``tests`` in a new session, and its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-c", EMULATOR, str(tests), *([str(profile)] if profile else [])],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        stop(proc)
        raise SystemExit(f"the emulator in {tests} did not start: {url!r}")
    return proc, url


def stop(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """End ``proc`` and its session: SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)
