"""The RDB reader on the files real servers wrote (tests/data/rdb/, made by
tests/support/make_rdb_samples.py) and on hand-built RDBs for every encoding,
including the old ones no server we run still writes, and for errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backupctl.redis.rdb_reader import RdbFormatError, read_rdb_file

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "rdb"
SAMPLE_FILES = sorted(SAMPLES.glob("*.rdb"))


def test_there_is_a_sample_from_every_server_we_support():
    names = {p.stem for p in SAMPLE_FILES}
    assert {"redis-7.0.15", "redis-8.0.2", "valkey-8.1.1", "valkey-9.1.2"} <= names


@pytest.mark.parametrize("deep", [True, False], ids=["deep", "shallow"])
@pytest.mark.parametrize("path", SAMPLE_FILES, ids=[p.stem for p in SAMPLE_FILES])
def test_sample_counts_are_what_the_server_was_given(path, deep):
    want = json.loads(path.with_suffix(".json").read_text())
    report = read_rdb_file(path, deep=deep)
    assert f"{report.magic}{report.version:04d}"[:9] == want["header"] or (
        report.magic == "VALKEY" and want["header"] == f"VALKEY{report.version:03d}"
    )
    assert report.keys == {int(k): v for k, v in want["keys"].items()}
    assert report.expires == {int(k): v for k, v in want["expires"].items()}
    assert report.types == want["types"]
    assert report.functions == want["functions"]
    assert report.total_keys == sum(want["keys"].values())
    assert report.size == path.stat().st_size
    assert report.checksum  # the servers save with rdbchecksum yes
    flavour, version = want["server"].split()
    assert report.aux[f"{flavour}-ver"] == version
    assert report.largest[0].key == "hash:big"
    assert [v.size for v in report.largest] == sorted(
        (v.size for v in report.largest), reverse=True
    )


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=[p.stem for p in SAMPLE_FILES])
def test_a_flipped_byte_in_a_sample_is_an_error_with_its_offset(path, tmp_path):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0x55
    bad = tmp_path / "bad.rdb"
    bad.write_bytes(bytes(data))
    with pytest.raises(RdbFormatError) as err:
        read_rdb_file(bad)
    assert 0 <= err.value.offset <= len(data)
    assert str(err.value).endswith(f"at offset {err.value.offset}")
