"""The termination message (backupctl.cli.termination): Kubernetes keeps at
most 4096 bytes of it and the controller parses it, so whatever a command
reports must come out as valid JSON within 4096 UTF-8 bytes, with ``ok`` and
``error`` kept and nothing cut in the middle of a value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from backupctl.cli.app import app
from backupctl.cli.output import write_termination_log
from backupctl.cli.termination import LIMIT, termination_message

NODE = {"redis": "10.0.0.1:6379", "role": "master", "keys": 1000, "digest": "ab" * 20}

#: (name, data, fields that must survive unchanged)
CASES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("small success", {"ok": True, "id": "backup-20240101-000000", "keys": 3}, ("id", "keys")),
    ("small error", {"ok": False, "error": "bucket 'x' not found"}, ()),
    ("non-ASCII that fits", {"ok": True, "target": "ns/rédis-日本-🚀"}, ("target",)),
    ("non-ASCII over the limit in bytes, not in characters",
     {"ok": True, "id": "b", "note": "日" * 2000}, ("id",)),
    ("a huge string value", {"ok": True, "id": "b", "next": "x" * 100_000}, ("id",)),
    ("a huge error", {"ok": False, "error": "é" * 10_000}, ()),
    ("a huge non-ASCII error with other fields",
     {"ok": False, "error": "ошибка " * 2000, "id": "b", "nodes": [NODE] * 500}, ()),
    ("nested lists",
     {"ok": True, "id": "b", "shards": [{"slots": [[i, i + 1]] * 50, "nodes": [NODE] * 20}
                                        for i in range(50)]}, ("id",)),
    ("deeply nested", {"ok": True, "a": [[[[["z" * 500] * 10] * 10] * 10]]}, ()),
    ("a huge map", {"ok": True, "masters": {f"10.0.{i // 256}.{i % 256}:6379": i
                                            for i in range(5000)}}, ()),
    ("many top-level fields", {"ok": True, **{f"field{i}": "v" * 100 for i in range(200)}}, ()),
    ("a lone surrogate (an undecodable file name)",
     {"ok": True, "dir": "/data/\udcff" * 2000}, ()),
    ("the limit exactly", {"ok": True, "pad": "p" * (LIMIT - len('{"ok":true,"pad":""}'))},
     ("pad",)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "data", "unchanged"), CASES, ids=[c[0] for c in CASES])
def test_every_message_is_valid_json_within_4096_bytes_keeping_ok_and_error(
    name: str, data: dict[str, Any], unchanged: tuple[str, ...]
) -> None:
    raw = termination_message(data)
    assert len(raw) <= LIMIT, len(raw)
    out = json.loads(raw.decode())
    assert out["ok"] is data["ok"]
    if "error" in data:
        assert out["error"], "the error is never dropped"
        assert data["error"].startswith(out["error"].removesuffix("…"))
    for key in unchanged:
        assert out[key] == data[key], key


@pytest.mark.parametrize(
    "data",
    [
        {"ok": True, "id": "b", "keys": 3},
        {"ok": True, "target": "ns/rédis-日本-🚀", "nodes": [NODE, NODE]},
        {"ok": False, "error": "wrong password for 10.0.0.1:6379"},
    ],
)
def test_a_message_that_fits_is_sent_whole_and_not_marked_truncated(data: dict[str, Any]) -> None:
    raw = termination_message(data)
    assert json.loads(raw) == data
    assert raw == json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def test_non_ascii_text_counts_in_utf8_bytes_and_is_not_escaped() -> None:
    text = "é" * 3000  # 3000 characters, 6000 bytes: too long
    out = json.loads(termination_message({"ok": True, "note": text}))
    assert out["truncated"] is True
    assert text.startswith(out["note"].removesuffix("…"))
    fits = {"ok": True, "note": "é" * 1500}  # 3000 bytes: sent as it is, not as \\u00e9 escapes
    assert (
        termination_message(fits) == json.dumps(fits, ensure_ascii=False).replace(" ", "").encode()
    )


def test_the_first_candidate_that_fits_wins_before_any_generic_shrinking() -> None:
    full = {"ok": True, "nodes": [{**NODE, "digest": "d" * 100} for _ in range(100)]}
    small = {"ok": True, "nodes": [{**NODE, "digest": None} for _ in range(20)]}
    assert json.loads(termination_message(full, small)) == small


def test_when_no_candidate_fits_the_last_one_is_shrunk_and_marked() -> None:
    full = {"ok": True, "keys": 5, "nodes": [NODE] * 1000}
    smaller = {"ok": True, "keys": 5, "nodes": [{"redis": NODE["redis"]}] * 1000}
    out = json.loads(termination_message(full, smaller))
    assert out["truncated"] is True and out["keys"] == 5
    assert out["nodes"] and all(n == {"redis": NODE["redis"]} for n in out["nodes"])


def test_lists_are_cut_to_their_first_items_not_in_the_middle_of_one() -> None:
    nodes = [{**NODE, "redis": f"10.0.0.{i}:6379"} for i in range(200)]
    out = json.loads(termination_message({"ok": True, "nodes": nodes}))
    assert 0 < len(out["nodes"]) < len(nodes)
    assert out["nodes"] == nodes[: len(out["nodes"])]


def test_biggest_fields_are_dropped_first_and_ok_and_error_stay() -> None:
    data = {"ok": False, "error": "boom", "small": 1, "big": ["x"] * 10_000, "bigger": "y" * 10}
    out = json.loads(termination_message(data, limit=200))
    assert out["ok"] is False and out["error"] == "boom" and out["small"] == 1


def test_a_lone_surrogate_is_escaped_rather_than_failing() -> None:
    raw = termination_message({"ok": True, "dir": "/data/\udcff"})
    assert json.loads(raw) == {"ok": True, "dir": "/data/\udcff"}


def test_write_termination_log_writes_the_fitted_bytes(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    write_termination_log(log, {"ok": False, "error": "日本" * 5000})
    assert len(log.read_bytes()) <= LIMIT
    assert json.loads(log.read_bytes())["ok"] is False


def test_a_command_failing_with_a_huge_non_ascii_error_leaves_a_parseable_message(
    tmp_path: Path,
) -> None:
    log = tmp_path / "termination-log"
    store = tmp_path / ("ストア" * 1500)  # the error names the missing store's path
    result = CliRunner().invoke(
        app, ["restore", str(store), "latest", "--dry-run", "--termination-log", str(log)]
    )
    assert result.exit_code == 1
    raw = log.read_bytes()
    assert len(raw) <= LIMIT
    out = json.loads(raw)
    assert out["ok"] is False and "ストア" in out["error"]
