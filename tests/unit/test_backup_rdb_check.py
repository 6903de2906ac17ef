"""The backup pipeline's RDB check on the real servers' samples: the reader
process counts the keys of a valid RDB of every version, and refuses a
damaged one with its offset, fed from a file (bgsave) or from a stream
(replication); and a checker too old for the RDB is one note."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from contextlib import ExitStack
from pathlib import Path

import pytest

from backupctl.ops.backup_rdb_check import FileChecker, StreamChecker, watch_rdb
from backupctl.redis import rdb_tool
from backupctl.redis.rdb_worker import ReaderProcess
from backupctl.store.archive import Member, extract_verified, file_member, write_archive

from support.rdb_build import key, rdb, st

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "rdb"
NAMES = ["redis-7.0.15", "redis-8.0.2", "valkey-8.1.1", "valkey-9.1.2"]


def _expected_keys(name: str) -> int:
    return sum(json.loads((SAMPLES / f"{name}.json").read_text())["keys"].values())


def _stream(raw: bytes, chunk: int = 1000) -> StreamChecker:
    checker = StreamChecker(timeout=60)
    for i in range(0, len(raw), chunk):
        checker.write(raw[i : i + chunk])
    return checker


@pytest.mark.parametrize("name", NAMES)
def test_a_valid_rdb_of_every_version_passes_with_its_key_count(name: str) -> None:
    raw = (SAMPLES / f"{name}.rdb").read_bytes()
    verdict = _stream(raw).close()
    assert verdict.problem is None and verdict.keys == _expected_keys(name)
    fd = os.open(SAMPLES / f"{name}.rdb", os.O_RDONLY)
    try:
        verdict = FileChecker(fd, timeout=60).close()
    finally:
        os.close(fd)
    assert verdict.problem is None and verdict.keys == _expected_keys(name)


@pytest.mark.parametrize("name", NAMES)
def test_a_truncated_or_flipped_rdb_fails_with_its_offset(name: str, tmp_path: Path) -> None:
    raw = (SAMPLES / f"{name}.rdb").read_bytes()
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0xFF
    for bad in (raw[: len(raw) - 20], bytes(flipped)):
        verdict = _stream(bad).close()
        assert verdict.problem is not None and verdict.keys is None
        assert re.search(r"at offset \d+$", verdict.problem), verdict.problem
        path = tmp_path / "dump.rdb"
        path.write_bytes(bad)
        fd = os.open(path, os.O_RDONLY)
        try:
            file_verdict = FileChecker(fd, timeout=60).close()
        finally:
            os.close(fd)
        assert file_verdict.problem is not None and file_verdict.keys is None
        assert re.search(r"at offset \d+$", file_verdict.problem), file_verdict.problem


def test_a_stopped_check_leaves_no_process() -> None:
    checker = StreamChecker(timeout=60)
    checker.write(b"REDIS0010")
    checker.stop()
    assert checker.close().problem is not None
    reader = ReaderProcess(None)
    reader.kill()
    assert reader.close().error == "the RDB reader was stopped"


def test_the_pipeline_notes_a_checker_too_old_for_the_rdb_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    tool = tmp_path / "redis-check-rdb"
    tool.write_text('#!/bin/sh\necho "redis-check-rdb 7.0.15"\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(rdb_tool, "_NOTED", set())
    rdb_tool.tool_version_output.cache_clear()
    caplog.set_level(logging.WARNING)
    for _ in range(2):
        with ExitStack() as stack:
            member = file_member(SAMPLES / "redis-8.0.2.rdb", "dump.rdb", "rdb")
            stack.callback(member.open().close)
            members, header, checker = watch_rdb([member], check=True, timeout=60, stack=stack)
            with members[0].open() as fh:
                while fh.read(4096):
                    pass
            assert checker is not None and checker.close().keys == _expected_keys("redis-8.0.2")
            assert (header.magic, header.version) == ("REDIS", 12)
    notes = [r.getMessage() for r in caplog.records]
    assert notes == [
        "note: redis-check-rdb 7.0.15 does not read RDB 12; checked with backupctl's own reader"
    ]
    rdb_tool.tool_version_output.cache_clear()


def test_the_checker_copies_what_it_is_given_so_the_caller_may_reuse_its_buffer() -> None:
    # The archive writer reads the replication stream into one part buffer
    # that it fills again at once: the reader must see the bytes as written.
    raw = (SAMPLES / "redis-7.0.15.rdb").read_bytes()
    checker = StreamChecker(timeout=60)
    scratch = bytearray(1000)
    for i in range(0, len(raw), len(scratch)):
        piece = raw[i : i + len(scratch)]
        scratch[: len(piece)] = piece
        checker.write(memoryview(scratch)[: len(piece)])
        scratch[:] = b"\xff" * len(scratch)  # reused at once
    verdict = checker.close()
    assert verdict.problem is None and verdict.keys == _expected_keys("redis-7.0.15")


@pytest.mark.parametrize("zstd_threads", [-1, 0], ids=["zstd-workers", "zstd-in-caller"])
def test_a_replication_stream_archived_through_the_tap_is_checked_and_stored_whole(
    zstd_threads: int,
) -> None:
    raw = (SAMPLES / "valkey-8.1.1.rdb").read_bytes()
    stream = io.BufferedReader(io.BytesIO(raw))  # type: ignore[arg-type]
    member = Member(name="dump.rdb", size=None, kind="rdb", open=lambda: stream)
    with ExitStack() as stack:
        members, header, checker = watch_rdb([member], check=True, timeout=60, stack=stack)
        sink = io.BytesIO()
        result = write_archive(sink, members, "zstd", zstd_threads=zstd_threads)
        assert checker is not None
        verdict = checker.close()
    assert verdict.problem is None and verdict.keys == _expected_keys("valkey-8.1.1")
    assert header.magic is not None and raw.startswith(header.magic.encode())
    assert result.files[0].sha256 == hashlib.sha256(raw).hexdigest()
    assert result.files[0].size == len(raw)
    sink.seek(0)
    extract_verified(sink, "zstd", result.files, None)  # the archive holds it whole


def test_a_flipped_byte_inside_a_string_value_fails_on_the_crc64() -> None:
    """A replication backup with the check on leaves the CRC-64 to the reader
    process (ops/backup_node.py: the stream's own would sum the same bytes
    again): damage the walk cannot see, inside a value among a run of plain
    strings (the reader's hot path), is still refused."""
    body = b"\xfe\x00" + b"".join(key(0, f"user:{i}", st(f"value {i} " * 8)) for i in range(500))
    raw = bytearray(rdb(body))
    at = raw.index(b"value 400 ") + 3
    raw[at] ^= 0x01  # 'u' -> 't': still a valid string of the same length
    assert _stream(rdb(body)).close().problem is None
    verdict = _stream(bytes(raw)).close()
    assert verdict.problem is not None and "CRC-64 mismatch" in verdict.problem
