"""The swap of a restore to a data directory, crash-safe at every instruction.

Why a module of its own: the swap is the one moment the files Redis loads
change, and a kill there must never leave a directory with neither the old
nor the new data. So, before the first rename, a journal (``DIR/.backupctl-
swap.json``, fsync'd, created without following links) records what moves
where and the identity (device, inode) of every old and new file; renames
keep identities, so a rerun sees exactly how far a killed swap got. Each
live file is exchanged with its staged copy atomically (Linux
``renameat2(RENAME_EXCHANGE)``); where the kernel or filesystem cannot, a
file is hard-linked into the previous-data folder before the staged one
replaces it (still no gap), and only a folder (the AOF folder) is moved
aside and then replaced (the one unavoidable gap, named in the docs).

:func:`next_move` is the pure decision (table-tested): given where the new
and the old copy of one name are, the next move towards "finished" (new in
place, old in the previous-data folder) or "rolled back" (old in place, new
back in the staging folder). :func:`recover` reads a journal left by a
killed run and drives every step to one of the two ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any, Literal

from backupctl.core.datadir import SWAP_JOURNAL as JOURNAL
from backupctl.core.datadir import SWAP_RECORD
from backupctl.core.safe_files import ExchangeUnsupported, SafeDir, exchange

Place = Literal["dir", "staging", "previous"]
Identity = tuple[int, int]
StepHook = Callable[[str], None]
Exchange = Callable[[SafeDir, str, SafeDir, str], None]


class SwapError(Exception):
    """A journal or the files it names are not what a swap left (one line)."""


@dataclass(frozen=True)
class Move:
    """``rename`` src -> dst; ``exchange`` src <-> dst; ``replace``: src to
    dst, what was at dst to ``keep`` (an exchange, or link + rename)."""

    op: Literal["rename", "exchange", "replace"]
    src: Place
    dst: Place
    keep: Place | None = None


def next_move(new: Place | None, old: Place | None, *, has_new: bool, has_old: bool,
              finish: bool) -> Move | None:  # fmt: skip
    """The next move of one name (None: this name is at its end), from where
    its new copy (``new``) and its old copy (``old``) are now."""
    state = (new if has_new else "-", old if has_old else "-")
    table = _FINISH if finish else _ROLLBACK
    if state not in table:
        raise SwapError(
            f"the new copy is {'in ' + str(new) if new else 'missing'} and the old one "
            f"{'in ' + str(old) if old else 'missing'}: not a state a swap leaves"
        )
    return table[state]


_FINISH: dict[tuple[str | None, str | None], Move | None] = {
    ("staging", "dir"): Move("replace", "staging", "dir", keep="previous"),
    ("dir", "staging"): Move("rename", "staging", "previous"),
    ("staging", "previous"): Move("rename", "staging", "dir"),
    ("previous", "dir"): Move("exchange", "previous", "dir"),
    ("dir", "previous"): None,
    ("staging", "-"): Move("rename", "staging", "dir"),
    ("dir", "-"): None,
    ("-", "dir"): Move("rename", "dir", "previous"),
    ("-", "previous"): None,
}
_ROLLBACK: dict[tuple[str | None, str | None], Move | None] = {
    ("dir", "staging"): Move("exchange", "staging", "dir"),
    ("dir", "previous"): Move("replace", "previous", "dir", keep="staging"),
    ("previous", "dir"): Move("rename", "previous", "staging"),
    ("staging", "previous"): Move("rename", "previous", "dir"),
    ("staging", "dir"): None,
    ("dir", "-"): Move("rename", "dir", "staging"),
    ("staging", "-"): None,
    ("-", "previous"): Move("rename", "previous", "dir"),
    ("-", "dir"): None,
}


@dataclass(frozen=True)
class Step:
    name: str  # in DIR, and in the previous-data folder
    staged: str | None  # inside the staging folder; None: only moved aside
    new: Identity | None
    old: Identity | None


@dataclass(frozen=True)
class Journal:
    plan: dict[str, Any]  # the staged copy's plan (id, files, keys...)
    staging: str
    previous: str
    pid: int
    steps: tuple[Step, ...]

    def to_bytes(self) -> bytes:
        steps = [{"name": s.name, "staged": s.staged, "new": s.new, "old": s.old}
                 for s in self.steps]  # fmt: skip
        return json.dumps({"plan": self.plan, "staging": self.staging, "previous": self.previous,
                           "pid": self.pid, "steps": steps}).encode()  # fmt: skip

    @classmethod
    def parse(cls, raw: bytes) -> Journal:
        try:
            d = json.loads(raw)
            steps = tuple(
                Step(s["name"], s["staged"], _ident(s["new"]), _ident(s["old"])) for s in d["steps"]
            )
            journal = cls(dict(d["plan"]), str(d["staging"]), str(d["previous"]), int(d["pid"]),
                          steps)  # fmt: skip
        except (ValueError, KeyError, TypeError) as e:
            raise SwapError(
                f"{JOURNAL} is damaged ({e}): restore the data directory by hand"
            ) from e
        for name in (journal.staging, journal.previous, *(s.name for s in steps)):
            if "/" in name or name in ("", ".", ".."):
                raise SwapError(f"{JOURNAL} names {name!r}, not a name in the data directory")
        for s in steps:
            if s.staged is not None and (s.staged.startswith("/") or ".." in s.staged.split("/")):
                raise SwapError(f"{JOURNAL} names {s.staged!r}, not a path in the staging folder")
        return journal


def _ident(v: Any) -> Identity | None:
    return None if v is None else (int(v[0]), int(v[1]))


def plan_steps(data: SafeDir, staging: SafeDir, plan: dict[str, Any]) -> tuple[Step, ...]:
    """The steps of ``plan`` (``files``: name in DIR -> path in staging;
    ``aside``: names moved aside) with the identities found now."""
    files: dict[str, str] = plan["files"]
    steps = []
    for name in [*files, *(a for a in plan["aside"] if a not in files)]:
        rel = files.get(name)
        new = staging.identity(rel) if rel is not None else None
        if rel is not None and new is None:
            raise SwapError(f"{staging.path / rel} is missing: stage again")
        old = data.identity(name)
        if new is None and old is None:
            continue
        steps.append(Step(name, rel, new, old))
    return tuple(steps)


class _Places:
    """Where one step's names are: in DIR, in the staging folder, in the
    previous-data folder."""

    def __init__(self, data: SafeDir, staging: SafeDir, previous: SafeDir, step: Step) -> None:
        self.at: dict[Place, tuple[SafeDir, str]] = {
            "dir": (data, step.name),
            "staging": (staging, step.staged or step.name),
            "previous": (previous, step.name),
        }

    def find(self, ident: Identity | None) -> Place | None:
        if ident is None:
            return None
        for place, (d, name) in self.at.items():
            if d.identity(name) == ident:
                return place
        return None

    def apply(self, move: Move, exchange_fn: Exchange) -> None:
        """One move: one rename or exchange (a file without RENAME_EXCHANGE:
        a hard link first, then the rename over it, so there is no gap)."""
        (sd, sn), (dd, dn) = self.at[move.src], self.at[move.dst]
        if move.op == "rename":
            sd.rename(sn, dd, dn, noreplace=True)
        elif move.op == "exchange":
            exchange_fn(sd, sn, dd, dn)
        else:
            assert move.keep is not None
            kd, kn = self.at[move.keep]
            try:
                exchange_fn(sd, sn, dd, dn)  # the next move takes src's new content to keep
            except ExchangeUnsupported:
                st = dd.lstat(dn)
                if st is not None and not stat.S_ISDIR(st.st_mode):
                    if kd.identity(kn) != (st.st_dev, st.st_ino):
                        os.link(dn, kn, src_dir_fd=dd.fd, dst_dir_fd=kd.fd, follow_symlinks=False)
                    os.rename(sn, dn, src_dir_fd=sd.fd, dst_dir_fd=dd.fd)
                else:  # a folder without RENAME_EXCHANGE: the one short gap
                    dd.rename(dn, kd, kn, noreplace=True)
        for d in {id(d): d for d, _ in self.at.values()}.values():
            d.fsync()


def drive(
    journal: Journal,
    data: SafeDir,
    staging: SafeDir,
    previous: SafeDir,
    *,
    finish: bool,
    before_step: StepHook | None = None,
    exchange_fn: Exchange = exchange,
) -> None:
    """Move every step of ``journal`` to its end (finished or rolled back);
    ``before_step`` is called before each move (a fault-injection point),
    ``exchange_fn`` swaps two names (tests pass one the kernel lacks)."""
    for step in journal.steps if finish else reversed(journal.steps):
        places = _Places(data, staging, previous, step)
        for _ in range(4):  # at most three moves take a step from any state to its end
            try:
                move = next_move(places.find(step.new), places.find(step.old),
                                 has_new=step.new is not None, has_old=step.old is not None,
                                 finish=finish)  # fmt: skip
            except SwapError as e:
                raise SwapError(f"{data.path / step.name}: {e}") from None
            if move is None:
                break
            if before_step is not None:
                before_step(f"{move.op} {step.name} {move.src}->{move.dst}")
            places.apply(move, exchange_fn)
        else:
            raise SwapError(f"{data.path / step.name}: the swap did not settle")


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """SIGTERM and SIGINT wait until the block ends (the swap is a few
    renames): a signal then does what it did before, after the swap."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []

    def note(signum: int, _: FrameType | None) -> None:
        got.append(signum)

    old = {s: signal.signal(s, note) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for signum in dict.fromkeys(got):
            signal.raise_signal(signum)


@dataclass(frozen=True)
class Recovered:
    """What a run did with the journal an earlier, killed run left."""

    id: str
    pid: int
    action: Literal["finished", "rolled back"]
    previous: str | None
    plan: dict[str, Any]

    def line(self) -> str:
        where = f"; the old data is in {self.previous}" if self.previous else ""
        if self.action == "finished":
            return (f"finished the swap of {self.id} that an earlier run (pid {self.pid}) "
                    f"left half-done{where}")  # fmt: skip
        return (f"rolled back the swap of {self.id} that an earlier run (pid {self.pid}) left "
                "half-done: the data directory holds its old data again")  # fmt: skip


def swap(
    data: SafeDir,
    staging_name: str,
    plan: dict[str, Any],
    previous_name: str,
    *,
    before_step: StepHook | None = None,
    exchange_fn: Exchange = exchange,
) -> str | None:
    """Journal, then move the staged files of ``plan`` into place and the
    live ones into ``previous_name``; returns that folder's name (None when
    nothing was live). SIGTERM/SIGINT wait until it is done."""
    with data.owned_subdir(staging_name) as staging:
        journal = Journal(plan, staging_name, previous_name, os.getpid(),
                          plan_steps(data, staging, plan))  # fmt: skip
        with deferred_signals():
            if before_step is not None:
                before_step("journal")
            data.write_atomic(JOURNAL, journal.to_bytes())
            return _finish(journal, data, staging, before_step, exchange_fn)


def recover(
    data: SafeDir,
    *,
    finish_id: str | None,
    before_step: StepHook | None = None,
    exchange_fn: Exchange = exchange,
) -> Recovered | None:
    """Drive the swap a killed run left in ``data`` (its journal) to an end:
    finished when it is the swap of ``finish_id`` (or it had got as far as
    writing its record), else rolled back with the staged copy kept whole."""
    raw = data.read(JOURNAL)
    if raw is None:
        data.clear_leftover(JOURNAL)  # a link or device planted there: refused
        return None
    journal = Journal.parse(raw)
    record = _load(data.read(SWAP_RECORD))
    bid = str(journal.plan.get("id"))
    recorded = record.get("id") == bid and record.get("journal") == journal.previous
    finish = recorded or bid == finish_id
    with deferred_signals():
        if data.lstat(journal.staging) is None:
            if not recorded:
                raise SwapError(
                    f"{data.path / JOURNAL} names {journal.staging}, which is gone: the swap of "
                    f"{bid} cannot be finished or rolled back; check {data.path} by hand"
                )
            data.mkdir(journal.staging).close()  # removed by the cleanup the kill cut short
        with data.owned_subdir(journal.staging) as staging:
            if finish:
                previous = _finish(journal, data, staging, before_step, exchange_fn)
                return Recovered(bid, journal.pid, "finished", previous, journal.plan)
            with _previous(data, journal.previous) as prev:
                drive(journal, data, staging, prev, finish=False, before_step=before_step,
                      exchange_fn=exchange_fn)  # fmt: skip
                empty = not os.listdir(prev.fd)
            if empty:
                os.rmdir(journal.previous, dir_fd=data.fd)
            data.unlink(JOURNAL)
            data.fsync()
            return Recovered(bid, journal.pid, "rolled back", None, journal.plan)


def _finish(
    journal: Journal,
    data: SafeDir,
    staging: SafeDir,
    before_step: StepHook | None,
    exchange_fn: Exchange,
) -> str | None:
    hook = before_step or (lambda _: None)
    with _previous(data, journal.previous) as previous:
        drive(journal, data, staging, previous, finish=True, before_step=before_step,
              exchange_fn=exchange_fn)  # fmt: skip
        empty = not os.listdir(previous.fd)
    kept = None if empty else journal.previous
    hook("record")
    record = {**journal.plan, "previous": kept, "journal": journal.previous, "swapped": True}
    data.write_atomic(SWAP_RECORD, json.dumps(record).encode())
    hook("cleanup")
    data.rmtree(journal.staging)
    if empty:
        os.rmdir(journal.previous, dir_fd=data.fd)
    data.unlink(JOURNAL)
    data.fsync()
    return kept


@contextlib.contextmanager
def _previous(data: SafeDir, name: str) -> Iterator[SafeDir]:
    if data.lstat(name) is None:
        data.mkdir(name).close()
    with data.owned_subdir(name) as previous:
        yield previous


def _load(raw: bytes | None) -> dict[str, Any]:
    try:
        d = json.loads(raw) if raw is not None else {}
    except ValueError:
        return {}
    return d if isinstance(d, dict) else {}
