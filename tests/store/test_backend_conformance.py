"""One conformance suite, run unchanged against every storage backend.

memory, a local directory, S3 (moto server), Azure Blob (Azurite) and GCS
(gcp-storage-emulator), the last three over real HTTP on 127.0.0.1 (see
``support/object_stores.py``). A backend that passes behaves the same for catalog,
backup, restore and prune. Below the suite: store URL parsing, credential
and reachability errors as a user sees them, and the retry / dry-run
wrappers.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from backupctl.store.backends import (
    CHUNK_SIZE,
    AccessDenied,
    Backend,
    DryRunBackend,
    NotFound,
    ObjectInfo,
    ObjectWriter,
    PendingUpload,
    RetryingBackend,
    StorageError,
    StoreURLError,
    open_store,
    put_bytes,
    put_stream,
    read_bytes,
)
from backupctl.store.backends import memory as memory_store
from backupctl.store.backends import s3 as s3_module
from backupctl.store.backends.azure import AzureBackend
from backupctl.store.backends.gcs import GCSBackend
from backupctl.store.backends.local import LocalBackend
from backupctl.store.backends.memory import MemoryBackend
from backupctl.store.backends.s3 import S3Backend

from support.object_stores import (
    AzuriteEmulator,
    S3Emulator,
    StoreURL,
    store_env,
    unique_bucket_name,
)

KINDS = ["memory", "file", "s3", "azure", "gcs"]


@dataclass
class Store:
    kind: str
    url: str
    env: dict[str, str]
    backend: Backend


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    kind = request.param
    if kind == "memory":
        name = unique_bucket_name()
        url, env = f"memory://{name}", {}
    else:
        url, env = request.getfixturevalue(f"{kind}_store")
    with store_env(env):  # clients read their settings on first use
        yield Store(kind, url, env, open_store(url))
    if kind == "memory":
        memory_store.drop(name)


def substore(store: Store, prefix: str) -> Backend:
    """The same store opened at ``url/prefix``. A local root must exist (a
    directory is not created by a typo); cloud prefixes are virtual."""
    if store.kind == "file":
        assert isinstance(store.backend, LocalBackend)
        (store.backend.root / prefix).mkdir(parents=True)
    return open_store(f"{store.url}/{prefix}")


def missing_store(store: Store, tmp_path: Path) -> Backend:
    """A backend of the same kind whose bucket/container/directory does not exist."""
    name = unique_bucket_name()
    if store.kind == "memory":
        return MemoryBackend(name, create_store=False)
    if store.kind == "file":
        return open_store(str(tmp_path / name))
    scheme = {"s3": "s3", "azure": "az", "gcs": "gs"}[store.kind]
    return open_store(f"{scheme}://{name}")


def keys(backend: Backend, prefix: str = "") -> list[str]:
    return sorted(o.key for o in backend.list(prefix))


def pending(backend: Backend, key: str) -> list[PendingUpload]:
    return [u for u in backend.pending_uploads() if u.key == key]


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll (bounded in time and count) until ``predicate()`` holds."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05)):
        if predicate() or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return predicate()


def sha256_of(f: BinaryIO, chunk: int) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    while data := f.read(chunk):
        assert len(data) <= chunk
        h.update(data)
        n += len(data)
    return h.hexdigest(), n


# --- the suite ---------------------------------------------------------------------


def test_small_objects_roundtrip(store: Store) -> None:
    b = store.backend
    b.check()
    put_bytes(b, "manifest.json", b'{"ok": true}\n')
    put_bytes(b, "empty", b"")
    assert read_bytes(b, "manifest.json") == b'{"ok": true}\n'
    assert read_bytes(b, "empty") == b""
    assert b.stat("empty").size == 0
    assert isinstance(b, Backend)


def test_multipart_object_roundtrip(store: Store) -> None:
    """20 MiB of random data: more than two parts/blocks/chunks, written in
    odd-sized pieces and read back in small ones, equal by sha256."""
    data = random.Random(7).randbytes(20 * 1024 * 1024 + 12_345)
    assert len(data) > 2 * CHUNK_SIZE
    b = store.backend
    with b.writer("redis/backup-20240101-120000/redis-0.tar.zst") as w:
        view = memoryview(data)
        for i in range(0, len(data), 1_000_003):
            assert w.write(view[i : i + 1_000_003]) == len(view[i : i + 1_000_003])
        w.commit()
    info = b.stat("redis/backup-20240101-120000/redis-0.tar.zst")
    assert info.size == len(data)
    with b.open("redis/backup-20240101-120000/redis-0.tar.zst") as f:
        assert sha256_of(f, 64 * 1024) == (hashlib.sha256(data).hexdigest(), len(data))


class Generated:
    """A readable stream of ``size`` bytes that never exists whole in memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int = -1) -> bytes:
        k = self.left if n < 0 else min(n, self.left)
        self.left -= k
        return b"\x07" * k


