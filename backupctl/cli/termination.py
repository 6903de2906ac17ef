"""The termination message: the JSON a Job's pod leaves for the controller.

Kubernetes keeps at most 4096 bytes of the file a container names in
``terminationMessagePath``, and a JSON cut at that length does not parse. So
the message is fitted, never cut: the first candidate a command offers that
fits (its full result, then any smaller variants it declares), else the last
one shrunk step by step until it does: long strings shortened, long lists and
maps cut to their first items, then whole fields dropped, the biggest first.
``ok`` and ``error`` are always kept (the error shortened last, and only if it
alone is too long); ``"truncated": true`` says that something was left out.

Pure: bytes in, bytes out; the CLI's output module writes the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

#: Bytes Kubernetes keeps of a termination message.
LIMIT = 4096
#: Top-level fields that are never dropped.
KEPT = ("ok", "error")
#: Shrinking steps: (longest string kept, most items kept per list or map).
_STEPS: tuple[tuple[int | None, int | None], ...] = (
    (1024, None),
    (256, 64),
    (64, 16),
    (16, 4),
    (16, 1),
    (16, 0),
)
_ELLIPSIS = "…"


def encode(data: Any) -> bytes:
    """Compact JSON as UTF-8 (non-ASCII text as itself: fewer bytes than escapes)."""
    try:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate, e.g. from an undecodable file name
        return json.dumps(data, separators=(",", ":")).encode()


def termination_message(
    data: Mapping[str, Any], *smaller: Mapping[str, Any], limit: int = LIMIT
) -> bytes:
    """The first of ``data``, ``*smaller`` that fits into ``limit`` bytes, else
    the last of them shrunk to fit (see the module docstring)."""
    for candidate in (data, *smaller):
        raw = encode(candidate)
        if len(raw) <= limit:
            return raw
    return _shrink(dict(smaller[-1] if smaller else data), limit)


def _shrink(data: dict[str, Any], limit: int) -> bytes:
    for candidate in _candidates(data):
        raw = encode({**candidate, "truncated": True})
        if len(raw) <= limit:
            return raw
    return _short_error({k: data[k] for k in KEPT if k in data}, limit)


def _candidates(data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Ever smaller versions of ``data``: shortened values, then fewer fields."""
    kept = {k: data[k] for k in KEPT if k in data}
    rest = {k: v for k, v in data.items() if k not in KEPT}
    for max_chars, max_items in _STEPS:
        rest = {k: _cut(v, max_chars, max_items) for k, v in rest.items()}
        yield {**kept, **rest}
    while rest:
        biggest = max(rest, key=lambda k: len(encode({k: rest[k]})))
        del rest[biggest]
        yield {**kept, **rest}


def _cut(value: Any, max_chars: int | None, max_items: int | None) -> Any:
    if isinstance(value, str):
        return _shorten(value, max_chars) if max_chars is not None else value
    if isinstance(value, Mapping):
        items = list(value.items())[:max_items]
        return {k: _cut(v, max_chars, max_items) for k, v in items}
    if isinstance(value, list | tuple):
        return [_cut(v, max_chars, max_items) for v in list(value)[:max_items]]
    return value


def _shorten(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[:max_chars] + _ELLIPSIS


def _short_error(kept: dict[str, Any], limit: int) -> bytes:
    """``ok`` and the longest prefix of ``error`` that fits (bisected: a
    character's UTF-8 length varies)."""
    if "error" not in kept:
        return encode({**kept, "truncated": True})
    error = str(kept["error"])
    low, high = 0, len(error)
    while low < high:
        mid = (low + high + 1) // 2
        if len(encode({**kept, "error": _shorten(error, mid), "truncated": True})) <= limit:
            low = mid
        else:
            high = mid - 1
    return encode({**kept, "error": _shorten(error, low), "truncated": True})
