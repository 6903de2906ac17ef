"""Progress of a command's long steps: a label (``waiting for BGSAVE``,
``upload``, ``verify``, ``swap: exchange``), bytes done and expected, rate
and ETA. On a terminal a rich bar on stderr; off a terminal (a Job's log, a
pipe) a line every few seconds, text or JSON (:mod:`backupctl.cli.logs`),
so a log is never silent for long; nothing with ``--quiet`` or ``--json``.

Why a module of its own: one :class:`Meter` is what every command (and
every ops function, through its ``progress`` callback: ``meter.advance``)
reports to; how it is shown is chosen once, here. The figures and their
text are pure (:func:`describe`, :func:`fields`) and table-tested.

To report a step from new code: ``with progress("restore", enabled=not
as_json) as meter:`` then ``meter.step("load", total=keys, unit="keys")``
and pass ``meter.advance`` where a ``Progress`` callback is taken.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from backupctl.cli.logs import log, settings

__all__ = ["Meter", "State", "describe", "fields", "figures", "progress"]

#: Seconds between two progress lines off a terminal.
LINE_INTERVAL = 5.0
#: A rate over less time than this is not shown.
MIN_RATE_SECONDS = 0.5


@dataclass(frozen=True)
class State:
    """Where a step is: what the lines and the bar show."""

    label: str
    done: int
    total: int | None
    elapsed: float
    unit: str = "bytes"
    keys: int | None = None  # keys written so far, for a step counted in bytes (a load)

    @property
    def rate(self) -> float | None:
        """Per second, over the step so far (None before anything moved, and in
        the step's first half second, where it would be noise: a load's first
        report comes with bytes already read)."""
        return self.done / self.elapsed if self.done and self.elapsed >= MIN_RATE_SECONDS else None

    @property
    def eta(self) -> float | None:
        rate = self.rate
        if rate is None or self.total is None or self.total < self.done:
            return None
        return (self.total - self.done) / rate


def _amount(n: float, unit: str) -> str:
    if unit != "bytes":
        return f"{n:,.0f} {unit}"
    for name in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or name == "TiB":
            return f"{n:.0f} {name}" if name == "B" else f"{n:.1f} {name}"
        n /= 1024
    raise AssertionError("unreachable")


def _seconds(s: float) -> str:
    s = round(s)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def describe(s: State) -> str:
    """``upload: 12.0 MiB of 50.0 MiB (24%), 3.1 MiB/s, ETA 12s, 4s``, or
    ``waiting for BGSAVE: 8s`` while nothing moves."""
    return f"{s.label}: {figures(s)}"


def figures(s: State) -> str:
    """What :func:`describe` says after the label, in binary units: also the
    text beside the bar on a terminal, so both read the same."""
    if not s.done and s.total is None:
        return _seconds(s.elapsed)
    text = _amount(s.done, s.unit)
    if s.total is not None:
        pct = min(100, 100 * s.done // s.total) if s.total else 100
        text += f" of {_amount(s.total, s.unit)} ({pct}%)"
    if s.keys is not None:
        text += f", {s.keys:,} keys"
    if s.rate is not None:
        text += f", {_amount(s.rate, s.unit)}/s"
    if s.eta is not None:
        text += f", ETA {_seconds(s.eta)}"
    return text + f", {_seconds(s.elapsed)}"


def fields(s: State) -> dict[str, Any]:
    """The JSON fields of a progress line (stable names, see :mod:`backupctl.cli.logs`)."""
    out: dict[str, Any] = {
        "event": "progress",
        "step": s.label,
        "unit": s.unit,
        "bytes" if s.unit == "bytes" else s.unit: s.done,
        "total": s.total,
        "rate": round(s.rate, 1) if s.rate is not None else None,
        "eta": round(s.eta, 1) if s.eta is not None else None,
        "elapsed": round(s.elapsed, 1),
    }
    if s.keys is not None and s.unit == "bytes":
        out["keys"] = s.keys
    return out


class Meter:
    """Counts one step at a time; the view is told of every change."""

    def __init__(self, label: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._label, self._unit = label, "bytes"
        self._done, self._total = 0, None  # type: tuple[int, int | None]
        self._keys: int | None = None
        self._started = clock()
        self.on_change: Callable[[State, bool], None] = lambda state, new_step: None

    def state(self) -> State:
        with self._lock:
            return State(self._label, self._done, self._total, self._clock() - self._started,
                         self._unit, self._keys)  # fmt: skip

    def step(
        self, label: str, total: int | None = None, unit: str = "bytes", keep_total: bool = False
    ) -> None:
        """A new step starts (counts from 0; ``keep_total``: the total set before)."""
        with self._lock:
            total = self._total if keep_total else total
            self._label, self._total, self._unit, self._done = label, total, unit, 0
            self._keys = None
            self._started = self._clock()
        self.on_change(self.state(), True)

    def advance(self, n: int) -> None:
        """``n`` more done: the ``Progress`` callback the ops functions take."""
        with self._lock:
            self._done += n
        self.on_change(self.state(), False)

    def load(self, keys: int, done: int, total: int) -> None:
        """A load's ``LoadProgress`` callback (keys written, RDB bytes read of
        ``total``): shown as the step ``load``, begun at its first call."""
        with self._lock:
            new_step = self._label != "load"
            if new_step:
                self._label, self._unit, self._started = "load", "bytes", self._clock()
            self._done, self._total, self._keys = done, total, keys
        self.on_change(self.state(), new_step)

    def set_total(self, total: int) -> None:
        with self._lock:
            self._total = total
        self.on_change(self.state(), False)


@contextmanager
def progress(label: str, *, enabled: bool, interval: float = LINE_INTERVAL) -> Iterator[Meter]:
    """A :class:`Meter` shown on stderr (see the module docstring) while the
    block runs; counted but not shown when not ``enabled`` or ``--quiet``."""
    meter = Meter(label)
    s = settings()
    if not enabled or s.quiet:
        yield meter
    elif sys.stderr.isatty() and not s.json:
        with _rich(meter):
            yield meter
    else:
        with _lines(meter, interval):
            yield meter


def _line(state: State) -> None:
    log("progress", describe(state), **fields(state))


@contextmanager
def _lines(meter: Meter, interval: float) -> Iterator[None]:
    """A line at each new step and every ``interval`` seconds, even when
    nothing moves (a BGSAVE of a big dataset); the last one at the end."""
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(interval):
            _line(meter.state())

    meter.on_change = lambda state, new_step: _line(state) if new_step else None
    _line(meter.state())
    ticker = threading.Thread(target=tick, name="backupctl-progress", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        stop.set()
        ticker.join(timeout=interval + 1)
        meter.on_change = lambda state, new_step: None


@contextmanager
def _rich(meter: Meter) -> Iterator[None]:
    """The bar, and beside it what a progress line says (:func:`figures`: binary
    units, the keys of a load); redrawn 4 times a second, so the elapsed time
    moves even while a step reports nothing, and at once when a step begins."""
    from rich.console import Console, RenderableType
    from rich.progress import BarColumn, ProgressColumn, Task, TextColumn
    from rich.progress import Progress as RichProgress
    from rich.text import Text

    class Figures(ProgressColumn):
        def render(self, task: Task) -> RenderableType:
            return Text(figures(meter.state()))

    verbose = settings().verbose
    with RichProgress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        Figures(),
        console=Console(stderr=True),
        transient=True,
        refresh_per_second=4,
    ) as bar:
        task = bar.add_task(meter.state().label, total=None)

        def show(state: State, new_step: bool) -> None:
            if new_step and verbose:
                bar.console.print(f"{state.label} ...")
            bar.update(task, description=state.label, completed=state.done, total=state.total)
            if new_step:  # drawn now: a step shorter than a redraw interval is still seen
                bar.refresh()

        meter.on_change = show
        try:
            yield
        finally:
            meter.on_change = lambda state, new_step: None
