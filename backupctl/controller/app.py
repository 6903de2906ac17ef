"""The operator process: kopf wiring for both controllers, and :func:`run`.

``backupctl operator`` calls :func:`run`, which starts kopf with a
:class:`Config` and a :class:`~backupctl.controller.runtime.Clock` in its
``memo``. The :func:`startup` handler sets every kopf setting in one place
and makes what both controllers share: THE one API client (``memo.kube``),
the clock (``memo.clock``), the RedisBackup controller's state
(``memo.controller``) and the RedisRestore controller's (``memo.restores``);
:func:`cleanup` closes the client.

The handlers themselves live with their controllers and register with kopf
when imported here: :mod:`backupctl.controller.backup.handlers` and
:mod:`backupctl.controller.restore.handlers`, so one process serves both.

Time: the clock is real UTC time (:class:`~backupctl.controller.runtime.SystemClock`)
unless the caller of :func:`run` passes another; a clock that jumps wakes
every RedisBackup daemon (:meth:`~backupctl.controller.runtime.Clock.watch`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import kopf

from backupctl import __version__

# Importing the handlers registers them with kopf: one process serves both controllers.
from backupctl.controller.backup import handlers as _backup_handlers  # noqa: F401
from backupctl.controller.backup.state import Controller
from backupctl.controller.kube import Kube
from backupctl.controller.manifests import LABEL_MANAGED_BY
from backupctl.controller.restore.handlers import Restores
from backupctl.controller.runtime import Clock, SystemClock
from backupctl.controller.spec import API_GROUP

IMAGE_ENV = "BACKUPCTL_IMAGE"
DEFAULT_IMAGE = f"backupctl:{__version__}"


@dataclass
class Config:
    """What ``backupctl operator`` was started with."""

    #: The image of the Jobs (the same backupctl, normally).
    image: str = DEFAULT_IMAGE
    #: Serve Prometheus metrics on this port (None: not at all).
    metrics_port: int | None = None
    #: ... on this address: every address by default, as Prometheus scrapes the
    #: pod IP (the health check's address is in the ``liveness`` URL of :func:`run`).
    metrics_address: str = "0.0.0.0"

    @classmethod
    def from_env(cls) -> Config:
        """The defaults, with the Job image from ``$BACKUPCTL_IMAGE`` when set."""
        return cls(image=os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE)


# --- kopf handlers ------------------------------------------------------------------


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """``$KUBECONFIG`` when set, else the pod's service account."""
    if os.environ.get("KUBECONFIG"):
        return kopf.login_with_kubeconfig(**kwargs)
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


#: Seconds the API server keeps one watch open (kopf re-lists and watches again).
WATCH_SERVER_TIMEOUT = 600


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """All kopf settings in one place, then the state both controllers share."""
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"
    # Watch only the Jobs backupctl made (server-side selector: less traffic).
    settings.watching.label_selectors["batch", "jobs"] = f"{LABEL_MANAGED_BY}=backupctl"
    settings.watching.reconnect_backoff = 1.0
    # A watch that stalls without an error (a dropped connection behind a NAT or
    # a load balancer) would otherwise hang forever (kopf #232, #585, #810): the
    # API server ends each watch after server_timeout, the client gives up a
    # little later, and a connection attempt after connect_timeout.
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT
    settings.watching.client_timeout = WATCH_SERVER_TIMEOUT + 60
    settings.watching.connect_timeout = 30
    settings.posting.loggers = False  # Events are posted explicitly, one per transition
    config: Config = memo.config
    clock: Clock = memo.clock
    memo.kube = kube = Kube.connect()  # the one API client of both controllers
    controller = Controller(kube=kube, image=config.image, clock=clock)
    memo.restores = Restores(kube=kube, image=config.image, clock=clock)
    kube.on_request = controller.metrics.api_request
    if config.metrics_port is not None:
        controller.metrics.serve(config.metrics_port, config.metrics_address)
    controller.tasks.append(asyncio.create_task(controller.watch_changes()))
    controller.tasks.append(asyncio.create_task(clock.watch(controller.wake_all)))
    memo.controller = controller


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    controller: Controller | None = memo.get("controller")
    if controller is not None:
        for task in controller.tasks:
            task.cancel()
    kube: Kube | None = memo.get("kube")
    if kube is not None:
        await kube.aclose()


# --- running -------------------------------------------------------------------------


def run(
    *,
    namespaces: Iterable[str] = (),
    all_namespaces: bool = False,
    liveness: str | None = None,
    config: Config | None = None,
    verbose: bool = False,
    clock: Clock | None = None,
) -> None:
    """Run the controllers in this process until SIGTERM/SIGINT, on ``clock``
    (real time by default)."""
    kopf.configure(verbose=verbose)
    kopf.run(
        standalone=True,
        clusterwide=all_namespaces,
        namespaces=list(namespaces),
        liveness_endpoint=liveness,
        memo=kopf.Memo(config=config or Config.from_env(), clock=clock or SystemClock()),
    )


__all__ = ["Config", "run"]
