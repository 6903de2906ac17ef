"""What a backup run is asked to do (:class:`RunOptions`) and how it fails
(:class:`BackupError`).

Why a module of its own: the CLI builds the options, the orchestration in
:mod:`backupctl.ops.backup` reads the cluster and shard fields, and the
per-node archiver in :mod:`backupctl.ops.backup_node` reads the method and
compression fields; all three raise and catch the one error type. Keeping
them here lets those modules import each other's vocabulary without a cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from backupctl.redis.address import ConnectionSpec
from backupctl.store import backup_set
from backupctl.store.backends.base import Backend
from backupctl.store.encryption import Recipients
from backupctl.store.signing import Signer

__all__ = ["STEPS", "BackupError", "RunHooks", "RunOptions"]

#: The steps of a run, in order, as :attr:`RunHooks.on_step` hears them:
#: waiting for BGSAVE, or the replication stream started; the archive's
#: first bytes written to the store; the archive stored, manifest not yet.
STEPS = ("snapshot", "stream", "upload", "manifest")


class BackupError(Exception):
    """A backup could not be taken; ``str()`` says why and what to do."""


@dataclass(frozen=True)
class RunOptions:
    redis: ConnectionSpec
    store: Backend
    target: str
    method: str = "bgsave"  # "bgsave" | "replication"
    compression: str = "zstd"
    level: int | None = None
    data_dir: Path | None = None
    node_name: str | None = None
    timeout: float = 3600.0
    #: Feed the RDB through ``redis-check-rdb`` while it uploads (when the tool
    #: is installed): a corrupt snapshot is never committed, and the manifest
    #: gets the exact key count of the file rather than DBSIZE at BGSAVE time.
    check_rdb: bool = True
    #: Back up every shard of a Redis Cluster (discovered from the node given).
    cluster: bool = False
    #: In a cluster, back up a healthy replica of each shard to spare the master.
    prefer_replica: bool = False
    #: method replication: switch the server's rdbcompression off for the
    #: snapshot's fork (see backupctl.redis.replication.RdbCompressionPause).
    #: Opt-in: by default a server's settings are never touched.
    pause_rdbcompression: bool = False
    #: Write into this backup id instead of a new one (refused if it is complete).
    backup_id: str | None = None
    #: ``(I, N)``: back up only shard I of N (see :func:`run_shard_backup`).
    shard: tuple[int, int] | None = None
    #: Who writes a shard set (the controller: the RedisBackup's name).
    owner: str = backup_set.DEFAULT_OWNER
    #: Encrypt every archive to these age recipients (backupctl.store.encryption).
    encrypt_to: Recipients | None = None
    #: Sign the manifest with this key (backupctl.store.signing).
    signer: Signer | None = None
    #: Told each step as it starts (see :class:`RunHooks`).
    hooks: RunHooks = field(default_factory=lambda: RunHooks(), compare=False, repr=False)


@dataclass(frozen=True)
class RunHooks:
    """Callbacks into a run: ``on_step(name)`` as each of :data:`STEPS` starts
    (per node). For progress output, or a test that stops a run at a step
    (``tests/support/run_with_pause.py``)."""

    on_step: Callable[[str], None] = lambda step: None
