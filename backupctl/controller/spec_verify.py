"""``spec.verify`` of a RedisBackup: when restore drills run (pure).

A drill is a Job running ``backupctl verify`` on the newest successful
backup: every archive downloaded, every sha256 and RDB checked. It lives in a
module of its own because spec.py is at its size limit, and because the
rule (exactly one of a cron ``schedule`` or ``afterEachBackup``) is the
drills' own. ``decryption`` (the keys a drill of encrypted or signed
backups needs) is parsed as ``RedisRestore.spec.decryption`` is
(:mod:`backupctl.controller.spec_crypto`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backupctl.controller.schedule import parse_cron
from backupctl.controller.spec_crypto import DecryptionSpec, parse_decryption
from backupctl.controller.spec_fields import SpecError, obj, opt_bool, opt_str


@dataclass(frozen=True)
class VerifySpec:
    """Drills on ``schedule`` (a cron, in the RedisBackup's time zone) or after
    every successful backup (``after_each_backup``)."""

    schedule: str | None = None
    after_each_backup: bool = False
    #: the identity (and verify / SSE-C keys) the drill Job gets as files
    decryption: DecryptionSpec | None = None


def parse_verify(raw: Any, p: str) -> VerifySpec | None:
    """``spec.verify``; None when unset."""
    if raw is None:
        return None
    spec: Mapping[str, Any] = obj(raw, p)
    schedule = opt_str(spec, "schedule", p)
    after = opt_bool(spec, "afterEachBackup", p, False)
    if (schedule is None) == (not after):
        raise SpecError(p, "set exactly one of schedule or afterEachBackup: true")
    if schedule is not None:
        schedule = parse_cron(schedule, f"{p}.schedule")
    decryption = parse_decryption(spec.get("decryption"), f"{p}.decryption")
    return VerifySpec(schedule=schedule, after_each_backup=after, decryption=decryption)


__all__ = ["VerifySpec", "parse_verify"]
