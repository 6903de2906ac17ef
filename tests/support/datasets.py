"""Datasets written into a live Redis or Valkey for restore tests and benchmarks.

Why a module of its own: a restore is only proven by data that exercises what
the RDB can hold. ``fill_full`` writes every value type in every encoding the
server at hand has (asked with ``OBJECT ENCODING`` after writing, so a server
that picks another encoding fails here, not silently in a restore test):

- strings: int, embstr, raw, one over 1 MiB;
- lists: listpack (7.2+), quicklist small and big, quicklist with plain nodes
  (elements over 8 KiB, via ``DEBUG QUICKLIST-PACKED-THRESHOLD``);
- sets: intset, listpack (7.2+), hashtable;
- sorted sets: listpack, skiplist; exact doubles (inf, -inf, denormals,
  17-digit values) in keys listed in ``Written.exact_scores``;
- hashes: listpack, hashtable, with field TTLs where the server has them
  (``HEXPIRE``/``HSETEX``: Redis 7.4+/8.0+, Valkey 9.0+);
- streams: entries, deleted entries, an emptied stream, consumer groups with
  pending entries and consumers;
- keys with TTLs (far, near, and optionally some ending within
  ``expiring_ms``), keys in several databases, a Functions library, binary
  keys, members and values.

``fill_bulk`` (N keys of S bytes, pipelined, distinct, partly compressible),
``fill_big_hash`` (one hash of M bytes in bounded pipelines) and
``fill_big_values`` (one big value of each type) make size, not variety.
Everything is deterministic from ``seed``; each function returns a
:class:`Written` record of what it wrote.

Scores that are not short exact decimals are only in ``exact_scores`` keys:
``DEBUG DIGEST`` hashes a score as text and Redis 7.0 prints doubles with
``%.17g`` where 7.2+ prints the shortest form, so across versions those keys
must be compared by value (:func:`exact_scores_of`), not by digest.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

TEN_YEARS = 10 * 365 * 24 * 3600
LIBRARY_NAME = "datasets"
LIBRARY = (
    f"#!lua name={LIBRARY_NAME}\n"
    "redis.register_function('ds_answer', function() return 42 end)\n"
    "redis.register_function{function_name='ds_echo', callback=function(keys, args) "
    "return args[1] end, flags={'no-writes'}}"
)
#: Doubles whose text form differs between servers' formatters, or that are edge cases.
EXACT_SCORES = (
    float("inf"), float("-inf"), 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
    -1.7976931348623157e308, 0.1, 1 / 3, -2.5e-310, 123456789.123456789, 0.0,
)  # fmt: skip


# -- what a server has (pure) ------------------------------------------------------------


@dataclass(frozen=True)
class Features:
    """What a server version offers that changes the dataset."""

    listpack_small: bool  # small sets and lists as listpack (Redis/Valkey 7.2+)
    field_ttls: bool  # HEXPIRE / HTTL (Redis 7.4+, Valkey 9.0+)
    hsetex: bool  # HSETEX ... FIELDS n (Redis 8.0+, Valkey 9.0+)


def _version(text: str) -> tuple[int, int]:
    parts = [*text.split("."), "0"][:2]
    return int(parts[0]), int(parts[1])


def features(flavour: str, version: str) -> Features:
    """What ``flavour`` ("redis" | "valkey") ``version`` ("8.0.2") offers."""
    if flavour not in ("redis", "valkey"):
        raise ValueError(f"unknown flavour {flavour!r}: redis or valkey")
    v = _version(version)
    if flavour == "redis":
        return Features(listpack_small=v >= (7, 2), field_ttls=v >= (7, 4), hsetex=v >= (8, 0))
    return Features(listpack_small=v >= (7, 2), field_ttls=v >= (9, 0), hsetex=v >= (9, 0))


def server_of(info: dict[str, Any]) -> tuple[str, str]:
    """(flavour, version) from ``INFO server`` (Valkey also says redis_version:7.2.4)."""
    if "valkey_version" in info:
        return "valkey", str(info["valkey_version"])
    return "redis", str(info["redis_version"])


# -- what was written ---------------------------------------------------------------------


@dataclass
class Written:
    """What a fill wrote: keys per database and type, the encodings seen, and the
    keys a comparison has to treat specially."""

    counts: dict[int, dict[str, int]] = field(default_factory=dict)  # db -> type -> keys
    encodings: set[str] = field(default_factory=set)  # "list:quicklist", "set:intset", ...
    size: int = 0  # payload bytes sent (values, members, fields): the dataset's size
    expiring: list[tuple[int, bytes]] = field(default_factory=list)  # end within expiring_ms
    exact_scores: list[tuple[int, bytes]] = field(default_factory=list)  # compare by value
    field_ttls: list[tuple[int, bytes]] = field(default_factory=list)  # hashes with field TTLs
    functions: list[str] = field(default_factory=list)

    def add(self, db: int, kind: str, n: int = 1) -> None:
        per_db = self.counts.setdefault(db, {})
        per_db[kind] = per_db.get(kind, 0) + n

    def keys_per_db(self) -> dict[int, int]:
        return {db: sum(kinds.values()) for db, kinds in sorted(self.counts.items()) if kinds}

    @property
    def keys(self) -> int:
        return sum(self.keys_per_db().values())

    def merge(self, other: Written) -> Written:
        for db, kinds in other.counts.items():
            for kind, n in kinds.items():
                self.add(db, kind, n)
        self.encodings |= other.encodings
        self.size += other.size
        self.expiring += other.expiring
        self.exact_scores += other.exact_scores
        self.field_ttls += other.field_ttls
        self.functions += other.functions
        return self


def on_db(client: redis.Redis, db: int) -> redis.Redis:
    """A client of the same server (address, password, TLS) on database ``db``,
    answering bytes."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "db": db, "decode_responses": False}
    return redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    )


