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

High availability (docs/ha.md): with an :class:`Election` in the Config, :func:`run`
first waits to hold the shard's Lease (:mod:`backupctl.controller.leader`, on a thread of
its own: :mod:`backupctl.controller.leader_thread`), serving only the health check
meanwhile, and starts kopf once it leads; if it then fails to renew within the renew
deadline, it stops kopf (its ``stop_flag``) and exits 1, before the
Lease expires for the others, so the Deployment restarts it as a standby. With a
``shard`` in the Config, kopf watches only the RedisBackups and RedisRestores labelled
``backupctl.dev/shard=<shard>`` (``''``: those without the label).

Time: the clock is real UTC time (:class:`~backupctl.controller.runtime.SystemClock`)
unless the caller of :func:`run` passes another; a clock that jumps wakes
every RedisBackup daemon (:meth:`~backupctl.controller.runtime.Clock.watch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp.web
import kopf
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric

from backupctl import __version__
from backupctl.controller import login as controller_login

# Importing the handlers registers them with kopf: one process serves both controllers.
from backupctl.controller.backup import handlers as _backup_handlers  # noqa: F401
from backupctl.controller.backup.job_watch import JobWatch
from backupctl.controller.backup.state import Controller
from backupctl.controller.kube import Kube
from backupctl.controller.leader import LEADER, LeaderElector, shard_label
from backupctl.controller.leader_rules import (
    Timings,
    job_shard_selector,
    lease_name,
    shard_selector,
)
from backupctl.controller.leader_thread import LeaseThread
from backupctl.controller.manifests import LABEL_BACKUP, LABEL_MANAGED_BY, LABEL_RESTORE
from backupctl.controller.restore.handlers import Restores
from backupctl.controller.runtime import Clock, SystemClock
from backupctl.controller.shard_jobs import adopt_jobs
from backupctl.controller.spec import API_GROUP

IMAGE_ENV = "BACKUPCTL_IMAGE"
DEFAULT_IMAGE = f"backupctl:{__version__}"
#: Exit status of a leader that could not renew its Lease in time (the Deployment restarts it).
EXIT_LOST_LEADERSHIP = 1
log = logging.getLogger("backupctl.operator")


@dataclass(frozen=True)
class Election:
    """Leader election (``--leader-elect``): who this process is, where its Lease lives."""

    #: Holder identity: the pod name ($POD_NAME from the downward API).
    identity: str
    #: Namespace of the Lease: the controller's own ($POD_NAMESPACE).
    namespace: str
    timings: Timings = field(default_factory=Timings)


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
    #: Handle only resources labelled ``backupctl.dev/shard=<shard>`` ('': unlabelled
    #: ones; None: all resources).
    shard: str | None = None
    #: Lead before handling (None: handle at once, as a single replica).
    election: Election | None = None

    @classmethod
    def from_env(cls) -> Config:
        """The defaults, with the Job image from ``$BACKUPCTL_IMAGE`` when set."""
        return cls(image=os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE)


# --- kopf handlers ------------------------------------------------------------------


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The controllers' one login (:mod:`backupctl.controller.login`)."""
    return controller_login.login(**kwargs)


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: kopf keeps one for change handlers (``@kopf.on.create/update/
    field``), and this operator has none -- daemons, event handlers and an index only
    (tests/unit/test_backup_wake.py checks). kopf still built one per watch event (a
    deep copy of the body) and parsed the stored one: a tenth of the controller's CPU at
    a cron slot, where every RedisBackup's status changes."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return None  # type: ignore[return-value]  # kopf skips a None essence

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


#: Seconds kopf keeps an object's worker after its last event (kopf's default: 5).
QUEUE_IDLE_SECONDS = 1.0
#: Seconds the API server keeps one watch open (kopf re-lists and watches again).
WATCH_SERVER_TIMEOUT = 600


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """All kopf settings in one place, then the state both controllers share."""
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"
    settings.persistence.diffbase_storage = NoDiffBase()
    # Watch only the Jobs backupctl made (server-side selector: less traffic).
    # kopf watches only the RedisRestores' Jobs (server-side selector: less traffic); the
    # RedisBackups' Jobs are watched by the controller itself (backup/job_watch.py).
    kopf_jobs = f"{LABEL_MANAGED_BY}=backupctl,{LABEL_RESTORE}"
    backup_jobs = f"{LABEL_MANAGED_BY}=backupctl,{LABEL_BACKUP}"
    settings.watching.label_selectors["batch", "jobs"] = kopf_jobs
    settings.watching.reconnect_backoff = 1.0
    # A watch that stalls without an error (a dropped connection behind a NAT or
    # a load balancer) would otherwise hang forever (kopf #232, #585, #810): the
    # API server ends each watch after server_timeout, the client gives up a
    # little later, and a connection attempt after connect_timeout.
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT
    settings.watching.client_timeout = WATCH_SERVER_TIMEOUT + 60
    settings.watching.connect_timeout = 30
    settings.posting.loggers = False  # Events are posted explicitly, one per transition
    # kopf keeps a worker task per object for this long after its last event: at start-up
    # and at a cron slot that is one per RedisBackup at once (memory at the peak).
    settings.queueing.idle_timeout = QUEUE_IDLE_SECONDS
    config: Config = memo.config
    selector = shard_selector(config.shard)
    clock: Clock = memo.clock
    memo.kube = kube = Kube.connect()  # the one API client of both controllers
    if selector is not None:  # this shard's resources only (server-side selector)
        settings.watching.label_selectors[API_GROUP, "redisbackups"] = selector
        settings.watching.label_selectors[API_GROUP, "redisrestores"] = selector
        kopf_jobs += f",{job_shard_selector(config.shard)}"  # and its own Jobs
        backup_jobs += f",{job_shard_selector(config.shard)}"
        settings.watching.label_selectors["batch", "jobs"] = kopf_jobs
        if config.shard:
            await adopt_jobs(kube, config.shard, memo.get("namespaces"))
    controller = Controller(kube=kube, image=config.image, clock=clock, shard=config.shard)
    memo.restores = Restores(kube=kube, image=config.image, clock=clock, shard=config.shard)
    kube.on_request = controller.metrics.api_request
    memo.metrics.sources.append(controller.metrics.registry)  # served by run()
    watch = JobWatch(kube, backup_jobs, memo.get("namespaces"), controller.job_changed)
    controller.jobs, controller.jobs_listed = watch, watch.listed
    controller.tasks.append(asyncio.create_task(watch.run()))
    controller.tasks.append(asyncio.create_task(controller.watch_changes()))
    controller.tasks.append(asyncio.create_task(controller.events.run()))
    controller.tasks.append(asyncio.create_task(clock.watch(controller.wake_all)))
    memo.controller = controller


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    controller: Controller | None = memo.get("controller")
    if controller is not None:
        lost: threading.Event | None = memo.get("lost")
        if lost is None or not lost.is_set():  # (a leader that lost its Lease acts no more)
            await controller.events.flush()  # a graceful stop loses no queued Event
        for task in controller.tasks:
            task.cancel()
    kube: Kube | None = memo.get("kube")
    if kube is not None:
        await kube.aclose()


# --- running -------------------------------------------------------------------------


class Registries:
    """A Prometheus collector serving several registries on one port: the default one
    (the leader gauge) and the controller's own, added once kopf has started."""

    def __init__(self) -> None:
        self.sources: list[CollectorRegistry] = [REGISTRY]

    def collect(self) -> Iterator[Metric]:
        for source in list(self.sources):
            yield from source.collect()


@contextlib.asynccontextmanager
async def standby_health(url: str | None) -> AsyncIterator[None]:
    """While waiting to lead, answer the liveness URL (kopf serves it once it runs): a
    standby is healthy, and must not be restarted by its liveness probe."""
    if url is None:
        yield
        return
    parts = urlsplit(url)

    async def healthy(_: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response({"standby": True})

    web = aiohttp.web.Application()
    web.router.add_get(parts.path or "/", healthy)
    runner = aiohttp.web.AppRunner(web)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, parts.hostname, parts.port, reuse_address=True).start()
    try:
        yield
    finally:
        await runner.cleanup()


async def standby(election: LeaseThread) -> bool:
    """Wait to lead; False if SIGTERM/SIGINT came first (kopf, which handles them once
    it runs, is not started yet: the standby just ends, exit status 0)."""
    loop = asyncio.get_running_loop()
    acquiring = asyncio.ensure_future(election.acquire())
    signals = (signal.SIGTERM, signal.SIGINT)
    handled = threading.current_thread() is threading.main_thread()
    if handled:
        for sig in signals:
            loop.add_signal_handler(sig, acquiring.cancel)
    try:
        await acquiring
    except asyncio.CancelledError:
        if not acquiring.cancelled():
            raise
        log.info("stopped while standing by")
        return False
    finally:
        if handled:
            for sig in signals:
                loop.remove_signal_handler(sig)
    return True


def exit_now() -> None:
    """End the process at once with :data:`EXIT_LOST_LEADERSHIP`: no cleanup that could
    wait on the unreachable API server (or act) after the Lease is lost."""
    logging.shutdown()
    os._exit(EXIT_LOST_LEADERSHIP)


async def operate(
    *,
    namespaces: Iterable[str],
    all_namespaces: bool,
    liveness: str | None,
    config: Config,
    clock: Clock,
) -> int:
    """Lead (when electing), then run kopf until it stops; the exit status."""
    metrics = Registries()
    if config.metrics_port is not None:
        served = CollectorRegistry(auto_describe=False)
        served.register(metrics)
        start_http_server(config.metrics_port, addr=config.metrics_address, registry=served)
    thread: LeaseThread | None = None
    election = config.election
    if election is not None:
        elector = LeaderElector(
            Kube.connect(connections=2),  # its own client: never behind the handlers' requests
            namespace=election.namespace,
            name=lease_name(config.shard),
            identity=election.identity,
            timings=election.timings,
            shard=config.shard,
        )
        thread = LeaseThread(elector)
        async with standby_health(liveness):
            if not await standby(thread):
                await thread.close(release=False)
                return 0  # stopped (SIGTERM/SIGINT) before it led
    else:
        LEADER.labels(shard_label(config.shard)).set(1)  # alone: it handles everything
    stop_flag, lost = asyncio.Event(), threading.Event()
    if thread is not None:
        loop = asyncio.get_running_loop()

        def on_lost() -> None:  # called on the election thread
            lost.set()
            loop.call_soon_threadsafe(stop_flag.set)

        timings = election.timings if election is not None else Timings()
        # Stop kopf, and end the process if kopf takes longer than half the time left
        # before the Lease expires for the others.
        grace = max(0.5, (timings.lease_duration - timings.renew_deadline) / 2)
        thread.keep_leading(on_lost, grace, exit_now)
    try:
        await kopf.operator(
            standalone=True,
            clusterwide=all_namespaces,
            namespaces=list(namespaces),
            liveness_endpoint=liveness,
            memo=kopf.Memo(
                config=config,
                clock=clock,
                metrics=metrics,
                namespaces=None if all_namespaces else list(namespaces),
                lost=lost,
            ),
            stop_flag=stop_flag,
        )
    finally:
        if thread is not None and thread.keeping is not None:
            thread.keeping.cancel()
    if lost.is_set():
        log.error("stopped handling after losing the Lease: exiting %d", EXIT_LOST_LEADERSHIP)
        exit_now()
    if thread is not None:
        await thread.close(release=True)
    return 0


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
    (real time by default); exits 1 if it loses its Lease."""
    kopf.configure(verbose=verbose)
    code = asyncio.run(
        operate(
            namespaces=namespaces,
            all_namespaces=all_namespaces,
            liveness=liveness,
            config=config or Config.from_env(),
            clock=clock or SystemClock(),
        )
    )
    if code:
        raise SystemExit(code)


__all__ = ["EXIT_LOST_LEADERSHIP", "Config", "Election", "NoDiffBase", "run"]
