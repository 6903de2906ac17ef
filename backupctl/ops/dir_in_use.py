"""Which running processes work in a directory (Linux ``/proc/*/cwd``).

Why it exists: ``redis-server`` changes into its ``dir`` at start, so a
restore into the data directory of a Redis that still runs would be
overwritten by that Redis' next save. ``restore --to-dir`` refuses such a
directory (``--force`` overrides) by comparing the directory's device and
inode with each process' working directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class User:
    pid: int
    command: str


def processes_in(path: Path, *, proc: Path = Path("/proc")) -> list[User]:
    """The processes whose working directory is ``path``, but this one and
    its ancestors (the shell that ran ``cd DIR && backupctl ...``); processes
    this user may not inspect are skipped."""
    try:
        st = os.stat(path)
    except OSError:
        return []
    found = []
    mine = _ancestors(proc)
    try:
        entries = [e.name for e in os.scandir(proc) if e.name.isdigit()]
    except OSError:
        return []
    for name in entries:
        pid = int(name)
        if pid in mine:
            continue
        try:
            cwd = os.stat(proc / name / "cwd")
        except OSError:
            continue
        if (cwd.st_dev, cwd.st_ino) == (st.st_dev, st.st_ino):
            found.append(User(pid, _command(proc / name)))
    return sorted(found, key=lambda u: u.pid)


def _command(pid_dir: Path) -> str:
    """argv[0] only (the arguments may hold a password), else the kernel's name."""
    try:
        text = (pid_dir / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        text = ""
    if not text:
        try:
            text = (pid_dir / "comm").read_text().strip()
        except OSError:
            text = "?"
    return text if len(text) <= 80 else text[:77] + "..."


def _ancestors(proc: Path) -> set[int]:
    """This process and its parents, up to pid 1 (at most 64 steps)."""
    pids, pid = set(), os.getpid()
    for _ in range(64):
        pids.add(pid)
        try:
            stat = (proc / str(pid) / "stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state
        except (OSError, ValueError, IndexError):
            break
        if pid <= 1:
            break
    return pids