# -- the full dataset ---------------------------------------------------------------------


class _Filler:
    """Writes through one pipeline per database and records what it wrote."""

    def __init__(self, client: redis.Redis, rnd: random.Random, written: Written) -> None:
        self.base = client
        self.rnd = rnd
        self.written = written
        self.expect: list[tuple[int, bytes, str, str]] = []  # db, key, type, encoding

    def client(self, db: int) -> redis.Redis:
        return on_db(self.base, db)

    def key(self, db: int, name: str | bytes, kind: str, encoding: str, size: int) -> bytes:
        raw = name.encode() if isinstance(name, str) else name
        self.written.add(db, kind)
        self.written.size += size
        self.expect.append((db, raw, kind, encoding))
        return raw

    def check_encodings(self) -> None:
        by_db: dict[int, list[tuple[bytes, str, str]]] = defaultdict(list)
        for db, key, kind, encoding in self.expect:
            by_db[db].append((key, kind, encoding))
        wrong = []
        for db, items in by_db.items():
            with self.client(db) as c:
                pipe = c.pipeline(transaction=False)
                for key, _, _ in items:
                    pipe.object("ENCODING", key)
                for (key, kind, want), got in zip(items, pipe.execute(), strict=True):
                    seen = got.decode() if isinstance(got, bytes) else str(got)
                    self.written.encodings.add(f"{kind}:{seen}")
                    if want and seen != want:
                        wrong.append(f"db{db} {key!r}: {kind} {seen}, meant {want}")
        if wrong:
            raise AssertionError("the server chose other encodings: " + "; ".join(wrong))


