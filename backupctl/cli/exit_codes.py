"""The exit codes of every command, and which failure gets which (pure).

Why a module of its own: scripts and Jobs branch on the exit code (retry a
store outage, page on a corrupt backup, never retry bad flags), so the table
is one public contract, documented in ``docs/cli-output.md`` and the same for
every command. :func:`classify` maps an exception to its :class:`Failure`
(exit code and the word ``--json`` prints as ``error.code``); the CLI's
output module prints it.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from enum import IntEnum

from backupctl.ops.backup_options import BackupError
from backupctl.ops.restore_dir import RestoreError
from backupctl.redis.errors import RedisNodeError
from backupctl.redis.live import LiveError
from backupctl.redis.load import LoadError
from backupctl.store.archive import ArchiveError
from backupctl.store.backends.base import AccessDenied, NotFound, StorageError, StoreURLError
from backupctl.store.catalog import BackupNotFound, CatalogError, InvalidReference
from backupctl.store.delete import DeleteRefused
from backupctl.store.retention import PolicyError

__all__ = ["ExitCode", "Failure", "classify", "interrupted"]


class ExitCode(IntEnum):
    """What a script can tell apart. ``name.lower()`` is the JSON ``error.code``."""

    OK = 0
    ERROR = 1  # anything not below (and bugs)
    USAGE = 2  # bad flags, arguments or values: fix the command line
    REDIS = 3  # Redis unreachable, wrong password, refused a command
    STORE = 4  # store unreachable, credentials missing or denied
    NOT_FOUND = 5  # no such backup, bucket or container
    INTEGRITY = 6  # a checksum, archive, RDB or manifest is wrong; a restore check failed
    UNSAFE = 7  # refused to do something that could lose data (see the message)
    INTERRUPTED = 130  # SIGINT (Ctrl-C): 128 + 2
    TERMINATED = 143  # SIGTERM: 128 + 15

    @property
    def word(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Failure:
    """How a failure ends: its exit code and the one line for stderr."""

    code: ExitCode
    message: str


def interrupted(signal_name: str) -> ExitCode:
    """130 for SIGINT, 143 for SIGTERM (the shell's 128 + signal number)."""
    return ExitCode.TERMINATED if signal_name == signal.SIGTERM.name else ExitCode.INTERRUPTED


#: Redis failures that say the data is wrong, not the connection.
_REDIS_INTEGRITY = frozenset({"rdb"})


#: A live server that cannot be quiesced (check-redis' other failures: not verified).
_LIVE_REDIS = ("CONFIG SET", "background save")
#: Words of the messages that refuse to risk data (dir in use, keys present, an
#: RDB the target cannot load): the fix is a flag or another target, not a retry.
#: ("connection refused" is not one: hence the comma).
_REFUSALS = ("refused,", "--force", "--flush")


def _refused(message: str) -> bool:
    return any(word in message for word in _REFUSALS)


def classify(error: BaseException) -> ExitCode:
    """The exit code of an exception a command let out (most specific first)."""
    match error:
        case StoreURLError() | PolicyError() | InvalidReference():
            return ExitCode.USAGE
        case NotFound() | BackupNotFound():
            return ExitCode.NOT_FOUND
        case DeleteRefused():
            return ExitCode.UNSAFE
        case AccessDenied() | StorageError():
            return ExitCode.STORE
        case ArchiveError() | CatalogError():
            return ExitCode.INTEGRITY
        case RedisNodeError() if error.reason == "input":  # a URL, a password file
            return ExitCode.USAGE
        case LoadError() | RestoreError() if _refused(str(error)):
            return ExitCode.UNSAFE
        case RedisNodeError() if error.reason in _REDIS_INTEGRITY:
            return ExitCode.INTEGRITY
        case RedisNodeError():
            return ExitCode.REDIS
        case LiveError() if "state file" in str(error):
            return ExitCode.ERROR
        case LiveError() if any(w in str(error) for w in _LIVE_REDIS):
            return ExitCode.REDIS
        case LiveError():  # check-redis: the restore is not verified
            return ExitCode.INTEGRITY
        case RestoreError() if "nothing staged" in str(error):
            return ExitCode.NOT_FOUND
        case RestoreError() if "verification failed" in str(error):
            return ExitCode.INTEGRITY
        case BackupError():
            return ExitCode.ERROR
    return ExitCode.ERROR
