"""Bounds on what a manifest read from a store may claim (pure).

A manifest comes from a store, and a store can be hostile or damaged: a
``"parts": 1000000000`` once made restore build a billion part names before
reading a single archive byte. Every count, size and path a manifest holds is
checked here, as it is parsed, against limits far above any real backup and
before anything is sized by it. A value out of bounds raises
:class:`ManifestValueError` (a ``ValueError``) whose text names the field and
the limit; :mod:`backupctl.store.catalog` turns it into its one-line
``CatalogError``.
"""

from __future__ import annotations

from typing import Any

#: A manifest larger than this is refused unread (a real one is ~1.5 KiB per node).
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
#: Nodes in one backup (a cluster has at most 16384 masters, plus replicas).
MAX_NODES = 65_536
#: Files in one node's archive (an RDB, an AOF manifest, its base and incr files).
MAX_FILES = 10_000
#: Bytes of one file or archive: 1 PiB.
MAX_BYTES = 1 << 50
#: Keys in one node.
MAX_KEYS = 1 << 48
#: Slot ranges of one node, and the largest slot.
MAX_SLOT = 16_383
#: Characters of any one text field (names, versions, times, digests).
MAX_TEXT = 4096

_FILE_FIELDS = {"path", "size", "sha256", "kind", "parts"}
_ARCHIVE_FIELDS = {"key", "size", "sha256", "compression", "encryption"}


class ManifestValueError(ValueError):
    """A manifest field that is missing, of the wrong type or out of bounds."""


def whole(value: Any, what: str, limit: int) -> int:
    """``value`` as a whole number in ``0..limit`` (JSON booleans and
    floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ManifestValueError(f"{what} must be a whole number, not {_show(value)}")
    if not 0 <= value <= limit:
        raise ManifestValueError(f"{what} is {value}, outside 0..{limit}")
    return value


def text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ManifestValueError(f"{what} must be a string, not {_show(value)}")
    if len(value) > MAX_TEXT:
        raise ManifestValueError(f"{what} is {len(value)} characters long (at most {MAX_TEXT})")
    return value


def items(value: Any, what: str, limit: int) -> list[Any]:
    if not isinstance(value, list):
        raise ManifestValueError(f"{what} must be a list, not {_show(value)}")
    if len(value) > limit:
        raise ManifestValueError(f"{what} has {len(value)} entries (at most {limit})")
    return value


def mapping(value: Any, what: str, allowed: set[str] | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ManifestValueError(f"{what} must be an object, not {_show(value)}")
    if allowed is not None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise ManifestValueError(f"{what} has unknown field(s) {', '.join(unknown[:5])}")
    return value


def field(d: dict[str, Any], name: str, what: str) -> Any:
    if name not in d:
        raise ManifestValueError(f"{what} has no {name!r}")
    return d[name]


def relative_path(value: Any, what: str) -> str:
    """A ``/``-separated relative path without ``.``, ``..``, empty segments or NUL."""
    path = text(value, what)
    if not path or "\0" in path or any(p in ("", ".", "..") for p in path.split("/")):
        raise ManifestValueError(f"{what} {path!r} is not a plain relative path")
    return path


def file_fields(value: Any, what: str) -> dict[str, Any]:
    """The keyword arguments of a ``FileEntry`` from a ``files[]`` entry."""
    d = mapping(value, what, _FILE_FIELDS)
    size = whole(field(d, "size", what), f"{what}.size", MAX_BYTES)
    # Every part holds at least one byte: no more parts than bytes.
    parts = whole(d.get("parts", 0), f"{what}.parts", max(1, size))
    return {
        "path": relative_path(field(d, "path", what), f"{what}.path"),
        "size": size,
        "sha256": text(field(d, "sha256", what), f"{what}.sha256"),
        "kind": text(field(d, "kind", what), f"{what}.kind"),
        "parts": parts,
    }


def archive_fields(value: Any, what: str) -> dict[str, Any]:
    """The keyword arguments of an ``ArchiveEntry`` from a node's ``archive``."""
    d = mapping(value, what, _ARCHIVE_FIELDS)
    return {
        "key": relative_path(field(d, "key", what), f"{what}.key"),
        "size": whole(field(d, "size", what), f"{what}.size", MAX_BYTES),
        "sha256": text(field(d, "sha256", what), f"{what}.sha256"),
        "compression": text(field(d, "compression", what), f"{what}.compression"),
        "encrypted_to": _encryption(d.get("encryption"), f"{what}.encryption"),
    }


def _encryption(value: Any, what: str) -> list[str]:
    """The recipient fingerprints of an archive's ``encryption`` (none: not encrypted)."""
    if value is None:
        return []
    d = mapping(value, what, {"format", "recipients"})
    if d.get("format") != "age":
        raise ManifestValueError(f"{what}.format must be 'age' (this backupctl reads no other)")
    prints = [
        text(p, f"{what}.recipients[{i}]")
        for i, p in enumerate(items(field(d, "recipients", what), f"{what}.recipients", 64))
    ]
    if not prints:
        raise ManifestValueError(f"{what}.recipients is empty")
    return prints


def slot_ranges(value: Any, what: str) -> list[list[int]]:
    ranges = []
    for i, r in enumerate(items(value, what, MAX_SLOT + 1)):
        pair = items(r, f"{what}[{i}]", 2)
        if len(pair) != 2:
            raise ManifestValueError(f"{what}[{i}] must be [start, end]")
        start = whole(pair[0], f"{what}[{i}] start", MAX_SLOT)
        end = whole(pair[1], f"{what}[{i}] end", MAX_SLOT)
        ranges.append([start, end])
    return ranges


def optional_text(value: Any, what: str) -> str | None:
    return None if value is None else text(value, what)


def _show(value: Any) -> str:
    kind = type(value).__name__
    return {"NoneType": "null", "dict": "an object", "list": "a list"}.get(kind, kind)


def reason(e: Exception) -> str:
    """One line for a parse failure: the message of our own checks, the field
    name of a KeyError, else the exception's text."""
    if isinstance(e, KeyError):
        return f"missing field {e}"
    return clip(str(e) or type(e).__name__, quote=False)


def clip(value: Any, *, quote: bool = True, limit: int = 80) -> str:
    """A value from a manifest, shortened for a message."""
    shown = repr(value) if quote else str(value)
    shown = "".join(c if c.isprintable() else "?" for c in shown[: limit + 1])
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"
