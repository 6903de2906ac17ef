"""Write restic snapshots with chosen timestamps, fast, for the oracle test.

``restic backup --time`` takes ~0.7 s per snapshot here (most of it the
scrypt key derivation every restic process does), so 400 snapshots would
take minutes. Instead: ``restic init`` and one real ``restic backup``, then
this module decrypts the repository's master key and adds more snapshots
as restic stores them (the real snapshot's JSON with another ``time`` and
``hostname``, AES-256-CTR + Poly1305-AES, named by the SHA-256 of the file).
restic itself then lists them (checked by the test) and applies ``forget``.

Format (restic design doc): a key file holds scrypt parameters and the
encrypted master key; every encrypted file is IV(16) || AES-CTR(data) ||
MAC(16), the MAC being Poly1305 over the ciphertext with r from the key and
s = AES_k(IV). Repository v2 stores snapshots as a version byte 2 and a
zstd frame, and reads files whose plaintext starts with ``{`` as plain JSON.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import zstandard
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305


class MasterKey:
    def __init__(self, encrypt: bytes, mac_k: bytes, mac_r: bytes) -> None:
        self.encrypt, self.mac_k, self.mac_r = encrypt, mac_k, mac_r

    def _mac(self, iv: bytes, ciphertext: bytes) -> bytes:
        enc = Cipher(algorithms.AES(self.mac_k), modes.ECB()).encryptor()
        s = enc.update(iv) + enc.finalize()
        return Poly1305.generate_tag(self.mac_r + s, ciphertext)

    def open(self, blob: bytes) -> bytes:
        iv, ct, tag = blob[:16], blob[16:-16], blob[-16:]
        if self._mac(iv, ct) != tag:
            raise ValueError("restic MAC mismatch")
        dec = Cipher(algorithms.AES(self.encrypt), modes.CTR(iv)).decryptor()
        return dec.update(ct) + dec.finalize()

    def seal(self, plaintext: bytes) -> bytes:
        iv = os.urandom(16)
        enc = Cipher(algorithms.AES(self.encrypt), modes.CTR(iv)).encryptor()
        ct = enc.update(plaintext) + enc.finalize()
        return iv + ct + self._mac(iv, ct)


def _b64(s: str) -> bytes:
    return base64.b64decode(s)


def load_master_key(repo: Path, password: str) -> MasterKey:
    (key_file,) = (repo / "keys").iterdir()
    kf = json.loads(key_file.read_text())
    derived = hashlib.scrypt(
        password.encode(),
        salt=_b64(kf["salt"]),
        n=kf["N"],
        r=kf["r"],
        p=kf["p"],
        maxmem=512 * 1024 * 1024,
        dklen=64,
    )
    user = MasterKey(derived[:32], derived[32:48], derived[48:64])
    master = json.loads(user.open(_b64(kf["data"])))
    return MasterKey(_b64(master["encrypt"]), _b64(master["mac"]["k"]), _b64(master["mac"]["r"]))


def read_snapshot(repo: Path, key: MasterKey, name: str) -> dict[str, Any]:
    plain = key.open((repo / "snapshots" / name).read_bytes())
    if plain[:1] == b"\x02":  # repository v2: version byte + zstd frame
        plain = zstandard.ZstdDecompressor().decompress(plain[1:], max_output_size=1 << 20)
    data: dict[str, Any] = json.loads(plain)
    return data


def write_snapshot(repo: Path, key: MasterKey, snapshot: dict[str, Any]) -> str:
    blob = key.seal(json.dumps(snapshot, separators=(",", ":")).encode())
    name = hashlib.sha256(blob).hexdigest()
    (repo / "snapshots" / name).write_bytes(blob)
    return name


def restic(repo: Path, *args: str, timeout: float = 60) -> str:
    env = {**os.environ, "RESTIC_PASSWORD": "x", "RESTIC_REPOSITORY": str(repo), "TZ": "UTC"}
    env.pop("RESTIC_PASSWORD_FILE", None)
    env.pop("RESTIC_PASSWORD_COMMAND", None)
    proc = subprocess.run(
        ["restic", "--no-cache", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"restic {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def make_repo(
    tmp: Path, real_times: list[str], host: str
) -> tuple[Path, MasterKey, dict[str, Any]]:
    """A fresh repository with a real ``restic backup --time`` snapshot for
    each of ``real_times`` (``YYYY-mm-dd HH:MM:SS`` UTC); returns the repo,
    its master key and one real snapshot's JSON (the template for others)."""
    repo = tmp / "repo"
    data = tmp / "data"
    data.mkdir()
    (data / "f").write_text("tiny\n")
    restic(repo, "init", "-q")
    for t in real_times:
        restic(repo, "backup", "-q", "--host", host, "--tag", "t", "--time", t, str(data / "f"))
    key = load_master_key(repo, "x")
    name = next(p.name for p in (repo / "snapshots").iterdir())
    template = read_snapshot(repo, key, name)
    template.pop("parent", None)
    return repo, key, template
