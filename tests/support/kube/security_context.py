"""Who a container's process runs as: a pod's securityContext as the kubelet and runtime apply it.

Why: on a cluster, a container's process runs under an effective uid/gid decided by the
container's ``securityContext`` over the pod's over the image's ``USER``; ``fsGroup`` and
``supplementalGroups`` become supplementary groups and ``fsGroup`` re-owns the volumes;
``runAsNonRoot`` refuses a root process; ``capabilities.drop`` and
``allowPrivilegeEscalation: false`` take privileges away. Data written by one pod and read by
another only works when those match, so the stand-ins (:mod:`.kubelet`,
:mod:`.statefulset_controller`) run each process under the :class:`Identity` decided here
(we are root on the test machines; :mod:`.mount_namespace` switches to it with ``setpriv``).

The images are not pulled, so their ``USER`` comes from a table (:data:`IMAGE_USERS`,
``fnmatch`` patterns on the image name without registry, tag or digest): ``backupctl*`` is
10001:10001 (the Dockerfile's ``USER``); the official ``redis*``/``valkey*`` images start as
root and their entrypoint re-owns the data dir and drops to 999:999 (``gosu``); ``bitnami/*``
runs as 1001:0; anything else as root. Not emulated: capabilities added to a non-root process
(ambient capabilities), ``privileged``, ``procMount``, SELinux/AppArmor/seccomp profiles,
user namespaces, ``readOnlyRootFilesystem`` (there is no image root filesystem).
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class ImageUser:
    """An image's ``USER``; ``drops_to``: the uid:gid its entrypoint switches to from root."""

    uid: int
    gid: int
    drops_to: tuple[int, int] | None = None


IMAGE_USERS: dict[str, ImageUser] = {
    "bitnami/*": ImageUser(1001, 0),
    "backupctl*": ImageUser(10001, 10001),
    "redis*": ImageUser(0, 0, drops_to=(999, 999)),
    "valkey*": ImageUser(0, 0, drops_to=(999, 999)),
}
ROOT = ImageUser(0, 0)


@dataclass(frozen=True)
class Identity:
    """What the process runs as, and the privileges it keeps."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    cap_drop: tuple[str, ...] = ()  # lower-case names without ``cap_``; "all" for ALL
    cap_add: tuple[str, ...] = ()
    no_new_privs: bool = False
    entrypoint_chown: bool = False  # the image's entrypoint re-owns the data dir (uid only)


class RunAsRootRefused(Exception):
    """``runAsNonRoot: true`` and a root user (the kubelet's CreateContainerConfigError)."""


def image_name(image: str) -> str:
    """``docker.io/library/redis:7@sha256:..`` -> ``redis``; ``ghcr.io/o/x:1`` -> ``o/x``."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name.rsplit(":", 1)[0]
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if parts[:1] == ["library"]:
        parts = parts[1:]
    return "/".join(parts)


def image_user(image: str, table: dict[str, ImageUser] | None = None) -> ImageUser:
    """The image's ``USER`` from ``table`` (the full name first, then its last component)."""
    name = image_name(image)
    table = IMAGE_USERS if table is None else table
    for candidate in (name, name.rsplit("/", 1)[-1]):
        for pattern, user in table.items():
            if fnmatch.fnmatchcase(candidate, pattern):
                return user
    return ROOT


def _setting(pod_sc: JsonDict, ctr_sc: JsonDict, key: str) -> Any:
    return ctr_sc[key] if ctr_sc.get(key) is not None else pod_sc.get(key)


def effective_identity(
    pod: JsonDict, container: JsonDict, table: dict[str, ImageUser] | None = None
) -> Identity:
    """The identity of ``container``'s process; raises :class:`RunAsRootRefused`."""
    spec = pod.get("spec") or {}
    pod_sc = spec.get("securityContext") or {}
    ctr_sc = container.get("securityContext") or {}
    user = image_user(str(container.get("image") or ""), table)
    run_as_user = _setting(pod_sc, ctr_sc, "runAsUser")
    run_as_group = _setting(pod_sc, ctr_sc, "runAsGroup")
    uid = int(run_as_user) if run_as_user is not None else user.uid
    if run_as_group is not None:
        gid = int(run_as_group)
    elif run_as_user is None or int(run_as_user) == user.uid:
        gid = user.gid
    else:
        gid = 0  # runAsUser without runAsGroup: the primary group is root
    if _setting(pod_sc, ctr_sc, "runAsNonRoot") and uid == 0:
        meta = pod.get("metadata") or {}
        raise RunAsRootRefused(
            "container has runAsNonRoot and image will run as root "
            f'(pod: "{meta.get("name")}_{meta.get("namespace")}({meta.get("uid", "")})", '
            f"container: {container.get('name', '')})"
        )
    entrypoint_chown = False
    if uid == 0 and run_as_user is None and run_as_group is None and user.drops_to is not None:
        uid, gid = user.drops_to
        entrypoint_chown = True
    groups: list[int] = []
    if pod_sc.get("fsGroup") is not None:
        groups.append(int(pod_sc["fsGroup"]))
    groups += [int(g) for g in pod_sc.get("supplementalGroups") or []]
    caps = ctr_sc.get("capabilities") or {}
    escalation = ctr_sc.get("allowPrivilegeEscalation")
    return Identity(
        uid=uid,
        gid=gid,
        groups=tuple(dict.fromkeys(groups)),
        cap_drop=tuple(_cap(c) for c in caps.get("drop") or []),
        cap_add=tuple(_cap(c) for c in caps.get("add") or []),
        no_new_privs=escalation is False,
        entrypoint_chown=entrypoint_chown,
    )


def _cap(name: str) -> str:
    name = str(name).lower()
    return re.sub(r"^cap_", "", name)


def fs_group_needs_change(path: Path, gid: int) -> bool:
    """``fsGroupChangePolicy: OnRootMismatch``: change only when the root does not match."""
    st = path.stat()
    return st.st_gid != gid or (st.st_mode & 0o2070) != 0o2070


def apply_fs_group(
    path: Path, gid: int, policy: str | None = None, read_only: bool = False
) -> None:
    """Give ``gid`` the volume at ``path`` as the kubelet does at mount: group ownership,
    g+rw on files (g+r when read-only), g+rwx and setgid on directories, recursively."""
    if policy == "OnRootMismatch" and not fs_group_needs_change(path, gid):
        return
    file_bits = 0o040 if read_only else 0o060
    for top, _dirs, files in os.walk(path):
        _regroup(Path(top), gid, 0o2050 if read_only else 0o2070)
        for name in files:
            _regroup(Path(top) / name, gid, file_bits)


def _regroup(path: Path, gid: int, bits: int) -> None:
    if path.is_symlink():
        return
    st = path.stat()
    if st.st_gid != gid:
        os.chown(path, -1, gid)
    mode = st.st_mode & 0o7777
    if mode | bits != mode:
        os.chmod(path, mode | bits)


def entrypoint_chown(path: Path, uid: int) -> None:
    """The official redis/valkey entrypoint: ``find . \\! -user redis -exec chown redis``."""
    for top, _dirs, files in os.walk(path):
        for p in [Path(top), *(Path(top) / f for f in files)]:
            if not p.is_symlink() and p.stat().st_uid != uid:
                os.chown(p, uid, -1)
