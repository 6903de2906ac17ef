"""Defaults for the store, target and endpoint: flag > environment > config
file (backupctl/cli/defaults.py). Table tests of the pure pieces, then the
real CLI showing the precedence a user sees."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backupctl.cli.defaults import (
    ConfigError,
    Defaults,
    config_path,
    default_map,
    insert_store,
    parse_config,
    resolve,
    split_store,
)
from backupctl.store.backends import open_store

from support.cli_runner import cli
from support.fake_backups import add_backup

ID = "backup-20250101-020000"


@pytest.mark.parametrize(
    ("env", "file", "want"),
    [
        ({}, Defaults(), Defaults()),
        ({}, Defaults("/f", "t/f", "http://f"), Defaults("/f", "t/f", "http://f")),
        ({"BACKUPCTL_STORE": "/e"}, Defaults("/f", "t/f"), Defaults("/e", "t/f")),
        ({"BACKUPCTL_TARGET": "t/e"}, Defaults("/f", "t/f"), Defaults("/f", "t/e")),
        ({"BACKUPCTL_STORE": ""}, Defaults("/f"), Defaults("/f")),  # empty = unset
        (
            {"BACKUPCTL_ENDPOINT": "http://e"},
            Defaults(endpoint="http://f"),
            Defaults(endpoint="http://e"),
        ),
    ],
)
def test_environment_wins_over_the_file(
    env: dict[str, str], file: Defaults, want: Defaults
) -> None:
    assert resolve(env, file) == want


@pytest.mark.parametrize(
    ("env", "path", "explicit"),
    [
        ({"BACKUPCTL_CONFIG": "/etc/b.toml", "HOME": "/h"}, "/etc/b.toml", True),
        ({"XDG_CONFIG_HOME": "/x", "HOME": "/h"}, "/x/backupctl/config.toml", False),
        ({"HOME": "/h"}, "/h/.config/backupctl/config.toml", False),
    ],
)
def test_config_path(env: dict[str, str], path: str, explicit: bool) -> None:
    assert config_path(env) == (Path(path), explicit)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ('store = "s3://b/p"\ntarget = "ns/r"\n', Defaults("s3://b/p", "ns/r")),
        ("", Defaults()),
        ('store = "s3://b"\nstroe = "x"', "unknown key 'stroe'"),
        ("store = 3", "'store' must be a non-empty string"),
        ('store = ""', "'store' must be a non-empty string"),
        ("store = ", "not valid TOML"),
        (
            'part-size = "64MiB"\nconcurrency = 8\nlimit-upload = 512\nlimit-download = 1.5',
            Defaults(
                transfer=(
                    ("limit_upload", 512),
                    ("limit_download", 1.5),
                    ("part_size", "64MiB"),
                    ("concurrency", 8),
                )
            ),
        ),
        ('part-size = "lots"', "'part-size' must be a size string"),
        ("part-size = 64", "'part-size' must be a size string"),
        ("concurrency = 99", "'concurrency' must be a whole number from 1 to 32"),
        ("concurrency = 2.5", "'concurrency' must be a whole number"),
        ("limit-upload = 0", "'limit-upload' must be at least 1"),
        ('limit-download = "fast"', "'limit-download' must be a number"),
        ("limit-upload = true", "'limit-upload' must be a number"),
    ],
)
def test_parse_config(text: str, want: Defaults | str) -> None:
    if isinstance(want, Defaults):
        assert parse_config(text, "c.toml") == want
    else:
        with pytest.raises(ConfigError, match=want) as e:
            parse_config(text, "c.toml")
        assert "c.toml" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("args", "default", "stores", "want"),
    [
        (["/s", ID], None, 1, (["/s"], [ID])),
        ([ID], "/d", 1, (["/d"], [ID])),
        (["latest"], "/d", 1, (["/d"], ["latest"])),
        (["/s", ID, "backup-20250102-020000"], "/d", 1, (["/s"], [ID, "backup-20250102-020000"])),
        ([], "/d", 1, (["/d"], [])),
        (["/dst"], "/d", 2, (["/d", "/dst"], [])),
        (["/src", "/dst", ID], "/d", 2, (["/src", "/dst"], [ID])),
        ([ID], None, 1, "no store given"),
        (["/s", "oops", ID], None, 1, "'oops' is not a backup id"),
    ],
)
def test_split_store(
    args: list[str], default: str | None, stores: int, want: tuple[list[str], list[str]] | str
) -> None:
    if isinstance(want, str):
        with pytest.raises(ConfigError, match=want):
            split_store(args, default, stores=stores)
    else:
        assert split_store(args, default, stores=stores) == want


VALUE_OPTS = {"--target", "--tmp-dir", "--endpoint"}


@pytest.mark.parametrize(
    ("args", "store", "want"),
    [
        (["verify", ID], "/d", ["verify", "/d", ID]),
        (
            ["verify", "--target", "ns/a", "latest"],
            "/d",
            ["verify", "--target", "ns/a", "/d", "latest"],
        ),
        (
            ["verify", "--target=ns/a", "--json", ID],
            "/d",
            ["verify", "--target=ns/a", "--json", "/d", ID],
        ),
        (["verify", "/s", ID], "/d", ["verify", "/s", ID]),  # a store given: untouched
        (
            ["verify", ID],
            None,
            ["verify", ID],
        ),  # no default: untouched (typer says what is missing)
        (["list"], "/d", ["list"]),  # list reads it from default_map
        (["restore", "--", ID], "/d", ["restore", "--", "/d", ID]),
    ],
)
def test_insert_store(args: list[str], store: str | None, want: list[str]) -> None:
    assert insert_store(args, VALUE_OPTS, store) == want


def test_default_map_fills_store_only_where_it_is_the_only_positional() -> None:
    m = default_map(Defaults("/d", "ns/a"))
    assert m["list"] == {"store_url": "/d", "target": "ns/a"} == m["prune"]
    assert m["verify"] == {"target": "ns/a"} == m["restore"]
    assert default_map(Defaults()) == {}


def test_default_map_gives_each_command_only_the_transfer_settings_it_takes() -> None:
    d = Defaults(
        target="ns/a",
        transfer=(("limit_upload", 512), ("limit_download", 256), ("part_size", "64MiB")),
    )
    m = default_map(d)
    assert m["run"] == {"limit_upload": 512, "part_size": "64MiB"}
    assert m["copy"] == {"limit_upload": 512, "limit_download": 256, "part_size": "64MiB"}
    assert m["restore"] == {"target": "ns/a", "limit_download": 256} == m["verify"]
    assert m["check"] == {"limit_download": 256}
    assert "limit_download" not in m["list"]


# --- the CLI ------------------------------------------------------------------


def _store(root: Path, target: str) -> str:
    root.mkdir()
    return add_backup(open_store(str(root)), target, datetime(2025, 1, 1, 2, tzinfo=UTC))


def test_cli_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    ids = {name: _store(tmp_path / name, f"ns/{name}") for name in ("flag", "env", "file")}
    config = tmp_path / "config.toml"
    config.write_text(f'store = "{tmp_path / "file"}"\n')
    base = {"BACKUPCTL_CONFIG": str(config), "HOME": str(tmp_path)}

    def listed(*args: object, env: dict[str, str]) -> list[str]:
        listed = json.loads(cli("list", *args, "--json", env=env).stdout)["backups"]
        return [e["target"] for e in listed]

    assert listed(env=base) == ["ns/file"]
    env = {**base, "BACKUPCTL_STORE": str(tmp_path / "env")}
    assert listed(env=env) == ["ns/env"]
    assert listed(tmp_path / "flag", env=env) == ["ns/flag"]
    # show/ls take [STORE] ID: the id alone uses the default store
    shown = json.loads(cli("show", ids["env"], "--json", env=env).stdout)
    assert shown["manifest"]["target"] == "ns/env"


def test_cli_missing_store_and_broken_config_are_one_line_usage_errors(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "BACKUPCTL_STORE": "", "BACKUPCTL_CONFIG": ""}
    proc = cli("show", ID, env=env, check=False)
    assert proc.returncode == 2 and "BACKUPCTL_STORE" in proc.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("stroe = '/x'\n")
    proc = cli("list", env={**env, "BACKUPCTL_CONFIG": str(bad)}, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: config file {bad}: unknown key 'stroe' (known: concurrency, endpoint, "
        "limit-download, limit-upload, part-size, store, target)"
    )
