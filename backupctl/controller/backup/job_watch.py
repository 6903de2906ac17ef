"""The RedisBackups' Jobs, listed and watched by the controller itself.

Why a module of its own: the daemons read their Jobs from an in-memory index (a pass
lists them from the API only while a run is active). That index was kopf's
(``@kopf.index``), and kopf runs its whole per-object machinery for every Job event (a
worker task per Job, a body wrapper, three loggers, cause detection, a patch to apply):
at a cron slot, where every RedisBackup's Job appears at once, that was a sixth of the
controller's CPU per Job. Here one list and one watch per namespace (or one across the
cluster) feed a plain dict, each event parsed into the few fields a
:class:`~backupctl.controller.jobs.JobView` keeps.

The semantics kopf's index had are kept: the daemons start only once the first list is
in (:attr:`JobWatch.listed`), every change reports the resource whose Jobs changed
(``on_change``, also for a deleted Job), a watch that ends is resumed from its last
``resourceVersion``, one that is too old (410 Gone) or fails is listed again after a
pause.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from backupctl.controller.jobs import JobView
from backupctl.controller.kube import ApiError, Kube
from backupctl.controller.manifests import LABEL_BACKUP
from backupctl.controller.observe import job_view

#: (namespace, backup label) -> the RedisBackup's Jobs: (owner uid, JobView), by Job name.
Key = tuple[str, str]
Entry = tuple[str, JobView]
#: Seconds the API server keeps one watch open (then it is resumed).
WATCH_SECONDS = 600
#: Pause before listing again after a failure (seconds), doubling while failures last.
RETRY_PAUSE, RETRY_PAUSE_MAX = 1.0, 30.0
log = logging.getLogger("backupctl.operator")


def job_entry(body: Mapping[str, Any]) -> tuple[Key, str, Entry] | None:
    """Where a Job goes in the index: its resource's key, its name, its owner's uid and
    its view (None: not a RedisBackup's Job)."""
    meta = body.get("metadata") or {}
    label = (meta.get("labels") or {}).get(LABEL_BACKUP)
    if label is None:
        return None
    owners = [o.get("uid", "") for o in meta.get("ownerReferences") or []]
    key = (str(meta.get("namespace") or ""), str(label))
    return key, str(meta.get("name")), (owners[0] if owners else "", job_view(body))


class JobWatch:
    """The index of the RedisBackups' Jobs, kept by a list and a watch per namespace."""

    def __init__(
        self,
        kube: Kube,
        selector: str,
        namespaces: Iterable[str] | None,
        on_change: Callable[[Key], None],
    ) -> None:
        self.kube = kube
        self.selector = selector
        #: ('': every namespace, one watch across the cluster)
        self.namespaces = list(namespaces or ()) or [""]
        self.on_change = on_change
        self.jobs: dict[Key, dict[str, Entry]] = {}
        #: set once every namespace was listed (the daemons wait for it)
        self.listed = asyncio.Event()
        self._first: set[str] = set(self.namespaces)

    def get(self, key: Key, default: Collection[Entry] = ()) -> Collection[Entry]:
        """The Jobs of the RedisBackup ``key`` (namespace, backup label)."""
        found = self.jobs.get(key)
        return found.values() if found else default

    async def run(self) -> None:
        """List and watch every namespace until cancelled."""
        async with asyncio.TaskGroup() as group:
            for namespace in self.namespaces:
                group.create_task(self._follow(namespace))

    async def _follow(self, namespace: str) -> None:
        pause = RETRY_PAUSE
        while True:
            try:
                version: str | None = await self._list(namespace)
                pause = RETRY_PAUSE
                while version is not None:
                    began = time.monotonic()
                    version = await self._watch(namespace, version)
                    if time.monotonic() - began < RETRY_PAUSE:  # (no hot loop, ever)
                        await asyncio.sleep(RETRY_PAUSE)
            except ApiError as e:
                log.warning("watching Jobs in %r: %s; listing again in %.0f s", namespace, e, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_PAUSE_MAX)

    async def _list(self, namespace: str) -> str:
        page = await self.kube.list_page("batch", "v1", "jobs", namespace, self.selector)
        fresh: dict[Key, dict[str, Entry]] = {}
        for body in page.get("items") or []:
            found = job_entry(body)
            if found is not None:
                key, name, entry = found
                fresh.setdefault(key, {})[name] = entry
        old = [k for k in self.jobs if not namespace or k[0] == namespace]
        for key in old:
            if self.jobs.pop(key) != fresh.get(key):
                self.on_change(key)
        for key, jobs in fresh.items():
            self.jobs[key] = jobs
            if key not in old:
                self.on_change(key)
        self._first.discard(namespace)
        if not self._first:
            self.listed.set()
        return str((page.get("metadata") or {}).get("resourceVersion") or "")

    async def _watch(self, namespace: str, version: str) -> str | None:
        """Apply the events of one watch; the version to resume from (None: list again)."""
        async for event in self.kube.watch(
            "batch",
            "v1",
            "jobs",
            namespace,
            labels=self.selector,
            resource_version=version,
            timeout=WATCH_SECONDS,
        ):
            kind, body = event.get("type"), event.get("object") or {}
            if kind == "ERROR":  # 410 Gone: too old to resume
                return None
            version = str((body.get("metadata") or {}).get("resourceVersion") or version)
            if kind == "BOOKMARK":
                continue
            self.apply(str(kind), body)
        return version

    def apply(self, kind: str, body: Mapping[str, Any]) -> None:
        """One watch event (ADDED, MODIFIED, DELETED) into the index."""
        found = job_entry(body)
        if found is None:
            return
        key, name, entry = found
        jobs = self.jobs.setdefault(key, {})
        if kind == "DELETED":
            jobs.pop(name, None)
            if not jobs:
                del self.jobs[key]
        else:
            jobs[name] = entry
        self.on_change(key)


__all__ = ["JobWatch", "job_entry"]
