"""The journaled swap of a restore to a data directory: the pure next-move
table, and the swap of real files in a temp folder interrupted before each of
its steps, then finished or rolled back. No Redis: the files stand in for
``dump.rdb`` and the AOF folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backupctl.core.datadir import SWAP_JOURNAL, SWAP_RECORD
from backupctl.core.safe_files import ExchangeUnsupported, SafeDir
from backupctl.ops.swap_journal import (
    _FINISH,
    _ROLLBACK,
    Move,
    SwapError,
    next_move,
    recover,
    swap,
)

STAGING = ".backupctl-staging-b1-123"
PREVIOUS = ".backupctl-previous-20270101-000000"
PLAN: dict[str, Any] = {
    "id": "b1",
    "target": "t",
    "node": "n",
    "keys": 1,
    "appendonly": "auto",
    "files": {"dump.rdb": "archive/dump.rdb", "appendonlydir": ".aof-appendonlydir"},
    "aside": ["dump.rdb", "appendonlydir"],
}


def simulate(state: dict[str, str | None], move: Move) -> None:
    """What a move does to where the copies are ('new'/'old' -> place)."""
    at = {place: copy for copy, place in state.items() if place is not None}
    if move.op == "rename":
        state[at[move.src]] = move.dst
    else:  # exchange, and replace with RENAME_EXCHANGE
        a, b = at[move.src], at.get(move.dst)
        state[a] = move.dst
        if b is not None:
            state[b] = move.src


@pytest.mark.parametrize("finish", [True, False], ids=["finish", "rollback"])
@pytest.mark.parametrize("start", sorted(set(_FINISH) | set(_ROLLBACK), key=str))
def test_every_state_a_swap_leaves_reaches_its_end_in_at_most_three_moves(
    start: tuple[str, str], finish: bool
) -> None:
    has_new, has_old = start[0] != "-", start[1] != "-"
    state: dict[str, str | None] = {"new": start[0] if has_new else None,
                                    "old": start[1] if has_old else None}  # fmt: skip
    for _ in range(3):
        move = next_move(state["new"], state["old"], has_new=has_new, has_old=has_old,  # type: ignore[arg-type]
                         finish=finish)  # fmt: skip
        if move is None:
            break
        simulate(state, move)
    else:
        raise AssertionError(f"not settled from {start}")
    if finish:
        assert state == {"new": "dir" if has_new else None, "old": "previous" if has_old else None}
    else:
        assert state == {"new": "staging" if has_new else None, "old": "dir" if has_old else None}


def test_a_state_no_swap_leaves_is_refused() -> None:
    with pytest.raises(SwapError, match="missing"):
        next_move(None, "dir", has_new=True, has_old=True, finish=True)


def make_dir(root: Path) -> Path:
    """DIR with old data live and a complete staged copy of new data."""
    data = root / "data"
    (data / "appendonlydir").mkdir(parents=True)
    (data / "dump.rdb").write_text("old rdb")
    (data / "appendonlydir" / "base.rdb").write_text("old aof")
    (data / STAGING / "archive").mkdir(parents=True)
    (data / STAGING / "archive" / "dump.rdb").write_text("new rdb")
    (data / STAGING / ".aof-appendonlydir").mkdir()
    (data / STAGING / ".aof-appendonlydir" / "base.rdb").write_text("new aof")
    return data


def live(data: Path) -> tuple[str, str]:
    return (data / "dump.rdb").read_text(), (data / "appendonlydir" / "base.rdb").read_text()


def no_exchange(*_: object) -> None:
    raise ExchangeUnsupported(22, "no RENAME_EXCHANGE here")


class Killed(BaseException):
    pass


def steps_of_a_swap(tmp_path: Path, exchange_fn: Callable[..., None] | None) -> list[str]:
    steps: list[str] = []
    data = make_dir(tmp_path / "dry")
    kw = {} if exchange_fn is None else {"exchange_fn": exchange_fn}
    with SafeDir.open(data) as d:
        assert swap(d, STAGING, PLAN, PREVIOUS, before_step=steps.append, **kw) == PREVIOUS
    assert live(data) == ("new rdb", "new aof")
    assert sorted(os.listdir(data)) == sorted([PREVIOUS, SWAP_RECORD, "appendonlydir", "dump.rdb"])
    return steps


@pytest.mark.parametrize("exchange_fn", [None, no_exchange], ids=["renameat2", "fallback"])
@pytest.mark.parametrize("finish", [True, False], ids=["rerun-finishes", "rerun-rolls-back"])
def test_a_swap_killed_before_any_step_is_finished_or_rolled_back_whole_by_the_rerun(
    tmp_path: Path, exchange_fn: Callable[..., None] | None, finish: bool
) -> None:
    steps = steps_of_a_swap(tmp_path, exchange_fn)
    assert steps[0] == "journal" and steps[-2:] == ["record", "cleanup"]
    kw = {} if exchange_fn is None else {"exchange_fn": exchange_fn}
    for n, at in enumerate(steps):
        data = make_dir(tmp_path / f"kill-{n}")

        def kill(step: str, at: str = at) -> None:
            if step == at:
                raise Killed(step)

        with SafeDir.open(data) as d, pytest.raises(Killed):
            swap(d, STAGING, PLAN, PREVIOUS, before_step=kill, **kw)
        rdb, aof = (data / "dump.rdb").read_text(), None
        if exchange_fn is None or "appendonlydir" not in at:
            aof = (data / "appendonlydir" / "base.rdb").read_text()  # never a gap
            assert (rdb, aof) in {("old rdb", "old aof"), ("new rdb", "old aof"),
                                  ("new rdb", "new aof")}, at  # fmt: skip
        with SafeDir.open(data) as d:
            done = recover(d, finish_id="b1" if finish else None, **kw)
        if at == "journal":  # killed before the journal: nothing had moved
            assert done is None and live(data) == ("old rdb", "old aof")
            continue
        assert done is not None and done.id == "b1", at
        if finish or at == "cleanup":  # once its record is written, a swap is finished
            assert done.action == "finished" and "finished the swap of b1" in done.line()
            assert live(data) == ("new rdb", "new aof"), at
            assert (data / PREVIOUS / "dump.rdb").read_text() == "old rdb"
            assert (data / PREVIOUS / "appendonlydir" / "base.rdb").read_text() == "old aof"
            assert sorted(os.listdir(data)) == sorted(
                [PREVIOUS, SWAP_RECORD, "appendonlydir", "dump.rdb"]
            ), at
        else:
            assert done.action == "rolled back" and "old data again" in done.line()
            assert live(data) == ("old rdb", "old aof"), at
            assert (data / STAGING / "archive" / "dump.rdb").read_text() == "new rdb"
            assert (data / STAGING / ".aof-appendonlydir" / "base.rdb").read_text() == "new aof"
            assert sorted(os.listdir(data)) == [STAGING, "appendonlydir", "dump.rdb"], at


def test_a_damaged_journal_is_one_clear_error_and_moves_nothing(tmp_path: Path) -> None:
    data = make_dir(tmp_path)
    (data / SWAP_JOURNAL).write_text('{"plan": {}, "staging": "../x"')
    with SafeDir.open(data) as d, pytest.raises(SwapError, match="damaged"):
        recover(d, finish_id="b1")
    assert live(data) == ("old rdb", "old aof")


def test_a_journal_naming_a_path_outside_the_data_directory_is_refused(tmp_path: Path) -> None:
    data = make_dir(tmp_path)
    (data / SWAP_JOURNAL).write_text(
        '{"plan": {"id": "b1"}, "staging": "../../etc", "previous": "p", "pid": 1, "steps": []}'
    )
    with SafeDir.open(data) as d, pytest.raises(SwapError, match="not a name in the data"):
        recover(d, finish_id="b1")


def test_a_link_planted_at_the_journal_name_is_refused_not_followed(tmp_path: Path) -> None:
    data = make_dir(tmp_path)
    target = tmp_path / "precious"
    target.write_text("keep me")
    (data / (SWAP_JOURNAL + ".tmp")).symlink_to(target)
    with SafeDir.open(data) as d, pytest.raises(Exception, match="symbolic link"):
        swap(d, STAGING, PLAN, PREVIOUS)
    assert target.read_text() == "keep me"
    assert live(data) == ("old rdb", "old aof")
