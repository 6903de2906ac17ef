"""``backupctl operator -n NS`` as a restartable, killable subprocess for the
controller e2e tests, on a test clock (real time plus an offset file, see
:mod:`support.kube.fake_clock`; started through :mod:`support.kube.run_operator`),
with the metrics and liveness endpoints on free loopback ports, and its log kept."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from support.kube.emulator_thread import write_kubeconfig
from support.kube.fixtures import K8sApi
from support.object_stores import free_port

BACKUPCTL = str(Path(sys.executable).parent / "backupctl")
#: The folder that holds ``support`` (put on the launcher's PYTHONPATH).
TESTS = Path(__file__).resolve().parents[2]


def operator_command(clock_file: Path, *flags: str) -> list[str]:
    """The command that runs the real controller with ``backupctl operator``'s
    ``flags`` on the clock of ``clock_file`` (:mod:`support.kube.run_operator`)."""
    launcher = [sys.executable, "-m", "support.kube.run_operator"]
    return [*launcher, *flags, "--clock-offset-file", str(clock_file)]


def operator_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with ``tests/`` added to PYTHONPATH, after what is there (so a
    worktree's ``backupctl`` on PYTHONPATH still wins)."""
    path = [p for p in (env.get("PYTHONPATH", ""), str(TESTS)) if p]
    return {**env, "PYTHONPATH": os.pathsep.join(path)}


class Operator:
    """``backupctl operator -n ns`` as a subprocess on a test clock."""

    def __init__(
        self,
        api: K8sApi,
        workdir: Path,
        namespace: str = "ns",
        *,
        flags: tuple[str, ...] = (),
        pod_name: str | None = None,
        clock: Path | None = None,
    ) -> None:
        """``flags`` are added to the command; ``pod_name`` gives the process its own
        identity ($POD_NAME) and its own token (a kubeconfig of its own, so a test can
        partition it: ``api.partition(op.token)``); ``clock`` shares another's clock file."""
        self.api = api
        self.namespace = namespace
        self.flags = flags
        self.pod_name = pod_name
        self.clock = clock or workdir / "clock-offset"
        if clock is None:
            self.clock.write_text("0")
        self.log_path = workdir / f"operator{'-' + pod_name if pod_name else ''}.log"
        self.token: str | None = None
        self.kubeconfig: Path | None = None
        if pod_name:
            self.token = api.token_for(namespace, pod_name)
            self.kubeconfig = write_kubeconfig(
                workdir / f"kubeconfig-{pod_name}", api.thread.url, namespace, self.token
            )
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def set_time(self, t: datetime) -> None:
        """Make the operator's clock read ``t`` now (and run on from there)."""
        # API timestamps have whole seconds: jump on a second's boundary, and
        # say which, so an object created in the jump's second is not read
        # with the old offset (or one created before it with the new).
        boundary = math.floor(time.time()) + 1
        time.sleep(max(0.0, boundary - time.time()))
        offset = (t - datetime.fromtimestamp(boundary, UTC)).total_seconds()
        tmp = self.clock.with_suffix(".tmp")
        tmp.write_text(f"{offset:.3f} {boundary}")
        tmp.replace(self.clock)

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            flags = ["-n", self.namespace, "--verbose", "--image", "backupctl:test"]
            flags += ["--metrics-port", str(self.metrics_port), "--metrics-address", "127.0.0.1"]
            flags += ["--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz"]
            env = {**self.api.env, "PYTHONUNBUFFERED": "1"}
            if self.pod_name and self.kubeconfig:
                env.update(POD_NAME=self.pod_name, KUBECONFIG=str(self.kubeconfig))
            self.proc = subprocess.Popen(
                operator_command(self.clock, *flags, *self.flags),
                env=operator_env(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self, tail: int = 4000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-tail:]

    def metrics(self) -> str:
        return self._get(f"http://127.0.0.1:{self.metrics_port}/metrics")

    def healthz(self) -> str:
        return self._get(f"http://127.0.0.1:{self.liveness_port}/healthz")

    @staticmethod
    def _get(url: str) -> str:
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
            return str(response.read().decode())