def test_large_objects_stream_in_bounded_memory(store: Store) -> None:
    """Writing and reading 64 MiB never holds the object whole: peak Python
    memory stays under 48 MiB both ways (parts in flight + one buffer)."""
    if store.kind == "memory":
        pytest.skip("the memory backend holds objects whole by design")
    size = 64 * 1024 * 1024
    put_bytes(store.backend, "warm-up", b"")  # SDK clients are set up outside the measurement
    tracemalloc.start()
    try:
        put_stream(store.backend, "big", cast(BinaryIO, Generated(size)))
        write_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        with store.backend.open("big") as f:
            got = 0
            while chunk := f.read(1024 * 1024):
                got += len(chunk)
        read_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == size
    assert write_peak < 48 * 1024 * 1024, f"write peak {write_peak / 2**20:.1f} MiB"
    assert read_peak < 48 * 1024 * 1024, f"read peak {read_peak / 2**20:.1f} MiB"


def test_streamed_reads_in_small_chunks(store: Store) -> None:
    data = bytes(range(256)) * 400  # 100 KiB
    put_bytes(store.backend, "a/obj", data)
    with store.backend.open("a/obj") as f:
        assert f.read(1) == data[:1]
        assert f.read(0) == b""
        got = [data[:1]]
        while chunk := f.read(1000):
            assert len(chunk) == 1000 or len(chunk) == (len(data) - 1) % 1000
            got.append(chunk)
        assert f.read() == b""
    assert b"".join(got) == data


def test_list_with_prefix_and_nested_keys(store: Store) -> None:
    b = store.backend
    for key in ["a/b/c.txt", "a/b/d.txt", "a/e.txt", "ab.txt", "z.txt"]:
        put_bytes(b, key, key.encode())
    assert keys(b) == ["a/b/c.txt", "a/b/d.txt", "a/e.txt", "ab.txt", "z.txt"]
    assert keys(b, "a/") == ["a/b/c.txt", "a/b/d.txt", "a/e.txt"]
    assert keys(b, "a/b/") == ["a/b/c.txt", "a/b/d.txt"]
    assert keys(b, "a") == ["a/b/c.txt", "a/b/d.txt", "a/e.txt", "ab.txt"]  # string prefix
    assert keys(b, "a/b/c") == ["a/b/c.txt"]
    assert keys(b, "nothing/") == []
    sizes = {o.key: o.size for o in b.list("a/")}
    assert sizes["a/e.txt"] == len(b"a/e.txt")


def test_url_prefix_is_the_root_of_keys(store: Store) -> None:
    sub = substore(store, "team/redis")
    put_bytes(sub, "x/obj", b"inside")
    put_bytes(store.backend, "outside", b"outside")
    assert keys(sub) == ["x/obj"]
    assert keys(store.backend) == ["outside", "team/redis/x/obj"]
    assert read_bytes(store.backend, "team/redis/x/obj") == b"inside"
    assert sub.stat("x/obj").key == "x/obj"
    assert sub.url.endswith("team/redis")


