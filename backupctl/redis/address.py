"""Where a Redis node is and how to log in: :class:`ConnectionSpec` and the
``redis://`` URL parser.

Why a module of its own: the address, credentials and TLS options of a node
are plain data that the CLI, the Sentinel lookup and the cluster discovery
build and copy (``dataclasses.replace`` with another host), and the password
precedence (flag, file, URL, environment) is a rule worth reading in one
place. Nothing here talks to a server, so nothing here imports redis-py.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from backupctl.redis.errors import RedisNodeError

__all__ = ["URL_EXAMPLE", "ConnectionSpec", "default_node_name", "parse_redis_url"]

URL_EXAMPLE = "redis://[user:pass@]host:port[/db] (or rediss:// for TLS)"


@dataclass(frozen=True)
class ConnectionSpec:
    """Address, credentials and TLS options of one Redis node.

    The password never appears in ``repr()``/``str()``; use :attr:`display`
    in messages.
    """

    host: str
    port: int = 6379
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    tls_ca_certs: str | None = None  # ?ssl_ca_certs=/path/ca.pem
    tls_insecure: bool = False  # ?ssl_cert_reqs=none: no certificate verification
    tls_certfile: str | None = None  # ?ssl_certfile= (client certificate, mutual TLS)
    tls_keyfile: str | None = None  # ?ssl_keyfile=
    tls_check_hostname: bool = True  # ?ssl_check_hostname=false
    db: int = 0

    def __post_init__(self) -> None:
        if not self.host:
            raise RedisNodeError(f"a Redis address needs a host: {URL_EXAMPLE}", reason="input")
        if not 0 < self.port < 65536:
            raise RedisNodeError(
                f"Redis port {self.port} is out of range (1-65535)", reason="input"
            )

    @property
    def display(self) -> str:
        """``host:port`` (``[v6addr]:port``), safe for messages and logs."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.display}/{self.db}"

    def ssl_context(self) -> ssl.SSLContext:
        """The client-side TLS context these options describe."""
        ctx = ssl.create_default_context(cafile=self.tls_ca_certs)
        if self.tls_insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx.check_hostname = self.tls_check_hostname
        if self.tls_certfile:
            ctx.load_cert_chain(self.tls_certfile, self.tls_keyfile)
        return ctx


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_TLS_QUERY = {"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname"}


