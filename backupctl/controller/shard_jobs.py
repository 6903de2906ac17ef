"""Jobs made before Jobs carried their controller's shard: labelled once, at start-up.

Why a module of its own: a sharded controller watches only the Jobs labelled with its
shard (``backupctl.dev/controller-shard``; a Job watch across every shard's Jobs costs
each controller the memory and events of all of them). Jobs created by an older version
carry no such label, so the shard's watch would never see them: a run started before the
upgrade would stay ``Running`` in the status until the next relist. :func:`adopt_jobs`
runs before kopf's watches start: it lists the unlabelled backupctl Jobs and labels those
owned by one of this shard's RedisBackups or RedisRestores (the pure choice is
:func:`~backupctl.controller.leader_rules.adoptable_jobs`). The unlabelled-default shard
needs none of this: its Job watch selects the unlabelled Jobs.
"""

from __future__ import annotations

import logging

from backupctl.controller.kube import ApiError, Kube
from backupctl.controller.leader_rules import (
    JOB_SHARD_LABEL,
    adoptable_jobs,
    shard_selector,
)
from backupctl.controller.manifests import LABEL_MANAGED_BY
from backupctl.controller.spec import API_GROUP, API_VERSION

log = logging.getLogger("backupctl.operator")


async def adopt_jobs(kube: Kube, shard: str, namespaces: list[str] | None) -> int:
    """Label this shard's unlabelled Jobs in ``namespaces`` (None: every namespace);
    how many were labelled. A failure is logged, not fatal: those Jobs are still found
    by the relist of a resource with a run in progress."""
    labelled = 0
    for namespace in namespaces if namespaces is not None else [""]:
        try:
            selector = shard_selector(shard)
            backups = await kube.list(API_GROUP, API_VERSION, "redisbackups", namespace, selector)
            restores = await kube.list(API_GROUP, API_VERSION, "redisrestores", namespace, selector)
            owners = {str(o["metadata"].get("uid")) for o in [*backups, *restores]}
            unlabelled = f"{LABEL_MANAGED_BY}=backupctl,!{JOB_SHARD_LABEL}"
            jobs = await kube.list("batch", "v1", "jobs", namespace, unlabelled)
            for job_namespace, name in adoptable_jobs(jobs, owners):
                patch = {"metadata": {"labels": {JOB_SHARD_LABEL: shard}}}
                await kube.patch("batch", "v1", "jobs", job_namespace, name, patch)
                labelled += 1
        except ApiError as e:
            log.warning(
                "could not label the older Jobs of shard %s (relists find them): %s", shard, e
            )
    if labelled:
        log.info("labelled %d Jobs made before Jobs carried their shard", labelled)
    return labelled


__all__ = ["adopt_jobs"]
