"""The one RFC 3339 format/parse pair (Kubernetes style: UTC, ``Z``, whole
seconds) for status fields, manifests and termination messages.

One failure contract: :func:`parse_time` returns None for anything that is not
an RFC 3339 time (a missing field, a typo in a hand-edited status); callers
that must refuse such input say so in their own words."""

from __future__ import annotations

from datetime import UTC, datetime


def format_time(t: datetime) -> str:
    """``2024-01-01T12:00:00Z``: RFC 3339 in UTC, second precision."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 string as an aware UTC datetime (a naive one is taken as
    UTC); None for anything else."""
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)
