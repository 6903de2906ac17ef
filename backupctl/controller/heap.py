"""The controller's long-lived objects, kept out of Python's cyclic garbage collector.

Why a module of its own: a controller of a few thousand RedisBackups holds hundreds of
thousands of long-lived objects (kopf's per-object state and daemon tasks, the trackers,
the live bodies). Each full collection of the cyclic GC walks all of them: at 2,000
RedisBackups, 0.1-0.5 s with the event loop stopped, several times a minute while the
daemons start and at every cron slot -- one in a 5 s slot was a tenth of it and added half
a second to the last Jobs. Once the controller has settled (every resource had its
first pass, no pass waits), what is alive is collected once and frozen
(:func:`gc.freeze`): later collections walk only what was made since. Objects freed by
their reference count are freed as before; only a cycle made before a freeze and dropped
after it stays (a deleted RedisBackup's share), so it freezes again only when the fleet
grew by :data:`GROWTH` since the last time.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable

from backupctl.core.malloc import trim_malloc

#: Freeze again once the RedisBackups grew by this share since the last freeze ...
GROWTH = 0.1
#: ... and by at least this many.
AT_LEAST = 100
log = logging.getLogger("backupctl.operator")


def freeze_due(resources: int, frozen_at: int | None) -> bool:
    """Whether ``resources`` RedisBackups call for a (new) freeze, the last one made at
    ``frozen_at`` (None: never)."""
    if frozen_at is None:
        return resources > 0
    return resources - frozen_at >= max(AT_LEAST, GROWTH * frozen_at)


def collect_and_freeze() -> None:
    """Collect, freeze, and hand the freed heap back to the kernel (glibc's
    ``malloc_trim``: start-up's transient lists and bodies; a no-op elsewhere)."""
    gc.collect()
    gc.freeze()
    trim_malloc()


def rss_mib() -> float:
    """This process's resident memory (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


class Heap:
    """Freezes the heap (``freeze``) when :func:`freeze_due` says, at a quiet moment."""

    def __init__(self, freeze: Callable[[], None] = collect_and_freeze) -> None:
        self.freeze = freeze
        self.frozen_at: int | None = None

    def settle(self, resources: int) -> bool:
        """Collect and freeze now if due (the caller knows it is a quiet moment)."""
        if not freeze_due(resources, self.frozen_at):
            return False
        started, rss = time.monotonic(), rss_mib()
        self.freeze()
        self.frozen_at = resources
        log.info(
            "froze %d long-lived objects (%d RedisBackups) in %.2f s; RSS %.0f -> %.0f MiB",
            gc.get_freeze_count(),
            resources,
            time.monotonic() - started,
            rss,
            rss_mib(),
        )
        return True


__all__ = ["Heap", "collect_and_freeze", "freeze_due"]
