"""``backupctl show [STORE] ID``: one backup's manifest, for people or
(``--json``) as stored, like ``restic cat snapshot``; and how each of its
objects is protected: age encryption (the recipients' fingerprints, from the
manifest), server-side encryption (S3 SSE, Azure encryption scope, GCS KMS
key) and the lock (S3 Object Lock, Azure immutability policy or legal hold,
GCS retention or hold), as the store
reports them (one request each per object). Nothing is downloaded or changed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

import typer

from backupctl.cli.defaults import Resolved, resolve_args
from backupctl.cli.options import EndpointOpt, JsonOpt, TargetOpt, get_store
from backupctl.cli.output import CommandResult, human, print_table, report, user_errors
from backupctl.core.timefmt import format_time
from backupctl.store import catalog
from backupctl.store.backends.base import Backend
from backupctl.store.backends.locks import HELD, describe_lock
from backupctl.store.backends.s3_options import ServerSideEncryption
from backupctl.store.backends.wrappers import retention_of, server_side_of
from backupctl.store.catalog import Manifest

StoreIdArgs = Annotated[
    list[str],
    typer.Argument(
        metavar="[STORE] ID",
        help="Store URL (default: BACKUPCTL_STORE or the config file) and a backup id or 'latest'.",
        show_default=False,
    ),
]


@dataclass(frozen=True)
class StoredObject:
    """One object of a backup and how it is protected."""

    key: str  # relative to the backup's folder: "redis-0.tar.zst.age", "manifest.json"
    node: str | None  # the node whose archive it is; None: the manifest
    encrypted_to: tuple[str, ...]  # age recipients' fingerprints; (): not encrypted
    server_side: ServerSideEncryption | None  # as the store reports it; None: none
    lock: tuple[str, datetime] | None  # (mode, retain-until; HELD: a hold); None: none

    def to_json(self) -> dict[str, Any]:
        sse = self.server_side
        return {
            "key": self.key,
            "node": self.node,
            "encryption": (
                {"format": "age", "recipients": list(self.encrypted_to)}
                if self.encrypted_to
                else None
            ),
            "serverSide": (
                None if sse is None else {"algorithm": sse.algorithm, "kmsKeyId": sse.kms_key_id}
            ),
            "lock": (
                None
                if self.lock is None
                else {
                    "mode": self.lock[0],
                    "retainUntil": None if self.lock[1] >= HELD else format_time(self.lock[1]),
                }
            ),
        }

    def row(self) -> tuple[str, str, str, str]:
        """OBJECT, ENCRYPTION, SERVER-SIDE, LOCK for people (pure)."""
        enc = "age to " + ", ".join(self.encrypted_to) if self.encrypted_to else "none"
        sse = self.server_side.describe() if self.server_side is not None else "none"
        lock = describe_lock(*self.lock) if self.lock is not None else "none"
        return (self.key, enc, sse, lock)


def stored_objects(store: Backend, manifest: Manifest) -> list[StoredObject]:
    """Every node's archive and the manifest, with their protection: encryption
    from the manifest, server-side encryption and lock asked of the store."""
    folder = catalog.backup_dir(manifest.target, manifest.id)
    wanted: list[tuple[str, str | None, tuple[str, ...]]] = [
        (n.archive.key, n.name, tuple(n.archive.encrypted_to)) for n in manifest.nodes
    ]
    wanted.append((catalog.manifest_key(manifest.target, manifest.id)[len(folder) :], None, ()))
    out = []
    for key, node, prints in wanted:
        stored = folder + key
        out.append(
            StoredObject(
                key, node, prints, server_side_of(store, stored), retention_of(store, stored)
            )
        )
    return out


@dataclass(frozen=True)
class Shown(CommandResult):
    manifest: Manifest
    objects: list[StoredObject] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "manifest": self.manifest.to_json(),
            "objects": [o.to_json() for o in self.objects],
        }

    def print_text(self) -> None:
        m = self.manifest
        for label, value in (
            ("id", m.id),
            ("target", m.target),
            ("created", m.created),
            ("server", f"{m.flavour} {m.version} ({m.mode})"),
            ("method", m.method),
            ("compression", m.compression),
            ("keys", str(m.keys)),
            ("size", f"{human(m.size)} ({m.size} bytes)"),
            ("written by", f"backupctl {m.tool_version}"),
        ):
            typer.echo(f"{label + ':':<13}{value}")
        typer.echo("")
        rows = [
            (
                n.name,
                n.role,
                n.version,
                str(n.keys),
                n.archive.key,
                human(n.archive.size),
                n.archive.sha256[:12],
            )
            for n in m.nodes
        ]
        print_table(("NODE", "ROLE", "VERSION", "KEYS", "ARCHIVE", "SIZE", "SHA256"), rows)
        if self.objects:
            typer.echo("")
            print_table(
                ("OBJECT", "ENCRYPTION", "SERVER-SIDE", "LOCK"), [o.row() for o in self.objects]
            )


def one_id(args: list[str], target: str | None, endpoint: str | None) -> Resolved:
    """``[STORE] ID`` with the defaults applied; a usage error unless one id.
    Called outside :func:`user_errors` so usage errors exit 2."""
    r = resolve_args(args, target=target, endpoint=endpoint)
    if len(r.ids) != 1:
        raise typer.BadParameter(
            f"expected one backup id after the store, got {len(r.ids)}", param_hint="'ID'"
        )
    return r


def find_one(r: Resolved, store: Backend | None = None) -> catalog.BackupEntry:
    """The one complete backup ``r`` names (in ``store``, default: ``r``'s)."""
    store = store or get_store(r.stores[0], r.endpoint)
    return catalog.find(store, r.ids[0], r.target)


def show(
    args: StoreIdArgs,
    target: TargetOpt = None,
    endpoint: EndpointOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a backup's manifest: when, what server, which nodes and archives.

    Then how each object is protected: age encryption (the recipients'
    fingerprints), server-side encryption and the lock as the store reports
    them ("none" where there is none).

    Example: backupctl show s3://bucket/redis latest --target prod/cache
    """
    r = one_id(args, target, endpoint)
    with user_errors():
        store = get_store(r.stores[0], r.endpoint)
        entry = find_one(r, store)
        assert entry.manifest is not None  # find() returns complete backups only
        objects = stored_objects(store, entry.manifest)
        report(Shown(entry.manifest, objects), as_json=as_json, termination_log=None)
