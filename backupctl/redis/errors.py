"""The one exception of the Redis side.

Why a module of its own: every way backupctl talks to a node -- redis-py
commands, the raw replication handshake, the ``redis-check-rdb`` tool, a URL
typed by a user -- fails with this type, and its ``str()`` is one line a user
can act on (never containing a password). The CLI and the Jobs print that
line; the controller copies it into the CR's ``Failed`` condition. It sits
apart so the pure address parsing can raise it without importing redis-py.
"""

from __future__ import annotations

__all__ = ["RedisNodeError"]


class RedisNodeError(Exception):
    """Talking to a Redis node failed. ``str()`` is one actionable line.

    ``reason`` is a short machine-readable word for status conditions and exit
    codes: ``auth``, ``noauth``, ``unreachable``, ``timeout``, ``tls``,
    ``protocol``, ``permission``, ``loading``, ``bgsave``, ``replication``,
    ``config``, ``rdb``, ``error``; ``input`` for a URL or password file that
    cannot be used (the user's to fix, exit code 2 in the CLI).
    """

    def __init__(self, message: str, *, reason: str = "error") -> None:
        super().__init__(" ".join(message.split()))  # always one line
        self.reason = reason
