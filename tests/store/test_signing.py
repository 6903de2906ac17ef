"""Signed manifests (backupctl.store.signing): a backup re-signed with another
key, or edited after signing, is INVALID with the reason, never restorable and
never counted by retention; with signatures required an unsigned planted backup
is not ``latest``. Keys are the files openssl and ssh-keygen make."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from backupctl.cli.app import app
from backupctl.store import catalog
from backupctl.store.backends.base import Backend, put_bytes, read_bytes
from backupctl.store.backends.local import LocalBackend
from backupctl.store.catalog import CatalogError
from backupctl.store.prune import prune
from backupctl.store.retention import Policy
from backupctl.store.signing import (
    Signer,
    SigningKeyError,
    Trust,
    load_signer,
    load_trust,
    signature_key,
)

from support.fake_backups import add_backup

T0 = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
TARGET = "ns/app"


@pytest.fixture
def store(tmp_path: Path) -> LocalBackend:
    (tmp_path / "store").mkdir()
    return LocalBackend(tmp_path / "store")


def _key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _pem_files(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """(private, public) PEM files of a new key, as openssl writes them."""
    key = _key()
    private = tmp_path / f"{name}.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = tmp_path / f"{name}.pub.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def _sign(store: Backend, bid: str, key: Ed25519PrivateKey) -> None:
    raw = read_bytes(store, catalog.manifest_key(TARGET, bid))
    put_bytes(store, signature_key(TARGET, bid), Signer(key)(raw))


def _signed_backups(store: Backend, key: Ed25519PrivateKey, n: int) -> list[str]:
    ids = [add_backup(store, TARGET, T0 + timedelta(days=i)) for i in range(n)]
    for bid in ids:
        _sign(store, bid, key)
    return ids


def _trust(key: Ed25519PrivateKey, *, required: bool = False) -> Trust:
    return Trust(keys=(key.public_key(),), required=required)


def _by_id(store: Backend, trust: Trust) -> dict[str, catalog.BackupEntry]:
    return {e.id: e for e in catalog.scan(store, TARGET, trust=trust)}


def test_signed_backups_verify_and_latest_is_the_newest(store: Backend) -> None:
    key = _key()
    ids = _signed_backups(store, key, 3)
    entries = _by_id(store, _trust(key, required=True))
    assert all(e.complete for e in entries.values())
    assert catalog.find(store, "latest", TARGET, trust=_trust(key, required=True)).id == ids[-1]


def test_a_manifest_re_signed_with_another_key_is_invalid_and_never_latest(
    store: Backend,
) -> None:
    ours, theirs = _key(), _key()
    ids = _signed_backups(store, ours, 2)
    planted = add_backup(store, TARGET, T0 + timedelta(days=5))
    _sign(store, planted, theirs)
    trust = _trust(ours)

    entry = _by_id(store, trust)[planted]
    assert entry.invalid and not entry.complete
    assert "signed by key SHA256:" in (entry.manifest_error or "")
    assert "not a --verify-key" in (entry.manifest_error or "")
    assert catalog.find(store, "latest", TARGET, trust=trust).id == ids[-1]
    with pytest.raises(CatalogError, match=r"cannot be used: .*not a --verify-key"):
        catalog.find(store, planted, TARGET, trust=trust)
    # Without a verify key nobody checks: the planted one would be 'latest'.
    assert catalog.find(store, "latest", TARGET).id == planted


def test_a_manifest_edited_after_signing_is_invalid_with_the_reason(store: Backend) -> None:
    key = _key()
    [bid] = _signed_backups(store, key, 1)
    mkey = catalog.manifest_key(TARGET, bid)
    doc = json.loads(read_bytes(store, mkey))
    doc["nodes"][0]["archive"]["sha256"] = "0" * 64  # points at an archive of the editor's
    put_bytes(store, mkey, json.dumps(doc, indent=2).encode())

    entry = _by_id(store, _trust(key))[bid]
    assert entry.invalid
    assert "does not match" in (entry.manifest_error or "")
    assert "changed after it was signed" in (entry.manifest_error or "")
    with pytest.raises(CatalogError, match=r"no complete backup.*INVALID.*changed after it was"):
        catalog.find(store, "latest", TARGET, trust=_trust(key))


def test_with_signatures_required_an_unsigned_planted_backup_is_not_latest(
    store: Backend,
) -> None:
    key = _key()
    ids = _signed_backups(store, key, 2)
    planted = add_backup(store, TARGET, T0 + timedelta(days=9))

    # Verify key alone: unsigned manifests are accepted (a store moving to signing).
    assert catalog.find(store, "latest", TARGET, trust=_trust(key)).id == planted
    required = _trust(key, required=True)
    assert catalog.find(store, "latest", TARGET, trust=required).id == ids[-1]
    entry = _by_id(store, required)[planted]
    assert entry.invalid and "not signed and signatures are required" in str(entry.manifest_error)


@pytest.mark.parametrize(
    "damage",
    [b"", b"{", b'{"format": "other"}', b"x" * 5000],
    ids=["empty", "not-json", "other-format", "huge"],
)
def test_a_damaged_signature_file_makes_the_backup_invalid(store: Backend, damage: bytes) -> None:
    key = _key()
    [bid] = _signed_backups(store, key, 1)
    put_bytes(store, signature_key(TARGET, bid), damage)
    entry = _by_id(store, _trust(key))[bid]
    assert entry.invalid and "manifest.json.sig is not a backupctl signature" in str(
        entry.manifest_error
    )


def test_retention_never_counts_nor_deletes_a_backup_whose_signature_fails(
    store: Backend,
) -> None:
    key = _key()
    ids = _signed_backups(store, key, 3)
    planted = add_backup(store, TARGET, T0 + timedelta(days=9))  # unsigned, newest

    result = prune(
        store, Policy(last=1), now=T0 + timedelta(days=10), trust=_trust(key, required=True)
    )
    # The genuine newest is kept, the two older removed; the planted one is
    # neither counted (it would have pushed ids[-1] out) nor deleted.
    assert [r.id for r in result.keep] == [ids[-1]]
    assert sorted(r.id for r in result.remove) == ids[:2]
    [left] = [r for r in result.incomplete if r.id == planted]
    assert left.action == "leave" and "not signed" in left.reasons[0]
    remaining = {e.id for e in catalog.scan(store, TARGET)}
    assert remaining == {ids[-1], planted}


def test_signing_writes_the_signature_before_the_manifest(store: Backend) -> None:
    from backupctl.store.signing import write_signed_manifest

    key = _key()
    [bid] = _signed_backups(store, key, 1)
    manifest = catalog.read_manifest(store, TARGET, bid)
    written: list[str] = []

    class Recording(LocalBackend):
        def writer(self, k: str):  # type: ignore[no-untyped-def]
            written.append(k)
            return super().writer(k)

    rec = Recording(Path(store.root))  # type: ignore[attr-defined]
    write_signed_manifest(rec, manifest, Signer(key))
    assert written == [signature_key(TARGET, bid), catalog.manifest_key(TARGET, bid)]
    assert _by_id(store, _trust(key, required=True))[bid].complete  # still verifies


# --- key files -----------------------------------------------------------------


def test_pem_keys_from_openssl_sign_and_verify(tmp_path: Path, store: Backend) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    private, public = tmp_path / "s.pem", tmp_path / "s.pub.pem"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "ed25519", "-out", private], check=True, timeout=30
    )
    subprocess.run(
        ["openssl", "pkey", "-in", private, "-pubout", "-out", public], check=True, timeout=30
    )
    signer, trust = load_signer(private), load_trust([public], required=True)
    assert signer is not None and trust is not None
    assert trust.fingerprints == (signer.fingerprint,)
    [bid] = [add_backup(store, TARGET, T0)]
    raw = read_bytes(store, catalog.manifest_key(TARGET, bid))
    trust.check(raw, signer(raw))  # no exception: it verifies


def test_openssh_keys_and_their_fingerprint_is_ssh_keygen_s(tmp_path: Path) -> None:
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed")
    private = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", private], check=True, timeout=30
    )
    signer = load_signer(private)
    trust = load_trust([tmp_path / "id_ed25519.pub"])
    assert signer is not None and trust is not None
    printed = subprocess.run(
        ["ssh-keygen", "-l", "-f", tmp_path / "id_ed25519.pub"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()[1]
    assert signer.fingerprint == printed == trust.fingerprints[0]
    trust.check(b"{}", signer(b"{}"))
    from backupctl.store.signing import SignatureError

    with pytest.raises(SignatureError, match="does not match"):
        trust.check(b"{ }", signer(b"{}"))


def test_unusable_key_files_are_one_clear_line(tmp_path: Path) -> None:
    _, public = _pem_files(tmp_path, "k")
    rsa_like = tmp_path / "notakey"
    rsa_like.write_text("hello\n")
    with pytest.raises(SigningKeyError, match="not an unencrypted ed25519 private key"):
        load_signer(public)  # a public key where the private one goes
    with pytest.raises(SigningKeyError, match="not an ed25519 public key") as bad:
        load_trust([rsa_like])
    assert "hello" not in str(bad.value)  # never the file's content
    with pytest.raises(SigningKeyError, match="cannot read verify key"):
        load_trust([tmp_path / "missing"])
    with pytest.raises(SigningKeyError, match="--require-signatures needs --verify-key"):
        load_trust([], required=True)


# --- the CLI -------------------------------------------------------------------


def test_list_and_restore_dry_run_honour_verify_key_and_require_signatures(
    tmp_path: Path, store: LocalBackend
) -> None:
    private, public = _pem_files(tmp_path, "ops")
    signer = load_signer(private)
    assert signer is not None
    good = add_backup(store, TARGET, T0)
    _sign(store, good, signer.key)
    planted = add_backup(store, TARGET, T0 + timedelta(days=1))
    url = str(store.root)  # type: ignore[attr-defined]
    runner = CliRunner()

    out = runner.invoke(
        app, ["list", url, "--json", "--verify-key", str(public), "--require-signatures"]
    )
    assert out.exit_code == 0, out.output
    rows = {r["id"]: r for r in json.loads(out.stdout)["backups"]}
    assert rows[good]["status"] == "complete" and rows[good]["signed"] is True
    assert rows[planted]["status"] == "invalid" and rows[planted]["signed"] is False
    assert "not signed" in rows[planted]["problem"]

    args = ["restore", url, "latest", "--dry-run", "--json"]
    plain = runner.invoke(app, args)
    assert json.loads(plain.stdout)["id"] == planted
    checked = runner.invoke(app, [*args, "--verify-key", str(public), "--require-signatures"])
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.stdout)["id"] == good

    refused = runner.invoke(app, ["restore", url, "--dry-run", planted, "--verify-key",
                                  str(public), "--require-signatures"])  # fmt: skip
    assert refused.exit_code == 6  # integrity (docs/cli-output.md)
    assert "cannot be used" in refused.output and "not signed" in refused.output
