"""age encryption of archives (backupctl.store.encryption) through the real
archive pipeline: round trips, what the stored bytes reveal, wrong keys,
tampering, and Debian's ``age`` CLI as the oracle for the format."""

from __future__ import annotations

import hashlib
import io
import random
import shutil
import subprocess
from pathlib import Path

import pyrage
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from backupctl.store.archive import ArchiveError, Member, extract_verified, write_archive
from backupctl.store.catalog import FileEntry
from backupctl.store.encryption import (
    EncryptionError,
    canonical_recipient,
    fingerprint,
    load_identities,
    parse_identities,
    parse_recipients,
)

MARKER = b"MARKER-secret-session-token-6f1c2a"


def _members(size: int = 3 << 20) -> list[Member]:
    """An RDB-like file with the marker repeated inside (compressible), and
    a stream of unknown size (stored in parts)."""
    body = (MARKER + bytes(range(200))) * (size // (len(MARKER) + 200))
    return [
        Member("dump.rdb", len(body), "rdb", lambda: io.BytesIO(body)),
        Member("stream.bin", None, "aof", lambda: io.BytesIO((body * 2)[: 5 << 20])),
    ]


def _key() -> pyrage.x25519.Identity:
    return pyrage.x25519.Identity.generate()


def _encrypted(tmp_path: Path, *recipients: str) -> tuple[bytes, list[FileEntry]]:
    out = io.BytesIO()
    result = write_archive(out, _members(), encrypt_to=parse_recipients(list(recipients)))
    raw = out.getvalue()
    assert result.size == len(raw) and result.sha256 == hashlib.sha256(raw).hexdigest()
    return raw, result.files


def test_encrypted_archive_restores_with_the_key_and_hides_the_marker(tmp_path: Path) -> None:
    ops, dr = _key(), _key()
    raw, files = _encrypted(tmp_path, str(ops.to_public()), str(dr.to_public()))
    assert raw.startswith(b"age-encryption.org/v1\n")
    assert MARKER not in raw
    for who in (ops, dr):  # either recipient decrypts alone
        dest = tmp_path / f"out-{id(who)}"
        ids = parse_identities(str(who).encode(), "key")
        size, sha = extract_verified(io.BytesIO(raw), "zstd", files, dest, identities=ids)
        assert (size, sha) == (len(raw), hashlib.sha256(raw).hexdigest())
        assert MARKER in (dest / "dump.rdb").read_bytes()
        assert (dest / "stream.bin").stat().st_size == 5 << 20


def test_plain_archive_is_unchanged_by_the_encryption_option(tmp_path: Path) -> None:
    out = io.BytesIO()
    write_archive(out, _members(), encrypt_to=None)
    assert out.getvalue()[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame, as before


def test_wrong_identity_is_one_clear_error(tmp_path: Path) -> None:
    raw, files = _encrypted(tmp_path, str(_key().to_public()))
    other = parse_identities(str(_key()).encode(), "key")
    with pytest.raises(ArchiveError, match="none of the identities given can decrypt"):
        extract_verified(io.BytesIO(raw), "zstd", files, None, identities=other)


@pytest.mark.parametrize("where", [200, 0.5, -20])  # header, a middle chunk, the last tag
def test_a_flipped_byte_anywhere_fails_the_check(tmp_path: Path, where: float) -> None:
    key = _key()
    raw, files = _encrypted(tmp_path, str(key.to_public()))
    bad = bytearray(raw)
    bad[int(where * len(raw)) if isinstance(where, float) else where] ^= 0x01
    ids = parse_identities(str(key).encode(), "key")
    with pytest.raises(ArchiveError):
        extract_verified(io.BytesIO(bytes(bad)), "zstd", files, tmp_path / "o", identities=ids)


@pytest.mark.parametrize("fail_at", [1, 3])  # the stream's only write; one in the middle
def test_a_failing_store_write_surfaces_as_itself_not_as_a_hang(fail_at: int) -> None:
    class Broken:
        writes = 0

        def write(self, data: bytes | bytearray | memoryview, /) -> int:
            Broken.writes += 1
            if Broken.writes >= fail_at:
                raise OSError("disk full")
            return len(data)

    members = _members(1 << 20) if fail_at == 1 else [_random_member(4 << 20)]
    with pytest.raises(OSError, match="disk full"):
        write_archive(Broken(), members, encrypt_to=parse_recipients([str(_key().to_public())]))


def _random_member(size: int) -> Member:
    body = random.Random(7).randbytes(size)  # incompressible: many writes
    return Member("dump.rdb", size, "rdb", lambda: io.BytesIO(body))


def test_ssh_ed25519_recipient_and_private_key(tmp_path: Path) -> None:
    priv = ed25519.Ed25519PrivateKey.generate()
    pem = priv.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    pub = priv.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    raw, files = _encrypted(tmp_path, pub.decode() + " ops@example")
    ids = parse_identities(pem, "ssh key")
    assert ids.fingerprints == (fingerprint(pub.decode()),)
    extract_verified(io.BytesIO(raw), "zstd", files, tmp_path / "o", identities=ids)
    assert MARKER in (tmp_path / "o" / "dump.rdb").read_bytes()


def test_fingerprint_is_sha256_of_the_recipient_as_written_without_ssh_comment() -> None:
    r = str(_key().to_public())
    assert fingerprint(r) == hashlib.sha256(r.encode()).hexdigest()[:32]
    assert fingerprint(r.upper()) == fingerprint(r)
    assert canonical_recipient("ssh-ed25519 AAAAC3Nz me@host") == "ssh-ed25519 AAAAC3Nz"


@pytest.mark.parametrize(
    "bad",
    ["AGE-SECRET-KEY-1QQQ", "age1notbech32", "ssh-dss AAAA", "hunter2"],
)
def test_a_bad_recipient_is_refused_without_echoing_more_than_its_start(bad: str) -> None:
    with pytest.raises(EncryptionError) as e:
        parse_recipients([bad])
    assert "\n" not in str(e.value)


def test_recipients_file_with_comments_and_duplicates(tmp_path: Path) -> None:
    a, b = str(_key().to_public()), str(_key().to_public())
    f = tmp_path / "recipients.txt"
    f.write_text(f"# ops\n{a}\n\n# dr\n{b}\n{a}\n")
    got = parse_recipients([a], [f])
    assert got is not None and got.fingerprints == (fingerprint(a), fingerprint(b))
    assert parse_recipients([], []) is None


def test_identity_from_environment_and_errors_never_show_the_key(tmp_path: Path) -> None:
    key = _key()
    ids = load_identities([], {"BACKUPCTL_AGE_IDENTITY": f"# created\n{key}\n"})
    assert ids is not None and ids.fingerprints == (fingerprint(str(key.to_public())),)
    f = tmp_path / "key.txt"
    f.write_text(str(key))
    from_file = load_identities([], {"BACKUPCTL_AGE_IDENTITY_FILE": str(f)})
    assert from_file is not None and from_file.fingerprints == ids.fingerprints
    assert load_identities([], {}) is None
    secret = str(key)
    with pytest.raises(EncryptionError) as e:
        parse_identities(f"{secret}\nnot-a-key {secret[:30]}\n".encode(), "identity file k")
    assert "line 2" in str(e.value) and secret[15:] not in str(e.value)


@pytest.mark.skipif(shutil.which("age") is None, reason="Debian's age is not installed")
def test_debian_age_and_zstd_and_tar_open_an_archive_by_hand(tmp_path: Path) -> None:
    """The oracle: ``age -d -i key.txt X.tar.zst.age | zstd -d | tar -x``."""
    key = _key()
    raw, files = _encrypted(tmp_path, str(key.to_public()))
    (tmp_path / "key.txt").write_text(f"# test key\n{key}\n")
    (tmp_path / "redis-0.tar.zst.age").write_bytes(raw)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(
        "age -d -i key.txt redis-0.tar.zst.age | zstd -d | tar -x -C out",
        shell=True,
        check=True,
        cwd=tmp_path,
        timeout=60,
    )
    got = (out / "dump.rdb").read_bytes()
    assert hashlib.sha256(got).hexdigest() == files[0].sha256
    assert len(list(out.glob("stream.bin.part-*"))) == 2


@pytest.mark.skipif(shutil.which("age") is None, reason="Debian's age is not installed")
def test_what_debian_age_encrypts_backupctl_decrypts(tmp_path: Path) -> None:
    """The other direction of the oracle: the format is age's, not ours."""
    key = _key()
    plain = io.BytesIO()
    result = write_archive(plain, _members(1 << 20))
    (tmp_path / "a.tar.zst").write_bytes(plain.getvalue())
    subprocess.run(
        ["age", "-r", str(key.to_public()), "-o", "a.tar.zst.age", "a.tar.zst"],
        check=True,
        cwd=tmp_path,
        timeout=60,
    )
    enc = (tmp_path / "a.tar.zst.age").read_bytes()
    ids = parse_identities(str(key).encode(), "key")
    extract_verified(io.BytesIO(enc), "zstd", result.files, tmp_path / "o", identities=ids)
    assert MARKER in (tmp_path / "o" / "dump.rdb").read_bytes()