def test_stat_size_and_mtime(store: Store) -> None:
    before = datetime.now(UTC) - timedelta(seconds=2)
    put_bytes(store.backend, "k/obj", b"12345")
    after = datetime.now(UTC) + timedelta(seconds=2)
    info = store.backend.stat("k/obj")
    assert (info.key, info.size) == ("k/obj", 5)
    assert info.modified.tzinfo is not None
    assert before <= info.modified <= after
    (listed,) = store.backend.list("k/")
    assert listed.size == 5 and before <= listed.modified <= after


def test_overwrite_replaces_the_object(store: Store) -> None:
    put_bytes(store.backend, "obj", b"first version, longer")
    put_bytes(store.backend, "obj", b"second")
    assert read_bytes(store.backend, "obj") == b"second"
    assert keys(store.backend) == ["obj"]


def test_delete_is_idempotent(store: Store) -> None:
    b = store.backend
    put_bytes(b, "d/e/obj", b"x")
    put_bytes(b, "d/keep", b"y")
    b.delete("d/e/obj")
    b.delete("d/e/obj")
    b.delete("never/existed")
    assert keys(b) == ["d/keep"]
    with pytest.raises(NotFound):
        b.stat("d/e/obj")


def test_missing_key_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="nope/obj"):
        store.backend.open("nope/obj")
    with pytest.raises(NotFound, match="nope/obj"):
        store.backend.stat("nope/obj")


def test_invalid_keys_are_rejected(store: Store) -> None:
    for bad in ["", "/abs", "a/../b", "a//b", "./a"]:
        with pytest.raises(StorageError, match="invalid object key"):
            store.backend.writer(bad)
        with pytest.raises(StorageError, match="invalid object key"):
            store.backend.stat(bad)


@pytest.mark.parametrize("size", [100, CHUNK_SIZE + 100], ids=["small", "multipart"])
def test_aborted_writer_leaves_nothing(store: Store, size: int) -> None:
    b = store.backend
    with pytest.raises(RuntimeError, match="compression failed"), b.writer("x/obj") as w:
        w.write(b"\0" * size)
        raise RuntimeError("compression failed")
    assert keys(b) == []
    with pytest.raises(NotFound):
        b.stat("x/obj")
    assert list(b.pending_uploads()) == []


def test_writer_left_without_commit_is_discarded(store: Store) -> None:
    with store.backend.writer("obj") as w:
        w.write(b"data nobody committed")
    assert keys(store.backend) == []
    assert list(store.backend.pending_uploads()) == []
    with pytest.raises(StorageError, match="aborted"):
        w.write(b"more")


def test_writer_not_visible_before_commit(store: Store) -> None:
    b = store.backend
    data = random.Random(1).randbytes(CHUNK_SIZE + 4096)
    with b.writer("r/obj") as w:
        w.write(data)
        assert keys(b) == []
        with pytest.raises(NotFound):
            b.stat("r/obj")
        w.commit()
        with pytest.raises(StorageError, match="committed"):
            w.write(b"late")
    assert keys(b) == ["r/obj"]
    assert b.stat("r/obj").size == len(data)


def test_pending_uploads_are_listed_and_abortable(store: Store) -> None:
    if store.kind == "gcs":
        pytest.skip("GCS has no API to list resumable upload sessions (pending_uploads is empty)")
    b = store.backend
    w = b.writer("p/q/obj")
    w.write(b"\1" * (CHUNK_SIZE + 1))  # at least one part/block is on its way
    assert wait_for(lambda: len(pending(b, "p/q/obj")) == 1), list(b.pending_uploads())
    (upload,) = pending(b, "p/q/obj")
    assert upload.started.tzinfo is not None
    assert [u.key for u in b.pending_uploads("p/")] == ["p/q/obj"]
    assert list(b.pending_uploads("other/")) == []
    assert keys(b) == []  # an unfinished upload is not an object

    b.abort_upload(upload)  # what a sweeper does with a stale one
    b.abort_upload(upload)  # twice is harmless
    assert pending(b, "p/q/obj") == []
    with pytest.raises(StorageError):
        w.commit()  # its upload is gone: the writer cannot complete it
    w.abort()
    assert keys(b) == []


