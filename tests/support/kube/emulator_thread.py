"""Running the emulator: a daemon thread with its own event loop, and a kubeconfig for it.

Why: tests, the kubelet stand-in and subprocesses (``kopf run``, ``kubectl``) are synchronous
or in other processes; they reach the emulator over HTTP on 127.0.0.1 while it serves from a
background loop. :class:`EmulatorThread` starts and stops it (bounded: open watches would
otherwise hold aiohttp's graceful shutdown) and runs code on its loop (the store is not
thread-safe); :func:`write_kubeconfig` points clients at it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp.web
import yaml

if TYPE_CHECKING:
    from .api_server import KubeEmulator


def write_kubeconfig(
    path: Path, url: str, namespace: str = "default", token: str = "emulator-token"
) -> Path:
    """Write a kubeconfig for an emulator at ``url`` (no TLS; the dummy token is an admin)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "emulator", "user": {"token": token}}],
        "contexts": [
            {
                "name": "emulator",
                "context": {"cluster": "emulator", "user": "emulator", "namespace": namespace},
            }
        ],
        "current-context": "emulator",
    }
    path.write_text(yaml.safe_dump(config))
    return path


class EmulatorThread:
    """Serve a :class:`~.api_server.KubeEmulator` on 127.0.0.1 from a daemon thread."""

    def __init__(self, emulator: KubeEmulator | None = None, port: int = 0) -> None:
        self.emulator = emulator
        self._port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="k8s-emulator", daemon=True
        )
        self._runner: aiohttp.web.ServerRunner | None = None
        self.url = ""

    def start(self, timeout: float = 10.0) -> EmulatorThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout)
        return self

    async def _start(self) -> None:
        if self.emulator is None:
            from .api_server import KubeEmulator  # the entry module imports this one

            self.emulator = KubeEmulator()
        await self.emulator.__aenter__()
        server = aiohttp.web.Server(self.emulator)
        self._runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, "127.0.0.1", self._port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run ``fn`` on the server's loop (the store is not thread-safe)."""

        async def wrapper() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout)

    def close_watches(self) -> int:
        assert self.emulator is not None
        return int(self.call(self.emulator.close_watches))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop within ``timeout``: end watches first (they block aiohttp's graceful shutdown)."""
        if not self._thread.is_alive():
            return

        async def _stop() -> None:
            assert self.emulator is not None
            self.emulator.close_watches()
            await asyncio.sleep(0)
            if self._runner is not None:
                await asyncio.wait_for(self._runner.cleanup(), timeout / 2)
            await self.emulator.__aexit__(None, None, None)

        try:
            asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(timeout)
        except Exception:  # a bounded stop: leftovers die with the loop
            pass
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._loop.close()
