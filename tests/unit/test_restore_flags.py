"""``backupctl restore``'s flags against the one table of which flag goes with
which mode (backupctl.cli.restore_modes): every mix that does not go
together ends in one error naming the flag and the mode, exit code 1, before
anything is opened."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backupctl.cli.app import app
from backupctl.cli.restore_modes import (
    CLUSTER,
    DESTINATIONS,
    DIR,
    EXACTLY_ONE,
    FLAG_MODES,
    REDIS,
    FlagError,
    mode_of,
)


@pytest.mark.parametrize(
    ("given", "mode"),
    [
        ({DIR}, DIR),
        ({DIR, "--stage-only", "--node", "--appendonly", "--prefer-aof"}, DIR),
        ({DIR, "--swap"}, DIR),
        ({DIR, "--discard-staged"}, DIR),
        ({REDIS, "--flush", "--tmp-dir", "--password-file", "--node"}, REDIS),
        ({CLUSTER, "--restart", "--timeout", "--appendonly", "--password-file"}, CLUSTER),
        ({CLUSTER, "--verify-only", "--timeout"}, CLUSTER),
        ({"--dry-run"}, None),
        ({"--dry-run", "--target", "--json", "--termination-log", "--endpoint"}, None),
        ({"--dry-run", DIR}, DIR),
    ],
)
def test_flags_that_go_together_name_the_mode(given: set[str], mode: str | None) -> None:
    assert mode_of(given) == mode


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({DIR, "--stage-only", "--swap"}, "--stage-only and --swap exclude each other"),
        ({DIR, "--swap", "--dry-run"}, "--swap and --dry-run exclude each other"),
        ({CLUSTER, "--restart", "--verify-only"}, "--restart and --verify-only exclude each other"),
        ({DIR, REDIS}, EXACTLY_ONE),
        ({DIR, REDIS, CLUSTER, "--dry-run"}, EXACTLY_ONE),
        (set(), EXACTLY_ONE),
        ({"--target", "--json"}, EXACTLY_ONE),
        ({"--swap"}, "--swap goes with --to-dir"),
        ({DIR, "--flush"}, "--flush goes with --to-redis, not with --to-dir"),
        ({REDIS, "--prefer-aof"}, "--prefer-aof goes with --to-dir, not with --to-redis"),
        ({CLUSTER, "--node"}, "--node goes with --to-dir or --to-redis, not with --to-cluster"),
        ({CLUSTER, "--tmp-dir"}, "--tmp-dir goes with --to-redis, not with --to-cluster"),
        ({DIR, "--restart"}, "--restart goes with --to-cluster, not with --to-dir"),
        ({REDIS, "--verify-only"}, "--verify-only goes with --to-cluster, not with --to-redis"),
        ({DIR, "--password-file"}, "--password-file goes with --to-redis or --to-cluster"),
        ({REDIS, "--appendonly"}, "--appendonly goes with --to-dir or --to-cluster"),
        ({"--dry-run", "--node"}, "--node goes with --to-dir or --to-redis, not with --dry-run"),
    ],
)
def test_flags_that_do_not_go_together_give_one_message(given: set[str], message: str) -> None:
    with pytest.raises(FlagError) as e:
        mode_of(given)
    assert str(e.value).startswith(message) if message != EXACTLY_ONE else str(e.value) == message


@pytest.mark.parametrize(("flag", "modes"), sorted(FLAG_MODES.items()))
def test_each_flag_is_refused_by_every_other_destination(flag: str, modes: tuple[str, ...]) -> None:
    for destination in DESTINATIONS:
        if destination in modes:
            assert mode_of({destination, flag}) == destination
        else:
            with pytest.raises(FlagError, match=f"^{flag} goes with .*not with {destination}$"):
                mode_of({destination, flag})


def test_every_mode_specific_option_of_the_command_is_in_the_table() -> None:
    from typer.main import get_command

    restore = get_command(app).commands["restore"]  # type: ignore[attr-defined]
    flags = {p.opts[0] for p in restore.params if p.opts[0].startswith("--")}
    common = {"--target", "--endpoint", "--json", "--termination-log", "--dry-run", "--help"}
    common |= {"--verify-key", "--require-signatures"}  # which backup, in every mode
    common |= {"--quiet", "--verbose", "--log-format"}
    common |= {"--limit-download"}  # every mode downloads
    assert flags - common - set(DESTINATIONS) == set(FLAG_MODES)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to-dir", "d", "--flush"], "--flush goes with --to-redis, not with --to-dir"),
        (["--to-dir", "d", "--timeout", "600"], "--timeout goes with --to-cluster"),
        (["--to-redis", "redis://127.0.0.1:1", "--appendonly", "auto"], "--appendonly goes with"),
        (["--swap"], "--swap goes with --to-dir"),
        (["--to-dir", "d", "--to-cluster", "redis://127.0.0.1:1"], "pass exactly one of"),
    ],
)
def test_the_command_refuses_in_one_line_exit_2_and_writes_the_termination_log(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """Flags given at their default value count as given: they were asked for."""
    log = tmp_path / "termination-log"
    store = tmp_path / "store"
    args = [str(tmp_path / "d") if a == "d" else a for a in args]
    result = CliRunner().invoke(
        app, ["restore", str(store), "latest", *args, "--termination-log", str(log)]
    )
    assert result.exit_code == 2  # usage
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), lines
    assert json.loads(log.read_text()) == {"ok": False, "error": lines[0].removeprefix("error: ")}
    assert not store.exists() and not (tmp_path / "d").exists()
