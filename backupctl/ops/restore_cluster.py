"""``backupctl restore --to-cluster``: put a cluster backup set back into a
running Redis Cluster, file by file, into every node's data directory.

A cluster node keeps its identity and its slots in ``nodes.conf`` (left
alone), and a master that loads keys of slots it does not serve does not
serve them (Redis 7.0 marks the slots importing, 7.2 deletes the keys). So
each shard's archive goes to the nodes that serve *the same slots now*,
whatever their names, ordinals or current roles:

1. match (pure, :mod:`~backupctl.ops.restore_cluster_plan`): each shard of
   the backup set is paired with the live shard whose slot ranges are
   identical; a different number of shards or another slot layout is
   refused (reshard, or ``--to-redis``).
2. prepare (same module) looks at the live cluster, read only:
   ``cluster_state:ok``, every node reachable, a Redis version that reads
   the backup's RDB, and each node's data directory a directory *on this
   machine* holding that node's own ``nodes.conf``.
3. stage (:mod:`~backupctl.ops.restore_cluster_swap`) downloads each
   shard's archive once, into one node's directory, verifies it, and copies
   it (sha256 checked again) to the shard's other nodes: replicas too, so no
   node can come back with old data. Nothing Redis loads changes until every
   node is staged.
4. quiesce and swap (same module): every node is quiesced
   (:func:`backupctl.redis.live.quiesce`: it writes nothing more to its
   directory), then the staged files are swapped in on every node; the old
   ones go to ``.backupctl-previous-*``. The nodes keep serving the old data
   from memory until they restart.
5. restart (``--restart``, :mod:`~backupctl.ops.restore_cluster_restart`):
   ``SHUTDOWN NOSAVE`` every node at once, masters first, and wait for its
   supervisor to start it again (a new ``run_id``). verify then checks
   ``cluster_state:ok``, all 16384 slots served, the same slot layout, each
   shard's master loaded exactly the backup's key count for that shard, and
   its replicas are in sync with the same ``DEBUG DIGEST``.

This module runs the steps in order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from backupctl.core.timing import Monotonic, Sleep
from backupctl.ops.restore_cluster_plan import ShardPlan, prepare
from backupctl.ops.restore_cluster_restart import ShardCheck, restart, verify
from backupctl.ops.restore_cluster_swap import quiesce_and_swap, stage
from backupctl.ops.restore_dir import RestoreError
from backupctl.redis.address import ConnectionSpec
from backupctl.redis.errors import RedisNodeError
from backupctl.store.archive import Progress
from backupctl.store.backends.base import Backend
from backupctl.store.catalog import BackupEntry
from backupctl.store.encryption import Identities, require_keys

__all__ = ["ClusterRestoreResult", "restore_to_cluster"]


@dataclass(frozen=True)
class ClusterRestoreResult:
    id: str
    target: str
    keys: int
    shards: list[ShardPlan]
    previous: dict[str, Path | None]  # node host:port -> its previous-data folder
    restarted: bool
    checks: list[ShardCheck] | None  # with restart: the verification


def restore_to_cluster(
    store: Backend,
    entry: BackupEntry,
    seed: ConnectionSpec,
    *,
    appendonly: str = "auto",
    restart_nodes: bool = False,
    timeout: float = 600.0,
    progress: Progress | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    clock: Monotonic = time.monotonic,
    sleep: Sleep = time.sleep,
    identities: Identities | None = None,
) -> ClusterRestoreResult:
    """Steps 1-4 of the module docstring, and with ``restart_nodes`` step 5.
    Without it the nodes are left quiesced with the restored files in place:
    the caller must tell the user to restart every node now."""
    manifest = entry.manifest
    if manifest is None:
        raise RestoreError(f"backup {entry.id} is incomplete and cannot be restored")
    require_keys(manifest, identities)  # encrypted archives: before anything is touched
    plans = prepare(manifest, seed, appendonly=appendonly)
    stage(store, entry, plans, appendonly=appendonly, progress=progress, identities=identities)
    previous = quiesce_and_swap(plans, seed, manifest, timeout=timeout, now=now)
    checks = None
    if restart_nodes:
        started = clock()
        try:
            restart(plans, timeout=timeout, clock=clock, sleep=sleep)
            left = max(0.0, timeout - (clock() - started))
            checks = verify(manifest, seed, wait=left, clock=clock, sleep=sleep)
        except (RestoreError, RedisNodeError) as e:
            raise RestoreError(
                f"{e}. The restored files are in place on every node; each node's previous "
                "data is in its dir's .backupctl-previous-*"
            ) from None
    return ClusterRestoreResult(
        id=manifest.id,
        target=manifest.target,
        keys=manifest.keys,
        shards=list(plans),
        previous=previous,
        restarted=restart_nodes,
        checks=checks,
    )