def test_missing_bucket_is_not_found(store: Store, tmp_path: Path) -> None:
    missing = missing_store(store, tmp_path)
    with pytest.raises(NotFound) as err:
        missing.check()
    assert "\n" not in str(err.value)
    if store.kind == "file":
        assert "mkdir -p" in str(err.value)
    with pytest.raises(NotFound):
        list(missing.list())
    with pytest.raises(NotFound):
        put_bytes(missing, "k", b"x")


# --- open_store ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "cls", "expected_url"),
    [
        ("s3://my-bucket", S3Backend, "s3://my-bucket"),
        ("s3://my.bucket-1/a/b/", S3Backend, "s3://my.bucket-1/a/b"),
        ("az://backups/redis", AzureBackend, "az://backups/redis"),
        ("gs://my_bucket/x", GCSBackend, "gs://my_bucket/x"),
        ("file:///var/backups", LocalBackend, "file:///var/backups"),
        ("file://localhost/var/backups", LocalBackend, "file:///var/backups"),
        ("/var/backups", LocalBackend, "file:///var/backups"),
        ("memory://unit", MemoryBackend, "memory://unit"),
    ],
)
def test_open_store_parses_urls(url: str, cls: type, expected_url: str) -> None:
    backend = open_store(url)
    assert isinstance(backend, cls)
    assert backend.url == expected_url


def test_open_store_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    backend = open_store("backups")
    assert backend.url == (tmp_path / "backups").as_uri()
    with pytest.raises(NotFound, match="mkdir -p"):
        backend.check()
    (tmp_path / "backups").mkdir()
    backend.check()


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("ftp://host/x", "unsupported store URL scheme"),
        ("gcs://bucket", "did you mean gs://"),
        ("s3://", "names no S3 bucket"),
        ("s3:///prefix", "names no S3 bucket"),
        ("s3://Bad_Bucket", "invalid S3 bucket name"),
        ("s3://ab", "invalid S3 bucket name"),
        ("s3://a..b", "invalid S3 bucket name"),
        ("s3://192.168.1.1", "invalid S3 bucket name"),
        ("az://UPPER", "invalid Azure container name"),
        ("az://a--b", "invalid Azure container name"),
        ("gs://goog-x", "invalid GCS bucket name"),
        ("gs://my-google-bucket", "invalid GCS bucket name"),
        ("s3://key:secret@bucket", "contains credentials"),
        ("s3://bucket?region=eu", "query"),
        ("file://relative/path", "three slashes"),
        ("s3:bucket", "did you mean s3://bucket"),
        ("memory://", "memory://name"),
        ("", "empty store URL"),
    ],
)
def test_open_store_rejects_bad_urls(url: str, complaint: str) -> None:
    with pytest.raises(StoreURLError) as err:
        open_store(url)
    message = str(err.value)
    assert complaint in message
    assert "\n" not in message
    assert "://" in message  # shows what a correct URL looks like
    assert isinstance(err.value, StorageError)


def test_open_store_checks_the_endpoint() -> None:
    with pytest.raises(StoreURLError, match="invalid endpoint"):
        open_store("s3://bucket", endpoint="127.0.0.1:9000")
    with pytest.raises(StoreURLError, match="only applies"):
        open_store("/var/backups", endpoint="http://127.0.0.1:9000")
    assert isinstance(open_store("s3://bucket", endpoint="http://127.0.0.1:9000/"), S3Backend)


def test_memory_store_is_shared_by_name() -> None:
    name = unique_bucket_name()
    put_bytes(open_store(f"memory://{name}"), "k", b"v")
    assert read_bytes(open_store(f"memory://{name}"), "k") == b"v"
    memory_store.drop(name)


# --- credentials and reachability --------------------------------------------------------


