"""DUMP payloads built from a value's own RDB bytes, and relabelled.

Why it exists: ``RESTORE`` takes what ``DUMP`` gives -- the value as the RDB
stores it (type byte + encoded value), then the RDB version as 2 bytes
little-endian, then the CRC-64 (Jones, the RDB trailer's) of all of that as
8 bytes little-endian (``createDumpPayload`` / ``verifyDumpPayload`` in
redis and valkey ``cluster.c``). A server refuses a payload whose version it
does not accept (Redis: above its own RDB version; Valkey 9: REDIS versions
up to 11 and its own VALKEY ones): :func:`dump_payload` takes the version to
write, which the caller picks with :mod:`backupctl.core.compat`.
"""

from __future__ import annotations

from backupctl.redis.rdb import crc64_redis

__all__ = ["dump_payload", "payload_version", "split_payload"]


def dump_payload(raw: bytes, rdb_version: int) -> bytes:
    """``raw`` (type byte + encoded value) as a DUMP payload of ``rdb_version``."""
    if not 0 <= rdb_version <= 0xFFFF:
        raise ValueError(f"RDB version {rdb_version} does not fit a DUMP payload")
    body = raw + rdb_version.to_bytes(2, "little")
    return body + crc64_redis(body, 0).to_bytes(8, "little")


def payload_version(payload: bytes) -> int:
    """The RDB version a DUMP payload says it is."""
    if len(payload) < 10:
        raise ValueError("a DUMP payload has at least 10 bytes")
    return int.from_bytes(payload[-10:-8], "little")


def split_payload(payload: bytes) -> tuple[bytes, int]:
    """(raw value bytes, RDB version) of a DUMP payload whose CRC-64 is right."""
    version = payload_version(payload)
    body = payload[:-8]
    if crc64_redis(body, 0) != int.from_bytes(payload[-8:], "little"):
        raise ValueError("DUMP payload CRC-64 mismatch")
    return payload[:-10], version
