"""Defaults for the store, the target and the endpoint, so a shell (or a
Job) that always talks to one store need not repeat it, as restic's
``RESTIC_REPOSITORY``.

Precedence, highest first: a flag or argument on the command line, then the
environment (``BACKUPCTL_STORE``, ``BACKUPCTL_TARGET``, ``BACKUPCTL_ENDPOINT``),
then the config file (``BACKUPCTL_CONFIG``, else
``$XDG_CONFIG_HOME/backupctl/config.toml``, else
``~/.config/backupctl/config.toml``), a TOML file with top-level ``store``,
``target`` and ``endpoint`` strings. A missing default config file is no
error; a missing ``BACKUPCTL_CONFIG`` file, or a malformed one, is.

The transfer settings (docs/stores.md) follow the same precedence: a flag,
then ``BACKUPCTL_LIMIT_UPLOAD`` / ``BACKUPCTL_LIMIT_DOWNLOAD`` /
``BACKUPCTL_PART_SIZE`` / ``BACKUPCTL_CONCURRENCY`` (read by the options
themselves), then the file's ``limit-upload``, ``limit-download`` (KiB/s),
``part-size`` (a size string like ``"64MiB"``) and ``concurrency``, for the
commands that take them (:data:`TRANSFER_OPTIONS`).

The deciding functions here are pure (:func:`resolve`, :func:`parse_config`,
:func:`split_store`, :func:`default_map`); :func:`current` reads the process
environment and the file, at the edge.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backupctl.cli.restore_modes import FlagError, parse_size
from backupctl.store.backends.transfer import MAX_CONCURRENCY
from backupctl.store.catalog import ID_PATTERN

ENV_STORE = "BACKUPCTL_STORE"
ENV_TARGET = "BACKUPCTL_TARGET"
ENV_ENDPOINT = "BACKUPCTL_ENDPOINT"
ENV_CONFIG = "BACKUPCTL_CONFIG"
_KEYS = {"store", "target", "endpoint"}
#: The config file's transfer keys and the parameter each sets.
TRANSFER_KEYS = {
    "limit-upload": "limit_upload",
    "limit-download": "limit_download",
    "part-size": "part_size",
    "concurrency": "concurrency",
}
#: Which commands take which transfer settings (their parameter names).
TRANSFER_OPTIONS = {
    "run": ("limit_upload", "part_size", "concurrency"),
    "copy": ("limit_upload", "limit_download", "part_size", "concurrency"),
    "restore": ("limit_download",),
    "verify": ("limit_download",),
    "check": ("limit_download",),
}


class ConfigError(Exception):
    """A config file or default that cannot be used. ``str()`` is one line."""


@dataclass(frozen=True)
class Defaults:
    store: str | None = None
    target: str | None = None
    endpoint: str | None = None
    #: the config file's transfer settings, by parameter name (TRANSFER_KEYS)
    transfer: tuple[tuple[str, Any], ...] = ()


def config_path(env: Mapping[str, str]) -> tuple[Path, bool]:
    """The config file and whether it was asked for explicitly (pure)."""
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG]), True
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")) / ".config")
    return Path(base) / "backupctl" / "config.toml", False


def parse_config(text: str, where: str) -> Defaults:
    """A config file's text as :class:`Defaults` (pure); :class:`ConfigError` names
    the file and what to fix."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {where} is not valid TOML: {e}") from None
    unknown = sorted(set(data) - _KEYS - set(TRANSFER_KEYS))
    if unknown:
        known = ", ".join(sorted(_KEYS | set(TRANSFER_KEYS)))
        raise ConfigError(f"config file {where}: unknown key {unknown[0]!r} (known: {known})")
    for key in _KEYS & set(data):
        if not isinstance(data[key], str) or not data[key].strip():
            raise ConfigError(f"config file {where}: {key!r} must be a non-empty string")
    transfer = []
    for key, param in TRANSFER_KEYS.items():
        if key not in data:
            continue
        problem = _transfer_problem(key, data[key])
        if problem:
            raise ConfigError(f"config file {where}: {key!r} must be {problem}")
        transfer.append((param, data[key]))
    return Defaults(data.get("store"), data.get("target"), data.get("endpoint"), tuple(transfer))


def _transfer_problem(key: str, value: object) -> str | None:
    """What a transfer setting of the config file must be, when it is not (pure)."""
    if key == "part-size":
        try:
            parse_size(value if isinstance(value, str) else "", "part-size")
        except FlagError:
            return 'a size string like "64MiB"'
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "a number"
    if key == "concurrency" and not (isinstance(value, int) and 1 <= value <= MAX_CONCURRENCY):
        return f"a whole number from 1 to {MAX_CONCURRENCY}"
    if value < 1:
        return "at least 1 (KiB/s)"
    return None


def resolve(env: Mapping[str, str], file: Defaults) -> Defaults:
    """The environment over the file (pure); empty variables count as unset."""
    return Defaults(
        store=env.get(ENV_STORE) or file.store,
        target=env.get(ENV_TARGET) or file.target,
        endpoint=env.get(ENV_ENDPOINT) or file.endpoint,
        transfer=file.transfer,  # their variables are read by the options (click)
    )


