"""Passwords never leak, whatever characters they hold (issue 13, finding 5).

Every supported way of giving a password (in a ``redis://`` or
``rediss://`` URL, raw or percent-encoded, with or without a user; a
``--sentinel`` URL; a ``--to-redis`` / ``--to-cluster`` URL;
``--password-file``; ``REDIS_PASSWORD``) meets every error a user can cause
before or while connecting (bad port, bad db, unknown option, ssl option
without TLS, no host, connection refused). What the user sees -- stderr,
stdout (``--json``) and the termination log -- must hold no 4+ character
piece of the password (raw or encoded) that the same command does not print
anyway when given a harmless password: the password changes nothing shown.

Before this change ``redis://:S3cr3t/PW@host`` printed the whole password
(a ``/`` ends the netloc, so urlsplit read ``S3cr3t`` as a port), and ``#``
or ``?`` leaked its first part.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as hs
from typer.testing import CliRunner

from backupctl.cli.app import app
from backupctl.redis.address import parse_redis_url
from backupctl.redis.errors import RedisNodeError

#: What comes after the userinfo: each one a different user error (or a
#: refused connection on 127.0.0.1:1, where nothing listens).
TAILS = [
    "127.0.0.1:1",  # connection refused
    "127.0.0.1:x",  # port not a number
    "127.0.0.1:99999",  # port out of range
    "127.0.0.1:1/zz",  # db not a number
    "127.0.0.1:1/0?nosuch=1",  # unknown option
    "127.0.0.1:1?ssl_cert_reqs=none",  # ssl option without rediss://
    ":1",  # no host
    "[::1:1",  # broken IPv6 literal
]
#: (scheme, user) forms of a URL carrying the password.
FORMS = [("redis", ""), ("redis", "alice"), ("rediss", "bob")]
#: Passwords: anything a shell argument can hold (no NUL), with the URL
#: delimiters made likely.
PASSWORDS = hs.text(
    alphabet=hs.one_of(
        hs.sampled_from("/#?@%:[] &=+~\\'\"\t"),
        hs.characters(codec="utf-8", exclude_characters="\x00"),
    ),
    min_size=1,
    max_size=24,
)
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
NEUTRAL = "Neutral0Word"


def _invoke(args: list[str], tmp: Path, env: dict[str, str]) -> str:
    """Everything a user sees of ``backupctl ARGS``: stderr, stdout, termination log."""
    log = tmp / "termination-log"
    log.unlink(missing_ok=True)
    runner = CliRunner()
    with _no_env_passwords():
        result = runner.invoke(
            app, [*args, "--termination-log", str(log)], env=env, catch_exceptions=False
        )
    assert result.exit_code in (2, 3, 4, 5), (args, result.output)  # usage, Redis, store, missing
    shown = result.stderr + result.stdout
    assert "error: " in result.stderr
    if log.exists():
        shown += log.read_text(encoding="utf-8", errors="replace")
    return shown


#: What a command shows with the neutral password, by (args, folder, env): the same
#: for every example of a test, so each is run once, not once per example.
_neutral_shown: dict[tuple[tuple[str, ...], Path, tuple[tuple[str, str], ...]], str] = {}


def _invoke_neutral(args: list[str], tmp: Path, env: dict[str, str]) -> str:
    key = (tuple(args), tmp, tuple(sorted(env.items())))
    if key not in _neutral_shown:
        _neutral_shown[key] = _invoke(args, tmp, env)
    return _neutral_shown[key]


@contextmanager
def _no_env_passwords() -> Iterator[None]:
    saved = {k: os.environ.pop(k) for k in list(os.environ) if "PASSWORD" in k}
    try:
        yield
    finally:
        os.environ.update(saved)


def _pieces(password: str) -> set[str]:
    """Every 4+ character piece of the password, raw and percent-encoded."""
    out = set()
    for text in {password, quote(password, safe=""), password.strip()}:
        for i in range(len(text)):
            for j in range(i + 4, len(text) + 1):
                out.add(text[i:j])
    return out


def _assert_no_leak(password: str, shown: str, neutral_shown: str) -> None:
    for piece in _pieces(password):
        if piece in shown:
            assert piece in neutral_shown, f"password piece {piece!r} leaked: {shown!r}"


def _commands(url: str, store: Path) -> list[list[str]]:
    """The commands that take a Redis URL, each given ``url``."""
    return [
        ["run", "--redis", url, "--to", str(store), "--json"],
        ["run", "--sentinel", url, "--master-name", "m", "--to", str(store)],
        ["check-redis", "--redis", url, "--json"],
        ["restore", str(store), "latest", "--to-redis", url, "--json"],
        ["restore", str(store), "latest", "--to-cluster", url],
    ]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path: Path = tmp_path_factory.mktemp("store")
    return path


@SETTINGS
@given(password=PASSWORDS, form=hs.sampled_from(FORMS), tail=hs.sampled_from(TAILS))
@example(password="S3cr3t/PW", form=("redis", ""), tail="127.0.0.1:6379")
@example(password="S3cr3t/PW", form=("redis", ""), tail="127.0.0.1:x")
@example(password="abcd#efgh", form=("redis", ""), tail="127.0.0.1:1")
@example(password="abcd?efgh", form=("redis", "u"), tail="127.0.0.1:99999")
@example(password="ab@cd@efgh", form=("rediss", "u"), tail="127.0.0.1:1/zz")
@example(password="päss wörd%", form=("redis", ""), tail="[::1:1")
def test_password_in_a_url_never_shown(
    password: str, form: tuple[str, str], tail: str, store: Path, tmp_path: Path
) -> None:
    scheme, user = form
    if tail == "127.0.0.1:6379":
        tail = "127.0.0.1:1"  # (the issue's example, on a port where nothing listens)
    for encoded in (password, quote(password, safe="")):
        url = f"{scheme}://{user}:{encoded}@{tail}"
        neutral = f"{scheme}://{user}:{NEUTRAL}@{tail}"
        for args, neutral_args in zip(
            _commands(url, store), _commands(neutral, store), strict=True
        ):
            _assert_no_leak(
                password, _invoke(args, tmp_path, {}), _invoke_neutral(neutral_args, tmp_path, {})
            )


@SETTINGS
@given(password=PASSWORDS, tail=hs.sampled_from(TAILS[:2]))
def test_password_from_file_or_environment_never_shown(
    password: str, tail: str, store: Path, tmp_path: Path
) -> None:
    pw_file = tmp_path / "pw"
    pw_file.write_text(password + "\n", encoding="utf-8")
    neutral_file = tmp_path / "neutral"
    neutral_file.write_text(NEUTRAL, encoding="utf-8")
    url = f"redis://{tail}"
    for flag, file in (("--password-file", pw_file), ("--sentinel-password-file", pw_file)):
        neutral = neutral_file if file == pw_file else file
        base = ["run", "--redis", url, "--to", str(store)]
        if flag == "--sentinel-password-file":
            base = ["run", "--sentinel", url, "--master-name", "m", "--to", str(store)]
        _assert_no_leak(
            password,
            _invoke([*base, flag, str(file)], tmp_path, {}),
            _invoke_neutral([*base, flag, str(neutral)], tmp_path, {}),
        )
    for var in ("REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD"):
        base = ["run", "--redis", url, "--to", str(store)]
        if var == "REDIS_SENTINEL_PASSWORD":
            base = ["run", "--sentinel", url, "--master-name", "m", "--to", str(store)]
        _assert_no_leak(
            password,
            _invoke(base, tmp_path, {var: password}),
            _invoke_neutral(base, tmp_path, {var: NEUTRAL}),
        )


def test_the_issue_example_is_one_clear_line_without_the_password() -> None:
    """``redis://:S3cr3t/PW@host:6379`` parses: the password is ``S3cr3t/PW``."""
    spec = parse_redis_url("redis://:S3cr3t/PW@db.example:6379/2", env={})
    assert (spec.host, spec.port, spec.db, spec.password) == ("db.example", 6379, 2, "S3cr3t/PW")
    with pytest.raises(RedisNodeError) as err:
        parse_redis_url("redis://:S3cr3t/PW@db.example:x", env={})
    assert "S3cr3t" not in str(err.value)
    assert "redis://:***@db.example:x" in str(err.value)


