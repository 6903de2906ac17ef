"""``restore --to-cluster``, steps 3 and 4: stage every shard's files on its
nodes, then quiesce every node and swap the staged files in.

Why a module of its own: these are the steps that change data directories,
and their order is what makes a failure safe. Nothing Redis loads changes
until every node of every shard is staged and verified; nothing is swapped
until every node is quiesced and the topology is still the one planned;
before the first swap any failure resumes the nodes and removes the staged
copies, after it the error says exactly which nodes were swapped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from backupctl.ops.restore_cluster_plan import (
    Member,
    ShardPlan,
    match_shards,
    members_of,
    node_run_id,
)
from backupctl.ops.restore_dir import (
    RestoreError,
    discard_staged,
    stage_to_dir,
    staged_dir,
    swap_staged,
)
from backupctl.redis.address import ConnectionSpec
from backupctl.redis.cluster import cluster_shards
from backupctl.redis.connection import connect
from backupctl.redis.errors import RedisNodeError
from backupctl.redis.live import LiveError, quiesce, resume
from backupctl.store.archive import Progress
from backupctl.store.backends.base import Backend
from backupctl.store.catalog import BackupEntry, Manifest
from backupctl.store.encryption import Identities

__all__ = ["QUIESCE_STATE", "discard", "quiesce_and_swap", "stage"]

#: In each node's data directory while it is quiesced: its original settings.
QUIESCE_STATE = ".backupctl-quiesce.json"
MAX_PARALLEL_SHARDS = 8


def stage(
    store: Backend,
    entry: BackupEntry,
    plans: Sequence[ShardPlan],
    *,
    appendonly: str,
    progress: Progress | None = None,
    identities: Identities | None = None,
) -> None:
    """Download each shard's archive once (shards in parallel), verify it,
    copy it to the shard's other nodes. On any failure every staged copy is
    removed and :class:`RestoreError` says which shard failed."""

    def one(plan: ShardPlan) -> None:
        source: Path | None = None
        for m in plan.members:
            stage_to_dir(
                store,
                entry,
                m.dir,
                appendonly=appendonly,
                node=plan.backup.name,
                dbfilename=m.dbfilename,
                aof_dirname=m.appenddirname,
                aof_filename=m.appendfilename,
                progress=progress if source is None else None,
                source=source,
                identities=identities,
            )
            source = source or staged_dir(m.dir, entry.id)

    errors: list[str] = []
    try:
        with ThreadPoolExecutor(max_workers=min(len(plans), MAX_PARALLEL_SHARDS)) as pool:
            futures = [pool.submit(one, p) for p in plans]
            for p, fut in zip(plans, futures, strict=True):
                try:
                    fut.result()
                except Exception as e:  # every shard's outcome first, then one error
                    errors.append(f"{p.label} (backup node {p.backup.name}): {e}")
    except BaseException:
        discard(plans, entry.id)
        raise
    if errors:
        discard(plans, entry.id)
        raise RestoreError(
            f"staging failed, no node was changed (staged copies removed): {'; '.join(errors)}"
        )


def discard(plans: Sequence[ShardPlan], backup_id: str) -> None:
    for p in plans:
        for m in p.members:
            discard_staged(m.dir, backup_id)


def quiesce_and_swap(
    plans: Sequence[ShardPlan],
    seed: ConnectionSpec,
    manifest: Manifest,
    *,
    timeout: float,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, Path | None]:
    """Quiesce every node, check nothing moved meanwhile, then swap on every
    node; returns each node's previous-data folder. Before the first swap
    any failure resumes the quiesced nodes and removes the staged copies."""
    members = members_of(plans)
    quiesced: list[Member] = []
    try:
        run_ids: dict[str, str] = {}
        for m in members:
            quiesced.append(m)  # resume() of a node that has no state file does nothing
            try:
                quiesce(m.spec, m.dir / QUIESCE_STATE, timeout=timeout)
            except (LiveError, RedisNodeError) as e:
                raise RestoreError(f"cannot quiesce {m.display}: {e}") from None
            run_ids[m.display] = node_run_id(m.spec)
        _require_same_topology(plans, seed, manifest)
        for m in members:  # one restarted since it was quiesced would write over the swap
            if node_run_id(m.spec) != run_ids[m.display]:
                raise RestoreError(
                    f"{m.display} restarted while the restore was quiescing the cluster: nothing "
                    "was swapped (staged copies removed); run the restore again"
                )
    except BaseException as e:
        problems = _resume(quiesced)
        discard(plans, manifest.id)
        if problems:
            raise RestoreError(
                f"{e}; nothing was swapped, but setting back what quiesce changed failed on "
                f"{'; '.join(problems)} (restart those nodes to get their configuration back)"
            ) from None
        raise
    previous: dict[str, Path | None] = {}
    for m in members:
        try:
            result = swap_staged(m.dir, manifest.id, now=now)
        except (OSError, RestoreError) as e:
            done = ", ".join(previous) or "none"
            raise RestoreError(
                f"swap failed on {m.display} ({m.dir}): {e}. Swapped so far: {done} (their old "
                "files are in .backupctl-previous-*); every node is still quiesced and serves "
                "its old data: fix the cause and swap the rest with restore --swap --force "
                "--to-dir DIR (--force: the quiesced node runs there), then restart every node"
            ) from None
        previous[m.display] = result.previous
        (m.dir / QUIESCE_STATE).unlink(missing_ok=True)  # from now on only a restart is safe
    return previous


def _resume(members: Sequence[Member]) -> list[str]:
    problems = []
    for m in members:
        try:
            resume(m.spec, m.dir / QUIESCE_STATE)
        except (LiveError, RedisNodeError) as e:
            problems.append(f"{m.display}: {e}")
    return problems


def _require_same_topology(
    plans: Sequence[ShardPlan], seed: ConnectionSpec, manifest: Manifest
) -> None:
    """The slots and node sets still are what :func:`prepare` saw (a
    resharding or a node added meanwhile would make the mapping wrong)."""
    client = connect(seed)
    try:
        matches = match_shards(manifest, cluster_shards(client))
    finally:
        client.close()
    now = {m.slots: {n.node_id for n in m.live.nodes} for m in matches}
    for p in plans:
        if now.get(p.slots) != {m.node_id for m in p.members}:
            raise RestoreError(
                f"the nodes of {p.label} changed during the restore: nothing was swapped "
                "(staged copies removed); run the restore again"
            )
