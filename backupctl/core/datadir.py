"""Names inside a Redis data directory that the restore steps and the
RedisRestore controller's Jobs agree on (pure constants)."""

import re

STAGING_PREFIX = ".backupctl-staging-"
PREVIOUS_PREFIX = ".backupctl-previous-"
#: In a staging folder, written last by ``restore --stage-only``: what to swap in.
STAGED_MARKER = ".backupctl-staged.json"
#: In a staging folder: the archive's files, apart from the tool's own names.
ARCHIVE_FOLDER = "archive"
#: In DIR, written when a swap finished: the last swap's result.
SWAP_RECORD = ".backupctl-restore.json"
#: In DIR while a swap is under way: what moves where (see ops.swap_journal).
SWAP_JOURNAL = ".backupctl-swap.json"


def staging_name(backup_id: str, pid: int | None = None) -> str:
    """``.backupctl-staging-<id>`` (a ``--stage-only`` copy, kept for
    ``--swap``) or ``.backupctl-staging-<id>-<pid>`` (one whole restore's)."""
    return f"{STAGING_PREFIX}{backup_id}" + ("" if pid is None else f"-{pid}")


def is_staging_of(name: str, backup_id: str | None) -> bool:
    """``name`` is a staging folder (of ``backup_id``, when given)."""
    if backup_id is None:
        return name.startswith(STAGING_PREFIX)
    return re.fullmatch(re.escape(staging_name(backup_id)) + r"(-\d+)?", name) is not None