def test_s3_wrong_credentials_are_access_denied(tmp_path: Path) -> None:
    # A moto server that checks credentials from the first request on.
    emulator = S3Emulator(tmp_path, extra_env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        with store_env({**emulator.env, "AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG0"}):
            backend = open_store("s3://some-bucket")
            with pytest.raises(AccessDenied, match="AWS_ACCESS_KEY_ID") as err:
                backend.check()
            with pytest.raises(AccessDenied):
                put_bytes(backend, "k", b"x")
    finally:
        emulator.stop()
    assert "\n" not in str(err.value)


def test_s3_without_credentials_says_how_to_set_them(
    s3_store: StoreURL, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"]:
        monkeypatch.delenv(name, raising=False)
    env = {k: v for k, v in s3_store.env.items() if not k.startswith("AWS_ACCESS_KEY")}
    env.pop("AWS_SECRET_ACCESS_KEY")
    expected = "no AWS credentials found: set AWS_ACCESS_KEY_ID"
    with store_env(env), pytest.raises(AccessDenied, match=expected):
        open_store(s3_store.url).check()


def test_azure_wrong_key_is_access_denied(
    azurite_server: AzuriteEmulator, azure_store: StoreURL
) -> None:
    wrong = azurite_server.connection_string_with("d3Jvbmcga2V5" * 7 + "AAAA")
    with store_env({"AZURE_STORAGE_CONNECTION_STRING": wrong}):
        backend = open_store(azure_store.url)
        with pytest.raises(AccessDenied, match="AZURE_STORAGE_KEY") as err:
            backend.check()
        with pytest.raises(AccessDenied):
            put_bytes(backend, "k", b"x")
    assert "\n" not in str(err.value)


def test_azure_account_and_key_with_endpoint(
    azurite_server: AzuriteEmulator, azure_store: StoreURL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The variables the Job gets from a RedisBackup's azureBlob spec."""
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    env = {
        "AZURE_STORAGE_ACCOUNT": "devstoreaccount1",
        "AZURE_STORAGE_KEY": azurite_server.connection_string.split("AccountKey=")[1].split(";")[0],
        "AZURE_STORAGE_ENDPOINT": azurite_server.endpoint,
    }
    with store_env(env):
        backend = open_store(azure_store.url)
        put_bytes(backend, "k", b"via account key")
        assert read_bytes(backend, "k") == b"via account key"


def test_azure_without_credentials_says_how_to_set_them(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ["AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY"]:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(AccessDenied, match="AZURE_STORAGE_CONNECTION_STRING"):
        open_store("az://backups").check()


@pytest.fixture
def dead_endpoint() -> Iterator[str]:
    """A loopback port that is bound but not listening: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("url", ["s3://some-bucket", "az://some-container", "gs://some-bucket"])
def test_unreachable_endpoint_is_transient_and_fails_fast(
    url: str, dead_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "BACKUPCTL_GCS_ANONYMOUS": "true",  # an emulator given by its endpoint
        "AZURE_STORAGE_CONNECTION_STRING": (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
            f"BlobEndpoint={dead_endpoint}/devstoreaccount1;"
        ),
    }
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    endpoint = dead_endpoint + ("/devstoreaccount1" if url.startswith("az") else "")
    with store_env(env):
        backend = open_store(url, endpoint=endpoint)
        start = time.monotonic()
        with pytest.raises(StorageError) as err:
            backend.check()
        elapsed = time.monotonic() - start
    assert err.value.transient
    assert "cannot reach" in str(err.value) and dead_endpoint in str(err.value)
    assert "\n" not in str(err.value)
    assert elapsed < 30


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 to ``target_port``. While ``cuts_left`` > 0,
    the next connection to carry ``cut_after`` response bytes is dropped
    there: a network blip in the middle of a download."""

    def __init__(self, target_port: int, cut_after: int) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.cuts_left = 0
        self.fired = 0  # connections actually cut mid-response
        self._lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # the listener was closed: stop
            while True:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
                for src, dst, cut in ((client, upstream, False), (upstream, client, True)):
                    threading.Thread(target=self._pipe, args=(src, dst, cut), daemon=True).start()

    def _should_cut(self) -> bool:
        with self._lock:
            if self.cuts_left <= 0:
                return False
            self.cuts_left -= 1
            self.fired += 1
            return True

    def _pipe(self, src: socket.socket, dst: socket.socket, cut: bool) -> None:
        sent = 0
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
                sent += len(data)
                if cut and sent >= self.cut_after and self._should_cut():
                    break
                if sent >= self.cut_after:
                    cut = False  # this connection got past the blip
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("kind", ["s3", "azure", "gcs"])
def test_read_survives_a_dropped_connection(
    kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore must not fail on one network blip: S3 reads resume with a
    Range request (ours); Azure and GCS re-request the broken range (SDK)."""
    url, env = request.getfixturevalue(f"{kind}_store")
    server_fixture = {"s3": "s3_server", "azure": "azurite_server", "gcs": "gcs_server"}[kind]
    server = request.getfixturevalue(server_fixture)
    data = random.Random(3).randbytes(6 * 1024 * 1024)
    expected = (hashlib.sha256(data).hexdigest(), len(data))
    port = int(server.endpoint.split("//")[1].split("/")[0].split(":")[1])
    proxy = CuttingProxy(port, cut_after=3 * 2**20)
    proxied = server.endpoint.replace(f":{port}", f":{proxy.port}")
    try:
        with store_env(env):
            put_bytes(open_store(url), "obj", data)
            via_proxy = open_store(url, endpoint=proxied)
            if kind == "s3":  # without resuming, the blip fails the read: the cut is real
                monkeypatch.setattr(s3_module, "_READ_RESUMES", 0)
                proxy.cuts_left = 1
                with pytest.raises(StorageError) as err, via_proxy.open("obj") as f:
                    sha256_of(f, 256 * 1024)
                assert err.value.transient and "broke off" in str(err.value)
                monkeypatch.undo()
            proxy.cuts_left = 1
            fired = proxy.fired
            with via_proxy.open("obj") as f:
                assert sha256_of(f, 256 * 1024) == expected
            assert proxy.fired == fired + 1  # the download really was cut
    finally:
        proxy.close()


# --- RetryingBackend and DryRunBackend ----------------------------------------------------


@dataclass
class Flaky:
    """Wraps a backend; each method first raises the errors queued for it."""

    inner: Backend
    errors: dict[str, list[StorageError]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    url: str = "flaky://"

    def _maybe_fail(self, method: str) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1
        queue = self.errors.get(method, [])
        if queue:
            raise queue.pop(0)

    def check(self) -> None:
        self._maybe_fail("check")
        self.inner.check()

    def writer(self, key: str) -> ObjectWriter:
        self._maybe_fail("writer")
        return self.inner.writer(key)

    def open(self, key: str) -> BinaryIO:
        self._maybe_fail("open")
        return self.inner.open(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._maybe_fail("list")
        items = list(self.inner.list(prefix))
        yield from items[:2]
        self._maybe_fail("list-middle")  # a failure after some items were yielded
        yield from items[2:]

    def stat(self, key: str) -> ObjectInfo:
        self._maybe_fail("stat")
        return self.inner.stat(key)

    def delete(self, key: str) -> None:
        self._maybe_fail("delete")
        self.inner.delete(key)

    def pending_uploads(self, prefix: str = "") -> Iterator[PendingUpload]:
        self._maybe_fail("pending_uploads")
        return self.inner.pending_uploads(prefix)

    def abort_upload(self, upload: PendingUpload) -> None:
        self._maybe_fail("abort_upload")
        self.inner.abort_upload(upload)


def transient() -> StorageError:
    return StorageError("cannot reach S3 endpoint http://127.0.0.1:1: refused", transient=True)


@pytest.fixture
def mem() -> Iterator[Backend]:
    name = unique_bucket_name()
    yield open_store(f"memory://{name}")
    memory_store.drop(name)


def test_retry_recovers_from_transient_errors(mem: Backend) -> None:
    put_bytes(mem, "k", b"value")
    flaky = Flaky(mem, {m: [transient(), transient()] for m in ["stat", "open", "check"]})
    sleeps: list[float] = []
    b = RetryingBackend(flaky, attempts=5, base_delay=0.5, max_delay=10, sleep=sleeps.append)
    assert b.stat("k").size == 5
    assert read_bytes(b, "k") == b"value"
    b.check()
    assert flaky.calls == {"stat": 3, "open": 3, "check": 3}
    assert len(sleeps) == 6
    assert 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0  # exponential, jittered


def test_retry_does_not_retry_permanent_errors(mem: Backend) -> None:
    flaky = Flaky(mem, {"delete": [AccessDenied("denied")]})
    sleeps: list[float] = []
    b = RetryingBackend(flaky, sleep=sleeps.append)
    with pytest.raises(NotFound):
        b.stat("missing")
    with pytest.raises(AccessDenied):
        b.delete("k")
    assert flaky.calls == {"stat": 1, "delete": 1}
    assert sleeps == []


def test_retry_gives_up_after_attempts(mem: Backend) -> None:
    flaky = Flaky(mem, {"stat": [transient() for _ in range(10)]})
    sleeps: list[float] = []
    b = RetryingBackend(flaky, attempts=4, base_delay=1, max_delay=2, sleep=sleeps.append)
    with pytest.raises(StorageError, match="gave up after 4 attempts") as err:
        b.stat("k")
    assert err.value.transient
    assert flaky.calls["stat"] == 4
    assert len(sleeps) == 3 and max(sleeps) <= 2


def test_retry_is_bounded_in_total_time(mem: Backend) -> None:
    now = [0.0]

    def fake_sleep(seconds: float) -> None:
        now[0] += seconds

    flaky = Flaky(mem, {"check": [transient() for _ in range(100)]})
    b = RetryingBackend(
        flaky,
        attempts=100,
        base_delay=1,
        max_delay=10,
        sleep=fake_sleep,
        max_elapsed=30,
        clock=lambda: now[0],
    )
    with pytest.raises(StorageError):
        b.check()
    assert now[0] <= 30
    assert flaky.calls["check"] < 100


def test_retry_restarts_a_listing_without_duplicates(mem: Backend) -> None:
    for k in ["a", "b", "c", "d"]:
        put_bytes(mem, k, b"x")
    flaky = Flaky(mem, {"list": [transient()], "list-middle": [transient()]})
    b = RetryingBackend(flaky, sleep=lambda s: None)
    assert sorted(o.key for o in b.list()) == ["a", "b", "c", "d"]
    assert flaky.calls["list"] == 3


def test_retry_passes_writers_through(mem: Backend) -> None:
    flaky = Flaky(mem, {"writer": [transient()]})
    b = RetryingBackend(flaky, sleep=lambda s: None)
    with pytest.raises(StorageError):
        b.writer("k")  # not retried: a stream cannot be replayed
    put_bytes(b, "k", b"v")
    assert read_bytes(mem, "k") == b"v"


def test_dry_run_records_instead_of_deleting(mem: Backend) -> None:
    put_bytes(mem, "keep/me", b"x")
    w = mem.writer("half/done")
    w.write(b"partial")
    (upload,) = mem.pending_uploads()
    dry = DryRunBackend(mem)
    dry.delete("keep/me")
    dry.abort_upload(upload)
    put_bytes(dry, "new", b"y")
    assert dry.would_delete == ["keep/me"]
    assert dry.would_abort == [upload]
    assert dry.would_write == ["new"]
    assert keys(mem) == ["keep/me"]  # nothing deleted or written
    assert list(mem.pending_uploads()) == [upload]
    assert [o.key for o in dry.list()] == ["keep/me"]
    w.abort()