@pytest.mark.parametrize(
    ("url", "password", "user"),
    [
        ("redis://:a#b?c/d@h:1", "a#b?c/d", None),
        ("redis://u:p@ss@h:1", "p@ss", "u"),
        ("redis://u:p%40ss%2F@h:1", "p@ss/", "u"),
        ("redis://u:p:a:ss@h:1", "p:a:ss", "u"),
        ("rediss://u:sp ace@h:1", "sp ace", "u"),
        ("redis://just-user@h:1", None, "just-user"),
    ],
)
def test_userinfo_runs_to_the_last_at(url: str, password: str | None, user: str | None) -> None:
    spec = parse_redis_url(url, env={})
    assert (spec.host, spec.port, spec.password, spec.username) == ("h", 1, password, user)


@pytest.mark.parametrize(
    "url",
    ["redis//:hunter22@h:1", "http://:hunter22@h:1", ":hunter22@h:1", "hunter22"],
)
def test_a_url_without_a_redis_scheme_is_not_echoed(url: str) -> None:
    with pytest.raises(RedisNodeError) as err:
        parse_redis_url(url, env={})
    assert "hunter22" not in str(err.value)
    assert "redis://" in str(err.value)  # says what is expected


def test_an_undecodable_password_file_is_one_line_without_its_bytes(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_bytes(b"hunter22\xff\xfehunter33")
    with pytest.raises(RedisNodeError, match="not UTF-8") as err:
        parse_redis_url("redis://h:1", password_file=str(pw), env={})
    assert "hunter" not in str(err.value)


def test_sentinel_url_without_port_defaults_to_26379_whatever_the_password() -> None:
    from backupctl.redis.sentinel import sentinel_specs

    (spec,) = sentinel_specs(["redis://:pa/ss:1@s1"], env={})
    assert (spec.host, spec.port, spec.password) == ("s1", 26379, "pa/ss:1")
