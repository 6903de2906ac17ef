"""Client-side encryption of archives in the age format (https://age-encryption.org).

Why a module of its own: backups hold sessions, tokens and personal data, and
anyone who can read the bucket reads them. An archive is compressed, then
encrypted to one or more age recipients (an X25519 ``age1...`` key or an SSH
public key: typically an operations key and an offline disaster-recovery key),
streamed, so memory stays what it is without encryption. The cryptography is
pyrage's (the Rust ``age`` crate); this module only parses keys, names them by
fingerprint, and turns pyrage's pull-style ``encrypt_io``/``decrypt_io`` into
the push-style writer and pull-style reader the archive pipeline uses (one
helper thread each, a small bounded queue between).

A stored ``<node>.tar.zst.age`` opens by hand with the age CLI::

    age -d -i key.txt redis-0.tar.zst.age | zstd -d | tar -x

The manifest names recipients by fingerprint only (:func:`fingerprint`: the
first 32 hex digits of the sha256 of the recipient as written, an SSH key
without its comment), so a restore can say which key it needs before it
touches anything (:func:`check_can_decrypt`).
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import pyrage

from backupctl.store.archive_guard import ArchiveError
from backupctl.store.catalog import Manifest, NodeEntry

#: The suffix of an encrypted archive's key (``redis-0.tar.zst.age``).
SUFFIX = ".age"
#: The manifest's name for the format.
FORMAT = "age"
#: Chunks in flight between the pipeline and the age thread (each at most
#: the compressor's write size, 1 MiB): the memory encryption adds.
QUEUE_DEPTH = 4
#: How often a blocked hand-over re-checks that the other side is still alive.
POLL_SECONDS = 0.2
#: The environment variables that may hold an identity for restore/verify.
IDENTITY_ENV = "BACKUPCTL_AGE_IDENTITY"
IDENTITY_FILE_ENV = "BACKUPCTL_AGE_IDENTITY_FILE"

_SSH_TYPES = ("ssh-ed25519", "ssh-rsa")
_MAX_KEY_FILE = 1 << 20


class EncryptionError(ArchiveError):
    """A key that does not parse, an identity that does not fit, or an
    archive that does not decrypt; one line, never a secret."""


class _Sink(Protocol):
    def write(self, data: bytes | bytearray | memoryview, /) -> int: ...


@dataclass(frozen=True)
class Recipients:
    """Whom a backup is encrypted to: the parsed keys and their fingerprints."""

    keys: tuple[pyrage.x25519.Recipient | pyrage.ssh.Recipient, ...]
    fingerprints: tuple[str, ...]


@dataclass(frozen=True)
class Identities:
    """Private keys that may decrypt, with the fingerprints of their public halves."""

    keys: tuple[pyrage.x25519.Identity | pyrage.ssh.Identity, ...]
    fingerprints: tuple[str, ...]


def canonical_recipient(text: str) -> str:
    """``age1...`` lowercased, or an SSH public key as ``type base64`` (no comment)."""
    text = text.strip()
    if text.lower().startswith("age1"):
        return text.lower()
    parts = text.split()
    if len(parts) >= 2 and parts[0] in _SSH_TYPES:
        return f"{parts[0]} {parts[1]}"
    raise EncryptionError(
        f"{_shown(text)} is not an age recipient: use an X25519 key (age1...) or an SSH public "
        "key (ssh-ed25519 ... / ssh-rsa ...)"
    )


def fingerprint(recipient: str) -> str:
    """What the manifest records for a recipient (never the key itself):
    ``printf %s 'age1...' | sha256sum | cut -c1-32`` gives the same."""
    return hashlib.sha256(canonical_recipient(recipient).encode()).hexdigest()[:32]


def parse_recipients(values: Sequence[str], files: Sequence[Path] = ()) -> Recipients | None:
    """Recipients given inline and in files (one a line, ``#`` comments, as
    ``age -R``); None when there are none."""
    texts = [v.strip() for v in values if v.strip()]
    for path in files:
        texts += [line for line in _lines(path, "recipients file") if not line.startswith("#")]
    if not texts:
        return None
    keys: list[pyrage.x25519.Recipient | pyrage.ssh.Recipient] = []
    prints: list[str] = []
    for text in texts:
        canon = canonical_recipient(text)
        try:
            key: pyrage.x25519.Recipient | pyrage.ssh.Recipient = (
                pyrage.x25519.Recipient.from_str(canon)
                if canon.startswith("age1")
                else pyrage.ssh.Recipient.from_str(canon)
            )
        except pyrage.RecipientError as e:
            raise EncryptionError(f"recipient {_shown(text)} does not parse: {e}") from None
        fp = fingerprint(canon)
        if fp not in prints:
            keys.append(key)
            prints.append(fp)
    return Recipients(keys=tuple(keys), fingerprints=tuple(prints))


def parse_identities(data: bytes, where: str) -> Identities:
    """An age identity file (``AGE-SECRET-KEY-1...`` lines, ``#`` comments)
    or an unencrypted OpenSSH private key. ``where`` names the source in errors
    (the key itself never appears in one)."""
    text = data.decode("utf-8", "replace")
    if "-----BEGIN" in text:
        return _ssh_identity(data, where)
    keys: list[pyrage.x25519.Identity | pyrage.ssh.Identity] = []
    prints: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            ident = pyrage.x25519.Identity.from_str(line)
        except pyrage.IdentityError:
            raise EncryptionError(
                f"{where}: line {n} is not an age identity (AGE-SECRET-KEY-1...); make one with "
                "'age-keygen -o key.txt'"
            ) from None
        keys.append(ident)
        prints.append(fingerprint(str(ident.to_public())))
    if not keys:
        raise EncryptionError(f"{where} holds no age identity (AGE-SECRET-KEY-1... line)")
    return Identities(keys=tuple(keys), fingerprints=tuple(prints))


def _ssh_identity(data: bytes, where: str) -> Identities:
    # Here, not at the top: ~10 MiB that a backup without SSH keys need not hold.
    from cryptography.hazmat.primitives import serialization

    try:
        public = serialization.load_ssh_private_key(data, password=None).public_key()
        line = public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ).decode()
        ident = pyrage.ssh.Identity.from_buffer(data)
    except (ValueError, TypeError, pyrage.IdentityError) as e:
        why = "it is passphrase-protected" if "password" in str(e).lower() else "it does not parse"
        raise EncryptionError(
            f"{where}: cannot use this SSH private key ({why}); use an unencrypted ed25519 or "
            "RSA key, or an age identity file"
        ) from None
    return Identities(keys=(ident,), fingerprints=(fingerprint(line),))


def load_identities(
    files: Sequence[Path], environ: dict[str, str] | None = None
) -> Identities | None:
    """Identities from ``--identity`` files, else from ``$BACKUPCTL_AGE_IDENTITY_FILE``
    (a path) or ``$BACKUPCTL_AGE_IDENTITY`` (the key itself); None when none is given."""
    env = os.environ if environ is None else environ
    sources: list[tuple[bytes, str]] = [
        (_read_key_file(p, "identity file"), f"identity file {p}") for p in files
    ]
    if not sources and env.get(IDENTITY_FILE_ENV):
        p = Path(env[IDENTITY_FILE_ENV])
        sources.append((_read_key_file(p, "identity file"), f"${IDENTITY_FILE_ENV} ({p})"))
    if not sources and env.get(IDENTITY_ENV):
        sources.append((env[IDENTITY_ENV].encode(), f"${IDENTITY_ENV}"))
    if not sources:
        return None
    parsed = [parse_identities(data, where) for data, where in sources]
    return Identities(
        keys=tuple(k for i in parsed for k in i.keys),
        fingerprints=tuple(f for i in parsed for f in i.fingerprints),
    )


def check_can_decrypt(identities: Identities | None, recipients: Sequence[str], what: str) -> None:
    """:class:`EncryptionError` unless one of ``identities`` is among the
    fingerprints ``what`` was encrypted to: checked before anything is touched."""
    if identities is None:
        raise EncryptionError(
            f"{what} is encrypted (age, to {_prints(recipients)}): pass --identity FILE with "
            f"a matching key (or set ${IDENTITY_FILE_ENV})"
        )
    if not set(identities.fingerprints) & set(recipients):
        raise EncryptionError(
            f"{what} is encrypted to {_prints(recipients)}; the identities given are "
            f"{_prints(identities.fingerprints)}: none of them can decrypt it (pass the key it "
            "was encrypted to)"
        )


def require_keys(
    manifest: Manifest, identities: Identities | None, nodes: Sequence[NodeEntry] | None = None
) -> None:
    """:class:`EncryptionError` unless ``identities`` can decrypt every
    encrypted archive of ``nodes`` (default: all of the manifest's): asked
    before anything is downloaded or touched."""
    for n in manifest.nodes if nodes is None else nodes:
        if n.archive.encrypted:
            try:
                check_can_decrypt(
                    identities, n.archive.encrypted_to, f"backup {manifest.id} ({n.archive.key})"
                )
            except EncryptionError as e:
                raise EncryptionError(f"refused, nothing was touched: {e}") from None


def _prints(values: Sequence[str]) -> str:
    return (
        "fingerprint " + ", ".join(values)
        if len(values) == 1
        else "fingerprints " + ", ".join(values)
    )


def _lines(path: Path, what: str) -> list[str]:
    text = _read_key_file(path, what).decode("utf-8", "replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_KEY_FILE + 1)
    except OSError as e:
        raise EncryptionError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if len(data) > _MAX_KEY_FILE:
        raise EncryptionError(f"{what} {path} is larger than 1 MiB: not a key file")
    return data


def _shown(text: str) -> str:
    text = "".join(c if c.isprintable() else "?" for c in text)
    return repr(text if len(text) <= 40 else text[:39] + "…")


# --- streaming ---------------------------------------------------------------


class _Cancelled(Exception):
    pass


class _QueueReader(io.RawIOBase):
    """What pyrage's encrypt thread reads: chunks handed over by :meth:`EncryptingWriter.write`."""

    def __init__(self, q: queue.Queue[bytes | None]) -> None:
        self._q = q
        self._buf = memoryview(b"")
        self._eof = False
        self.cancelled = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._buf and not self._eof:
            item = self._q.get()
            if self.cancelled:
                raise _Cancelled()
            if item is None:
                self._eof = True
            else:
                self._buf = memoryview(item)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class _RecordingSink:
    """The pipeline's sink, keeping the first exception a write raised:
    pyrage turns it into an EncryptError, or (the final write) loses it."""

    def __init__(self, sink: _Sink) -> None:
        self._sink = sink
        self.error: BaseException | None = None

    def write(self, data: bytes) -> int:
        if self.error is not None:
            raise self.error
        try:
            return self._sink.write(data)
        except BaseException as e:
            self.error = e
            raise

    def flush(self) -> None:
        return None


class EncryptingWriter:
    """A writer that encrypts what it is given into ``sink`` (age, to
    ``recipients``). Use through :func:`encrypting`, which finishes or
    abandons the stream."""

    def __init__(self, sink: _Sink, recipients: Recipients) -> None:
        self._q: queue.Queue[bytes | None] = queue.Queue(QUEUE_DEPTH)
        self._reader = _QueueReader(self._q)
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(sink, recipients), name="age-encrypt", daemon=True
        )
        self._thread.start()

    def _run(self, sink: _Sink, recipients: Recipients) -> None:
        out = _RecordingSink(sink)
        try:
            pyrage.encrypt_io(self._reader, out, list(recipients.keys))  # type: ignore[arg-type]
        except BaseException as e:  # handed to the pipeline's thread
            self._error = e
        if out.error is not None:  # pyrage 1.4 drops an error of the stream's last write
            self._error = out.error

    def write(self, data: bytes | bytearray | memoryview) -> int:
        chunk = bytes(data)  # callers reuse their buffers
        if chunk:
            self._put(chunk)
        return len(chunk)

    def _put(self, item: bytes | None) -> None:
        while True:  # ends when the age thread takes the chunk or has ended
            if not self._thread.is_alive():
                raise self._failure()
            try:
                self._q.put(item, timeout=POLL_SECONDS)
                return
            except queue.Full:
                continue

    def _failure(self) -> Exception:
        e = self._error
        if isinstance(e, Exception) and not isinstance(e, pyrage.EncryptError):
            return e  # the sink's own error (a failed upload) as it was
        return EncryptionError(f"age encryption failed: {e}")

    def finish(self) -> None:
        self._put(None)
        self._thread.join()
        if self._error is not None:
            raise self._failure()

    def abandon(self) -> None:
        self._reader.cancelled = True
        with suppress(queue.Full):
            self._q.put_nowait(None)
        self._drain_until_done()

    def _drain_until_done(self) -> None:
        for _ in range(QUEUE_DEPTH + 2):
            try:
                self._q.get_nowait()
                self._q.put_nowait(None)
            except (queue.Empty, queue.Full):
                pass
            self._thread.join(POLL_SECONDS)
            if not self._thread.is_alive():
                return


@contextmanager
def encrypting(sink: _Sink, recipients: Recipients | None) -> Iterator[_Sink]:
    """``sink`` itself, or an age-encrypting writer into it that is finished
    when the block ends (abandoned when it raises)."""
    if recipients is None:
        yield sink
        return
    writer = EncryptingWriter(sink, recipients)
    try:
        yield writer
    except BaseException:
        writer.abandon()
        raise
    writer.finish()


class _QueueWriter:
    """What pyrage's decrypt thread writes to: plaintext handed to :class:`DecryptingReader`."""

    def __init__(self, q: queue.Queue[bytes | None]) -> None:
        self._q = q
        self.cancelled = False

    def write(self, data: bytes) -> int:
        chunk = bytes(data)
        while True:  # ends when the reader takes it or is closed
            if self.cancelled:
                raise _Cancelled()
            try:
                self._q.put(chunk, timeout=POLL_SECONDS)
                return len(chunk)
            except queue.Full:
                continue

    def flush(self) -> None:
        return None


class _RecordingSource(io.RawIOBase):
    """The encrypted source, keeping the exception a read raised (pyrage
    turns it into an I/O error; the caller should see the original)."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            data = self._source.read(len(b))
        except BaseException as e:
            self.error = e
            raise
        n = len(data)
        b[:n] = data
        return n


class DecryptingReader(io.RawIOBase):
    """The plaintext of an age stream read from ``source``, decrypted on a
    helper thread as it is read. A failure (wrong key, a flipped byte, a
    truncated object) raises :class:`EncryptionError` from ``read``; every
    chunk age hands over has passed its authentication tag."""

    def __init__(self, source: BinaryIO, identities: Identities, what: str) -> None:
        super().__init__()
        self._q: queue.Queue[bytes | None] = queue.Queue(QUEUE_DEPTH)
        self._out = _QueueWriter(self._q)
        self._source = _RecordingSource(source)
        self._what = what
        self._error: BaseException | None = None
        self._buf = memoryview(b"")
        self._eof = False
        self._thread = threading.Thread(
            target=self._run, args=(identities,), name="age-decrypt", daemon=True
        )
        self._thread.start()

    def _run(self, identities: Identities) -> None:
        try:
            pyrage.decrypt_io(self._source, self._out, list(identities.keys))  # type: ignore[arg-type]
        except BaseException as e:  # handed to the reading thread
            self._error = e
        finally:
            self._end()

    def _end(self) -> None:
        while not self._out.cancelled:
            try:
                self._q.put(None, timeout=POLL_SECONDS)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._buf and not self._eof:
            item = self._q.get()
            if item is None:
                self._eof = True
                self._thread.join()
                if self._error is not None:
                    raise self._failure(self._error)
            else:
                self._buf = memoryview(item)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def _failure(self, e: BaseException) -> Exception:
        if self._source.error is not None and isinstance(self._source.error, Exception):
            return self._source.error
        text = str(e)
        if "No matching keys" in text:
            return EncryptionError(f"{self._what}: none of the identities given can decrypt it")
        return EncryptionError(
            f"{self._what}: age decryption failed ({text}): the encrypted archive is corrupt, "
            "truncated or was tampered with"
        )

    def close(self) -> None:
        if not self.closed:
            self._out.cancelled = True
            for _ in range(QUEUE_DEPTH + 2):  # let a blocked put see the cancel
                with suppress(queue.Empty):
                    self._q.get_nowait()
                self._thread.join(POLL_SECONDS)
                if not self._thread.is_alive():
                    break
        super().close()


def decrypting_reader(source: BinaryIO, identities: Identities, what: str) -> BinaryIO:
    """A buffered reader of ``source``'s plaintext (see :class:`DecryptingReader`)."""
    return io.BufferedReader(DecryptingReader(source, identities, what), 1 << 16)
