"""Starting a container's process as a runtime would: its own mounts, its user, its privileges.

Why: a container sees its volumes at their mount paths, read-only where the pod says so, and
runs under its securityContext's user with the capabilities it keeps. Without a runtime, the
stand-ins start each process through :func:`launcher`: ``unshare --mount --propagation
private`` gives it a mount namespace of its own in which each volume folder is bind-mounted
onto itself, read-only ones remounted ``ro`` (a write fails with EROFS); ancestors the user
could not traverse (pytest's 0700 ``tmp_path`` base, for uid 999) are covered by a tmpfs
holding just the path to each volume, so folders keep their paths and their own owner and
mode decide access; then ``setpriv`` switches to the
:class:`~.security_context.Identity` (uid, gid, supplementary groups, bounding set,
``no_new_privs``) and execs the command. The pid stays the same through every exec, so
signalling the process group still reaches it. Needs root and util-linux (``unshare``,
``mount``, ``setpriv``; checked by ``scripts/bootstrap.sh``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from .security_context import Identity


@dataclass(frozen=True)
class Mount:
    """The folder (or file) ``source`` bind-mounted onto itself for the process, so it keeps
    its path (``CONFIG GET dir``, ``BACKUPCTL_PATH_MAP`` are true outside too); ``staging``
    is the mount point under the pod's sandbox it passes through."""

    source: Path
    staging: Path
    read_only: bool = False


def setpriv_args(identity: Identity) -> list[str]:
    """``setpriv`` options switching a root process to ``identity``."""
    args = ["setpriv", f"--reuid={identity.uid}", f"--regid={identity.gid}"]
    if identity.groups:
        args.append("--groups=" + ",".join(str(g) for g in identity.groups))
    else:
        args.append("--clear-groups")
    if identity.cap_drop:
        bounding = ["-all"] if "all" in identity.cap_drop else [f"-{c}" for c in identity.cap_drop]
        bounding += [f"+{c}" for c in identity.cap_add if "all" in identity.cap_drop]
        args += ["--bounding-set=" + ",".join(bounding), "--inh-caps=-all"]
    if identity.no_new_privs:
        args.append("--no-new-privs")
    return args


def can_traverse(path: Path, identity: Identity) -> bool:
    """Whether ``identity`` may search the directory ``path`` (owner, group, other bits)."""
    st = path.stat()
    if st.st_uid == identity.uid:
        return bool(st.st_mode & 0o100)
    if st.st_gid == identity.gid or st.st_gid in identity.groups:
        return bool(st.st_mode & 0o010)
    return bool(st.st_mode & 0o001)


def blocked_ancestor(path: Path, identity: Identity) -> Path | None:
    """The highest strict ancestor of ``path`` that ``identity`` cannot traverse."""
    for ancestor in reversed(path.parents):
        if not can_traverse(ancestor, identity):
            return ancestor
    return None


def launcher(mounts: list[Mount], identity: Identity, argv: list[str], cwd: str) -> list[str]:
    """The argv that runs ``argv`` in ``cwd`` with ``mounts`` and as ``identity``: each
    source is staged under the sandbox, a tmpfs (mode 0711) covers ancestors the user could
    not traverse (pytest's 0700 base), the source is bound back at its own path (``ro`` if
    asked). A mount that fails ends it with exit code 1 and the reason on stderr."""
    q = shlex.quote
    lines = ["set -e"]
    for m in mounts:
        lines.append(f"mount --bind {q(str(m.source))} {q(str(m.staging))}")
    covered: list[Path] = []
    for m in mounts:
        top = blocked_ancestor(m.source, identity)
        if top is not None and not any(top == c or c in top.parents for c in covered):
            covered.append(top)
            lines.append(f"mount -t tmpfs -o mode=0711,size=1m tmpfs {q(str(top))}")
    for m in mounts:
        dst = q(str(m.source))
        if m.staging.is_dir():
            lines.append(f"[ -e {dst} ] || mkdir -p {dst}")
        else:
            lines.append(f"[ -e {dst} ] || {{ mkdir -p {q(str(m.source.parent))}; : > {dst}; }}")
        lines.append(f"mount --bind {q(str(m.staging))} {dst}")
        if m.read_only:
            lines.append(f"mount -o remount,bind,ro {dst}")
    lines.append(f"cd {q(cwd)}")
    lines.append('exec "$@"')
    return [
        shutil.which("unshare") or "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
        "\n".join(lines),
        "sh",
        *setpriv_args(identity),
        "--",
        *argv,
    ]


def runtime_mounts(identity: Identity, sandbox: Path, first_index: int) -> list[Mount]:
    """Mounts that make this Python (its base prefix, the venv, ``PYTHONPATH``) reachable by
    ``identity`` where an ancestor hides it (pyenv under root's 0700 home): an image would
    have its own interpreter, so this is no hole in what the test shows."""
    paths = [Path(sys.base_prefix), Path(sys.prefix)]
    paths += [Path(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    mounts: list[Mount] = []
    for path in dict.fromkeys(p.resolve() for p in paths):
        if path.exists() and blocked_ancestor(path, identity) is not None:
            staging = mount_point(sandbox, first_index + len(mounts), path)
            mounts.append(Mount(path, staging))
    return mounts


def mount_point(sandbox: Path, index: int, source: Path) -> Path:
    """An empty file or folder under ``sandbox`` to stage ``source`` on."""
    target = sandbox / "mnt" / str(index)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(target.parent, 0o755)
    if source.is_dir():
        target.mkdir(exist_ok=True)
    else:
        target.touch(exist_ok=True)
    return target