def default_node_name(spec: ConnectionSpec) -> str:
    """``host-port`` with anything but ``[A-Za-z0-9._-]`` replaced: the
    default archive name and target folder of a node."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", f"{spec.host}-{spec.port}")


@dataclass(frozen=True)
class _SplitUrl:
    """A URL cut into its secret part (the userinfo) and the rest, which
    holds no secret and may be quoted in messages."""

    scheme: str
    userinfo: str | None  # everything before the last "@", or None
    rest: str  # host[:port][/db][?options]

    @property
    def shown(self) -> str:
        """The URL for messages: a password (or a userinfo that may be one) as ``***``."""
        if self.userinfo is None:
            return f"{self.scheme}://{self.rest}"
        user, colon, _ = self.userinfo.partition(":")
        who = f"{user}:***" if colon and _plain(user) else "***"
        return f"{self.scheme}://{who}@{self.rest}"


def _plain(text: str) -> bool:
    """A user name safe to show: short, printable ASCII, no URL delimiters."""
    return (
        len(text) <= 64
        and all(c.isascii() and c.isprintable() for c in text)
        and not any(c in text for c in "/?#[]@ ")
    )


def _split_url(url: str) -> _SplitUrl:
    """Cut ``scheme://[userinfo@]rest`` without parsing the userinfo: a password
    may hold any character (``/ # ? @ %``, spaces, unicode) that a URL parser
    would take for a delimiter, and so leak its start as a host or port.

    The userinfo runs to the LAST ``@`` (so an ``@`` in a query value must be
    written ``%40``). Never echoes the URL: when even the scheme cannot be
    found, the message says what is wrong without quoting anything."""
    scheme, sep, after = url.partition("://")
    if not sep:
        raise RedisNodeError(
            f"invalid Redis URL (not shown, it may hold a password): it does not start with "
            f"redis:// or rediss://; expected {URL_EXAMPLE}",
            reason="input",
        )
    if scheme not in ("redis", "rediss"):
        name = scheme if scheme.isascii() and scheme.isalnum() and len(scheme) <= 16 else "?"
        raise RedisNodeError(
            f"invalid Redis URL (not shown, it may hold a password): unsupported scheme "
            f"{name}://; expected {URL_EXAMPLE}",
            reason="input",
        )
    userinfo, at, rest = after.rpartition("@")
    return _SplitUrl(scheme, userinfo if at else None, rest)


def _read_password_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            value = fh.read()
    except OSError as exc:
        raise RedisNodeError(
            f"cannot read password file {path}: {exc.strerror or exc}", reason="input"
        ) from None
    except UnicodeDecodeError:  # the message would quote the bytes around the bad one
        raise RedisNodeError(
            f"password file {path} is not UTF-8 text: write the password as UTF-8",
            reason="input",
        ) from None
    value = value.rstrip("\r\n")
    if not value:
        raise RedisNodeError(f"password file {path} is empty", reason="input")
    return value


def parse_redis_url(
    url: str,
    *,
    password: str | None = None,
    password_file: str | None = None,
    username: str | None = None,
    env: Mapping[str, str] = os.environ,
    default_port: int = 6379,
) -> ConnectionSpec:
    """Parse ``redis://[user:pass@]host:port[/db][?options]`` (``rediss://`` = TLS).

    The password may hold any character; it is never shown in an error
    (see :func:`_split_url`). ``default_port`` is the port when the URL
    names none.

    Password precedence: ``password`` > ``password_file`` (trailing newline
    stripped) > password in the URL > ``$REDIS_PASSWORD``. Username: explicit
    ``username`` > URL > ``$REDIS_USERNAME``. Empty values count as unset.

    Query options: ``db``, and for rediss:// ``ssl_cert_reqs=none|required``,
    ``ssl_ca_certs=PATH``, ``ssl_certfile=PATH``, ``ssl_keyfile=PATH``,
    ``ssl_check_hostname=true|false``.
    """
    split = _split_url(url.strip())
    shown = split.shown

    def bad(why: str) -> RedisNodeError:
        return RedisNodeError(
            f"invalid Redis URL {shown!r}: {why}; expected {URL_EXAMPLE}", reason="input"
        )

    try:  # only the part after the userinfo: it holds no secret
        parts = urlsplit(f"{split.scheme}://{split.rest}")
        port = parts.port
    except ValueError as exc:
        raise bad(str(exc)) from None
    if "@" in parts.netloc:  # cannot happen: rest is after the last "@"
        raise bad("an @ after the host")  # pragma: no cover
    host = parts.hostname
    if not host:
        raise bad("no host")
    db = 0
    path = parts.path.strip("/")
    if path:
        if not path.isdigit():
            raise bad(f"the path must be a database number, not {path!r}")
        db = int(path)
    tls = parts.scheme == "rediss"
    opts: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key != "db" and key not in _TLS_QUERY:
            known = ", ".join(sorted({"db", *_TLS_QUERY}))
            raise bad(f"unknown option {key!r} (known: {known})")
        opts[key] = value
    if "db" in opts:
        if not opts["db"].isdigit():
            raise bad("db must be a number")
        db = int(opts["db"])
    if not tls and _TLS_QUERY & opts.keys():
        raise bad("ssl_* options need the rediss:// scheme")
    insecure = False
    if "ssl_cert_reqs" in opts:
        reqs = opts["ssl_cert_reqs"].lower()
        if reqs in ("none", "cert_none"):
            insecure = True
        elif reqs not in ("required", "cert_required", "optional", "cert_optional"):
            raise bad("ssl_cert_reqs must be none or required")
    check_hostname = True
    if "ssl_check_hostname" in opts:
        flag = opts["ssl_check_hostname"].lower()
        if flag not in _TRUE | _FALSE:
            raise bad("ssl_check_hostname must be true or false")
        check_hostname = flag in _TRUE

    url_user, colon, url_password = (split.userinfo or "").partition(":")
    if password:
        secret: str | None = password
    elif password_file:
        secret = _read_password_file(password_file)
    elif colon and url_password:
        secret = unquote(url_password)
    else:
        secret = env.get("REDIS_PASSWORD") or None
    user = username or (unquote(url_user) if url_user else None)
    user = user or env.get("REDIS_USERNAME") or None

    return ConnectionSpec(
        host=host,
        port=port if port is not None else default_port,
        username=user,
        password=secret,
        tls=tls,
        tls_ca_certs=opts.get("ssl_ca_certs") or None,
        tls_insecure=insecure,
        tls_certfile=opts.get("ssl_certfile") or None,
        tls_keyfile=opts.get("ssl_keyfile") or None,
        tls_check_hostname=check_hostname,
        db=db,
    )