def fill_full(
    client: redis.Redis,
    *,
    flavour: str | None = None,
    version: str | None = None,
    seed: int = 1,
    databases: Sequence[int] = (0, 1, 5),
    small_keys: int = 400,
    expiring_ms: int = 0,
    functions: bool = True,
) -> Written:
    """Every type and encoding the server has (see the module docstring) into
    ``databases`` (the first gets the full variety, the others a smaller mix).
    ``expiring_ms`` > 0: also a few keys (a string, a hash, a list) per database
    whose TTL ends that many milliseconds from now. ``flavour``/``version``
    default to what ``INFO server`` says."""
    if flavour is None or version is None:
        flavour, version = server_of(client.info("server"))
    feats = features(flavour, version)
    rnd = random.Random(seed)
    written = Written()
    filler = _Filler(client, rnd, written)
    first, *others = databases
    with filler.client(first) as c:
        _variety(filler, c, first, feats, small_keys)
        if functions:
            c.execute_command("FUNCTION", "LOAD", "REPLACE", LIBRARY)
            written.functions.append(LIBRARY_NAME)
        if expiring_ms > 0:
            _expiring(filler, c, first, expiring_ms)
    for db in others:
        with filler.client(db) as c:
            _small_mix(filler, c, db, small_keys // 4)
            if expiring_ms > 0:
                _expiring(filler, c, db, expiring_ms)
    filler.check_encodings()
    return written


def _variety(f: _Filler, c: redis.Redis, db: int, feats: Features, small_keys: int) -> None:
    rnd = f.rnd
    pipe = c.pipeline(transaction=False)
    # strings
    for i in range(small_keys):
        pipe.set(f.key(db, f"int:{i}", "string", "int", 8), rnd.randint(-(2**62), 2**62))
        value = "e" + rnd.randbytes(rnd.randint(1, 8)).hex()
        pipe.set(f.key(db, f"emb:{i}", "string", "embstr", len(value)), value)
    for i in range(20):
        raw = ("compressible-text " * rnd.randint(12, 80)).encode() + rnd.randbytes(16)
        pipe.set(f.key(db, f"raw:{i}", "string", "raw", len(raw)), raw)
    big = rnd.randbytes(1 << 19) * 3  # 1.5 MiB, half of it repeats
    pipe.set(f.key(db, "string:over-1MiB", "string", "raw", len(big)), big)
    binary_key = b"\x00\xffbin\r\n key\xfe" + rnd.randbytes(8)
    pipe.set(f.key(db, binary_key, "string", "raw", 300), rnd.randbytes(300))
    # lists
    if feats.listpack_small:
        pipe.rpush(
            f.key(db, "list:listpack", "list", "listpack", 60), *[f"i{j}" for j in range(20)]
        )
    pipe.rpush(
        f.key(db, "list:small", "list", "" if feats.listpack_small else "quicklist", 40),
        *[rnd.randbytes(2) for _ in range(20)],
    )
    items = [rnd.randbytes(40).hex() for _ in range(3000)]
    pipe.rpush(f.key(db, "list:quicklist-big", "list", "quicklist", 80 * 3000), *items)
    pipe.rpush(
        f.key(db, "list:ints", "list", "quicklist", 8 * 2000),
        *[rnd.randint(-(2**40), 2**40) for _ in range(2000)],
    )
    pipe.execute()
    # plain quicklist nodes: elements at or above the packed threshold
    c.execute_command("DEBUG", "QUICKLIST-PACKED-THRESHOLD", 8192)
    try:
        plain = [rnd.randbytes(9000 + j) for j in range(4)]
        c.rpush(f.key(db, "list:plain-nodes", "list", "quicklist", sum(map(len, plain))), *plain)
        c.rpush("list:plain-nodes", "small", "after")  # a packed node beside them
    finally:
        c.execute_command("DEBUG", "QUICKLIST-PACKED-THRESHOLD", 1 << 30)
    # sets
    pipe.sadd(f.key(db, "set:intset", "set", "intset", 8 * 300), *range(0, 900, 3))
    pipe.sadd(f.key(db, "set:intset-wide", "set", "intset", 80), -(2**62), 2**62, 7, -7)
    if feats.listpack_small:
        pipe.sadd(f.key(db, "set:listpack", "set", "listpack", 60), *[f"m{j}" for j in range(20)])
    pipe.sadd(
        f.key(db, "set:hashtable", "set", "hashtable", 12 * 800),
        *[f"member-{j}" for j in range(800)],
    )
    pipe.sadd(
        f.key(db, b"set:binary\x00", "set", "hashtable", 64 * 200),
        *[rnd.randbytes(64) for _ in range(200)],
    )
    # sorted sets (short exact decimals: equal digests across servers)
    pipe.zadd(
        f.key(db, "zset:listpack", "zset", "listpack", 60), {f"z{j}": j * 1.5 for j in range(20)}
    )
    pipe.zadd(
        f.key(db, "zset:skiplist", "zset", "skiplist", 20 * 1000),
        {f"member-{j}": rnd.randint(-(10**6), 10**6) / 64 for j in range(1000)},
    )
    exact_small = {f"e{j}".encode(): s for j, s in enumerate(EXACT_SCORES)}
    pipe.zadd(f.key(db, "zset:exact:listpack", "zset", "listpack", 100), exact_small)
    exact_big = {rnd.randbytes(12): s for s in EXACT_SCORES}
    for _ in range(300):
        exact_big[rnd.randbytes(12)] = rnd.choice(
            (rnd.random(), rnd.uniform(-1e300, 1e300), rnd.random() * 1e-310, rnd.gauss(0, 1e9))
        )
    pipe.zadd(f.key(db, "zset:exact:skiplist", "zset", "skiplist", 20 * len(exact_big)), exact_big)
    f.written.exact_scores += [(db, b"zset:exact:listpack"), (db, b"zset:exact:skiplist")]
    # hashes
    pipe.hset(
        f.key(db, "hash:listpack", "hash", "listpack", 100),
        mapping={f"f{j}": f"v{j}" for j in range(20)},
    )
    pipe.hset(
        f.key(db, "hash:hashtable", "hash", "hashtable", 50 * 1000),
        mapping={f"field-{j}": rnd.randbytes(20).hex() for j in range(1000)},
    )
    pipe.hset(
        f.key(db, b"hash:\xc3\x28binary", "hash", "hashtable", 2 * 80 * 200),
        mapping={rnd.randbytes(80): rnd.randbytes(80) for _ in range(200)},
    )
    pipe.hset(f.key(db, "hash:long-value", "hash", "hashtable", 100), "short", "1")
    pipe.hset("hash:long-value", "long", "x" * 100)  # over hash-max-listpack-value (64)
    pipe.execute()
    if feats.field_ttls:
        _field_ttls(f, c, db, feats)
    # streams
    _streams(f, c, db)
    # TTLs
    for i in range(50):
        pipe.set(f.key(db, f"ttl:far:{i}", "string", "", 10), f"far-{i}", ex=TEN_YEARS - i)
        pipe.set(
            f.key(db, f"ttl:hours:{i}", "string", "", 10), f"hours-{i}", px=3_600_000 * (i + 1) + i
        )
    pipe.hset(f.key(db, "ttl:hash", "hash", "listpack", 10), mapping={"a": "1", "b": "2"})
    pipe.pexpire("ttl:hash", 7_200_000)
    pipe.sadd(f.key(db, "ttl:set", "set", "intset", 24), 1, 2, 3)
    pipe.expireat("ttl:set", 4_000_000_000)
    pipe.execute()


def _field_ttls(f: _Filler, c: redis.Redis, db: int, feats: Features) -> None:
    rnd = f.rnd
    small = f.key(db, "hash:fttl:small", "hash", "", 100)
    c.hset(small, mapping={f"f{j}": f"v{j}" for j in range(10)})
    c.execute_command("HEXPIRE", small, TEN_YEARS, "FIELDS", 3, "f0", "f1", "f2")
    c.execute_command("HPEXPIRE", small, 5_400_000, "FIELDS", 1, "f3")
    big = f.key(db, "hash:fttl:big", "hash", "hashtable", 600 * 40)
    c.hset(big, mapping={f"field-{j}": rnd.randbytes(16).hex() for j in range(600)})
    fields = [f"field-{j}" for j in range(0, 600, 7)]
    c.execute_command("HEXPIRE", big, TEN_YEARS, "FIELDS", len(fields), *fields)
    c.expire(big, TEN_YEARS + 10)
    f.written.field_ttls += [(db, small), (db, big)]
    if feats.hsetex:
        setex = f.key(db, "hash:fttl:hsetex", "hash", "", 60)
        c.execute_command("HSETEX", setex, "PX", 86_400_000, "FIELDS", 2, "a", "1", "b", "2")
        c.hset(setex, "persistent", "3")
        f.written.field_ttls.append((db, setex))


def _streams(f: _Filler, c: redis.Redis, db: int) -> None:
    rnd = f.rnd
    key = f.key(db, "stream:groups", "stream", "stream", 80 * 300)
    pipe = c.pipeline(transaction=False)
    for j in range(300):
        pipe.xadd(key, {"n": str(j), "payload": rnd.randbytes(20).hex()}, id=f"{1000 + j}-{j % 3}")
    pipe.execute()
    c.xdel(key, "1004-1", "1005-2", "1100-1", "1299-2")  # 1299-2: the last one
    c.xgroup_create(key, "workers", id="0")
    c.xreadgroup("workers", "alice", {key: ">"}, count=40)
    c.xreadgroup("workers", "bob", {key: ">"}, count=25)
    c.xack(key, "workers", "1000-0", "1001-1", "1002-2")
    c.execute_command("XGROUP", "CREATECONSUMER", key, "workers", "carol")  # no pending
    c.xgroup_create(key, "idle", id="$")
    c.xgroup_create(key, "replay", id="1050-2")
    c.xreadgroup("replay", "dave", {key: ">"}, count=5)
    big = f.key(db, "stream:big", "stream", "stream", 2000 * 30)
    pipe = c.pipeline(transaction=False)
    for j in range(2000):
        pipe.xadd(big, {"a": j, "b": rnd.randbytes(8).hex()})
    pipe.execute()
    emptied = f.key(db, "stream:emptied", "stream", "stream", 10)
    c.xadd(emptied, {"x": "1"}, id="5-5")
    c.xdel(emptied, "5-5")
    c.xgroup_create(emptied, "g", id="$")


def _small_mix(f: _Filler, c: redis.Redis, db: int, n: int) -> None:
    rnd = f.rnd
    pipe = c.pipeline(transaction=False)
    for i in range(n):
        value = rnd.randbytes(12).hex()
        pipe.set(f.key(db, f"db{db}:s:{i}", "string", "embstr", len(value)), value)
    pipe.hset(f.key(db, f"db{db}:hash", "hash", "listpack", 20), mapping={"a": "1", "b": "2"})
    pipe.rpush(f.key(db, f"db{db}:list", "list", "", 3), "x", "y", "z")
    pipe.expire(f"db{db}:list", TEN_YEARS)
    pipe.zadd(f.key(db, f"db{db}:zset", "zset", "listpack", 20), {"a": 1, "b": 2.5})
    pipe.sadd(f.key(db, f"db{db}:set", "set", "intset", 16), 1, 2)
    pipe.xadd(f.key(db, f"db{db}:stream", "stream", "stream", 10), {"k": "v"})
    pipe.execute()


def _expiring(f: _Filler, c: redis.Redis, db: int, expiring_ms: int) -> None:
    pipe = c.pipeline(transaction=False)
    for name, kind in ((f"soon:{db}:string", "string"), (f"soon:{db}:hash", "hash"),
                       (f"soon:{db}:list", "list")):  # fmt: skip
        key = f.key(db, name, kind, "", 5)
        if kind == "string":
            pipe.set(key, "going", px=expiring_ms)
        elif kind == "hash":
            pipe.hset(key, "f", "going")
            pipe.pexpire(key, expiring_ms)
        else:
            pipe.rpush(key, "going")
            pipe.pexpire(key, expiring_ms)
        f.written.expiring.append((db, key))
    pipe.execute()


# -- size ---------------------------------------------------------------------------------


class _Values:
    """Distinct values of ``size`` bytes: half words of a random vocabulary joined
    by spaces, half random bytes: nothing repeats across values, and zstd -1
    shrinks a snapshot of them by about a fifth."""

    def __init__(self, rnd: random.Random, size: int) -> None:
        self.rnd = rnd
        self.size = size
        self.words = [rnd.randbytes(rnd.randint(2, 6)).hex().encode() for _ in range(4000)]

    def __call__(self, i: int) -> bytes:
        head = i.to_bytes(8, "little")
        if self.size <= 8:
            return head[: self.size]
        text = b" ".join(self.rnd.choices(self.words, k=max(1, self.size // 16)))
        text = text[: (self.size - 8) // 2]
        return head + text + self.rnd.randbytes(self.size - 8 - len(text))


def fill_bulk(
    client: redis.Redis,
    keys: int,
    value_bytes: int,
    *,
    seed: int = 2,
    db: int = 0,
    prefix: str = "bulk:",
    batch_bytes: int = 4 << 20,
) -> Written:
    """``keys`` strings of ``value_bytes`` each (``<prefix><n>``), pipelined in
    batches of about ``batch_bytes``. Values are distinct, partly compressible."""
    rnd = random.Random(seed)
    written = Written()
    per_batch = max(1, batch_bytes // max(1, value_bytes))
    value = _Values(rnd, value_bytes)
    with on_db(client, db) as c:
        for start in range(0, keys, per_batch):
            pipe = c.pipeline(transaction=False)
            for i in range(start, min(keys, start + per_batch)):
                pipe.set(f"{prefix}{i}".encode(), value(i))
            pipe.execute()
    written.add(db, "string", keys)
    written.size = keys * value_bytes
    return written


def fill_big_hash(
    client: redis.Redis,
    size_bytes: int,
    *,
    key: str = "big:hash",
    field_value_bytes: int = 1024,
    seed: int = 3,
    db: int = 0,
    batch_bytes: int = 4 << 20,
) -> Written:
    """One hash of about ``size_bytes`` (fields of ``field_value_bytes``), written
    in HSETs of about ``batch_bytes`` each (bounded memory on both sides)."""
    rnd = random.Random(seed)
    fields = max(1, size_bytes // field_value_bytes)
    per_batch = max(1, batch_bytes // field_value_bytes)
    value = _Values(rnd, field_value_bytes)
    with on_db(client, db) as c:
        for start in range(0, fields, per_batch):
            mapping = {
                f"field:{i}".encode(): value(i)
                for i in range(start, min(fields, start + per_batch))
            }
            c.hset(key, mapping=mapping)  # type: ignore[arg-type]
    written = Written()
    written.add(db, "hash")
    written.size = fields * field_value_bytes
    return written


BIG_TYPES = ("string", "list", "set", "zset", "hash", "stream")


def fill_big_values(
    client: redis.Redis,
    size_bytes: int,
    *,
    types: Iterable[str] = BIG_TYPES,
    seed: int = 4,
    db: int = 0,
    prefix: str = "big:",
    element_bytes: int = 1024,
    batch_bytes: int = 2 << 20,
) -> Written:
    """One value of about ``size_bytes`` per type in ``types`` (``<prefix><type>``),
    each built in commands of about ``batch_bytes``; the stream also gets a
    consumer group with pending entries. Scores are short exact decimals."""
    rnd = random.Random(seed)
    n = max(1, size_bytes // element_bytes)
    per_batch = max(1, batch_bytes // element_bytes)
    element = _Values(rnd, element_bytes)

    written = Written()
    with on_db(client, db) as c:
        for kind in types:
            key = f"{prefix}{kind}".encode()
            for start in range(0, n, per_batch):
                batch = [element(i) for i in range(start, min(n, start + per_batch))]
                if kind == "string":
                    c.append(key, b"".join(batch))
                elif kind == "list":
                    c.rpush(key, *batch)
                elif kind == "set":
                    c.sadd(key, *batch)
                elif kind == "zset":
                    c.zadd(key, {e: (start + j) / 64 for j, e in enumerate(batch)})
                elif kind == "hash":
                    c.hset(key, mapping={e[:16]: e for e in batch})
                elif kind == "stream":
                    pipe = c.pipeline(transaction=False)
                    for e in batch:
                        pipe.xadd(key, {b"v": e})
                    pipe.execute()
                else:
                    raise ValueError(f"unknown type {kind!r}; one of {', '.join(BIG_TYPES)}")
            if kind == "stream":
                c.xgroup_create(key, "g", id="0")
                c.xreadgroup("g", "c1", {key: ">"}, count=500)
            written.add(db, kind)
            written.encodings.add(f"{kind}:{c.object('ENCODING', key).decode()}")
            written.size += n * element_bytes
    return written


# -- comparing ----------------------------------------------------------------------------


def exact_scores_of(client: redis.Redis, keys: Iterable[tuple[int, bytes]]) -> dict[Any, Any]:
    """Each key's members and scores as Python floats (bit-exact: the servers
    print doubles so that they read back the same)."""
    out: dict[Any, Any] = {}
    for db, key in keys:
        with on_db(client, db) as c:
            pairs = c.zrange(key, 0, -1, withscores=True)
        out[(db, key)] = [(m, float(s).hex()) for m, s in pairs]
    return out


__all__ = [
    "BIG_TYPES",
    "EXACT_SCORES",
    "LIBRARY",
    "LIBRARY_NAME",
    "Features",
    "Written",
    "exact_scores_of",
    "features",
    "fill_big_hash",
    "fill_big_values",
    "fill_bulk",
    "fill_full",
    "server_of",
]