def read_config(env: Mapping[str, str]) -> Defaults:
    """The config file's defaults (none when the default file does not exist)."""
    path, explicit = config_path(env)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(
                f"config file {path} (from {ENV_CONFIG}) does not exist; create it or unset "
                f"{ENV_CONFIG}"
            ) from None
        return Defaults()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    return parse_config(text, str(path))


def current(env: Mapping[str, str] | None = None) -> Defaults:
    """The defaults in effect: environment over config file."""
    env = os.environ if env is None else env
    return resolve(env, read_config(env))


def is_backup_ref(arg: str) -> bool:
    """Whether a positional argument is a backup id (or ``latest``) rather than a store."""
    return arg == "latest" or ID_PATTERN.match(arg) is not None


def split_store(
    args: Sequence[str], default: str | None, *, stores: int = 1
) -> tuple[list[str], list[str]]:
    """``[STORE...] [ID...]`` into (stores, ids) (pure). The leading arguments
    that are not backup ids are stores; when fewer than ``stores`` are given,
    ``default`` (``BACKUPCTL_STORE`` or the config file) is the first one.
    :class:`ConfigError` when a store is missing or one too many is given."""
    given = []
    for a in args:
        if is_backup_ref(a):
            break
        given.append(a)
    ids = list(args[len(given) :])
    if len(given) > stores:
        raise ConfigError(
            f"{given[stores]!r} is not a backup id (backup-YYYYMMDD-HHMMSS or 'latest'): "
            "see 'backupctl list'"
        )
    if len(given) < stores:
        if default is None:
            raise ConfigError(
                f"no store given: pass it as the first argument, or set {ENV_STORE} "
                "(or 'store' in the config file)"
            )
        given.insert(0, default)
    return given, ids


def default_map(d: Defaults) -> dict[str, Any]:
    """Click's ``default_map`` for the commands that take the store as their
    only positional argument (``list``, ``prune``), so they read the defaults
    too, and the file's transfer settings for the commands that take them
    (pure); click uses it only for what the command line and the options'
    variables leave unset."""
    values: dict[str, Any] = {}
    if d.store:
        values["store_url"] = d.store
    if d.target:
        values["target"] = d.target
    if d.endpoint:
        values["endpoint"] = d.endpoint
    out: dict[str, dict[str, Any]] = {}
    if values:
        rest = {k: v for k, v in values.items() if k != "store_url"}
        out = {"list": values, "prune": dict(values), "verify": rest, "restore": dict(rest)}
    for command, params in TRANSFER_OPTIONS.items():
        given = {k: v for k, v in d.transfer if k in params}
        if given:
            out[command] = {**out.get(command, {}), **given}
    return out


#: Commands whose positional arguments are ``STORE ID``: with a default
#: store, ``backupctl verify latest`` means ``backupctl verify $BACKUPCTL_STORE latest``.
STORE_THEN_ID = ("verify", "restore")


def insert_store(args: Sequence[str], value_options: set[str], store: str | None) -> list[str]:
    """``args`` (``sys.argv[1:]``) with ``store`` put before the first
    positional argument of ``verify``/``restore`` when that argument is a
    backup id, i.e. the store was left out (pure). ``value_options``: the
    command's options that take a value (so their values are not taken for
    positionals)."""
    out = list(args)
    if store is None or not out or out[0] not in STORE_THEN_ID:
        return out
    i = 1
    while i < len(out):
        tok = out[i]
        if tok == "--":
            i += 1
            break
        if tok.startswith("-") and tok != "-":
            i += 1 if "=" in tok or tok not in value_options else 2
            continue
        break
    if i < len(out) and is_backup_ref(out[i]):
        out.insert(i, store)
    return out


@dataclass(frozen=True)
class Resolved:
    """A command's store(s), ids, target and endpoint after the defaults."""

    stores: list[str]
    ids: list[str]
    target: str | None
    endpoint: str | None


def resolve_args(
    args: Sequence[str],
    *,
    target: str | None,
    endpoint: str | None,
    stores: int = 1,
    env: Mapping[str, str] | None = None,
) -> Resolved:
    """The positional ``[STORE...] [ID...]`` and ``--target``/``--endpoint``
    with the defaults applied; a usage error (exit 2) when a store is missing."""
    import typer

    try:
        d = current(env)
        found, ids = split_store(args, d.store, stores=stores)
    except ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="'[STORE]'") from None
    return Resolved(found, ids, target or d.target, endpoint or d.endpoint)


def for_main(
    argv: Sequence[str], value_options: Mapping[str, set[str]]
) -> tuple[list[str], dict[str, Any]]:
    """The arguments and click ``default_map`` ``main()`` runs the app with
    (the current defaults applied); a broken config file is one ``error:``
    line and exit 2 (usage). ``value_options``: per command, its options that
    take a value."""
    try:
        d = current()
    except ConfigError as e:
        import sys

        sys.stderr.write(f"error: {e}\n")
        raise SystemExit(2) from None
    command = argv[0] if argv else ""
    return insert_store(argv, value_options.get(command, set()), d.store), default_map(d)
