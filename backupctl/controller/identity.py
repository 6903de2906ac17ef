"""Who a data Job runs as: the Redis container's effective user and groups (pure).

Why this exists: a Job that stages, swaps or reads a Redis data volume must
run as the user Redis runs as, or it cannot read a 0700 data directory nor
leave files Redis can write. Kubernetes resolves the user of a container
from its own ``securityContext`` first and the pod's second; the volume's
group comes from the pod's ``fsGroup`` and ``supplementalGroups``.
:func:`effective_run_as` does the same resolution on a pod manifest.
When no user is set anywhere (the image decides, e.g. the official redis
image's entrypoint steps down to uid 999), the owner of the data volume,
read by a tiny probe Job (:func:`probe_args`), stands in for it
(:meth:`RunAs.with_owner`). :func:`security_contexts` turns the result into
the pod- and container-level ``securityContext`` of every Job the
controller makes: PodSecurity ``restricted`` compatible, never root.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The probe: the owner of the data directory as JSON in the termination message.
PROBE_SCRIPT = (
    "import json,os,sys;s=os.stat(sys.argv[1]);"
    "open(sys.argv[2],'w').write(json.dumps({'ok':True,'uid':s.st_uid,'gid':s.st_gid}))"
)


class RootUser(ValueError):
    """The Redis container runs as root: no data Job may, so none is made."""


@dataclass(frozen=True)
class RunAs:
    """A user and its groups; ``user`` None: not known from the manifests."""

    user: int | None = None
    group: int | None = None
    fs_group: int | None = None
    supplemental_groups: tuple[int, ...] = ()

    @property
    def known(self) -> bool:
        return self.user is not None

    def with_owner(self, uid: int, gid: int) -> RunAs:
        """The data volume's owner stands in for what the manifests leave open."""
        return RunAs(
            user=self.user if self.user is not None else uid,
            group=self.group if self.group is not None else gid,
            fs_group=self.fs_group,
            supplemental_groups=self.supplemental_groups,
        )

    def to_status(self) -> dict[str, Any]:
        """The camelCase fields recorded in a RedisRestore's ``status.pods[]``."""
        out: dict[str, Any] = {}
        if self.user is not None:
            out["runAsUser"] = self.user
        if self.group is not None:
            out["runAsGroup"] = self.group
        if self.fs_group is not None:
            out["fsGroup"] = self.fs_group
        if self.supplemental_groups:
            out["supplementalGroups"] = list(self.supplemental_groups)
        return out

    @classmethod
    def from_status(cls, raw: Mapping[str, Any]) -> RunAs:
        """What :meth:`to_status` wrote (other keys are ignored)."""
        return cls(
            user=_int(raw.get("runAsUser")),
            group=_int(raw.get("runAsGroup")),
            fs_group=_int(raw.get("fsGroup")),
            supplemental_groups=tuple(
                g for g in (_int(x) for x in raw.get("supplementalGroups") or []) if g is not None
            ),
        )


def effective_run_as(pod: Mapping[str, Any], container: Mapping[str, Any]) -> RunAs:
    """``container``'s user and group (its own ``securityContext`` over the
    pod's, as the kubelet resolves them) and the pod's volume groups."""
    pod_sc = (pod.get("spec") or {}).get("securityContext") or {}
    own = container.get("securityContext") or {}

    def pick(key: str) -> int | None:
        value = _int(own.get(key))
        return value if value is not None else _int(pod_sc.get(key))

    return RunAs(
        user=pick("runAsUser"),
        group=pick("runAsGroup"),
        fs_group=_int(pod_sc.get("fsGroup")),
        supplemental_groups=tuple(
            g for g in (_int(x) for x in pod_sc.get("supplementalGroups") or []) if g is not None
        ),
    )


def probe_owner(result: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """``(uid, gid)`` from a probe Job's termination message, if it has them."""
    if not result or not result.get("ok"):
        return None
    uid, gid = _int(result.get("uid")), _int(result.get("gid"))
    return (uid, gid) if uid is not None and gid is not None else None


def probe_args(data_dir: str, termination_log: str) -> list[str]:
    """The probe container's whole command line (Python is in the image)."""
    return ["python3", "-c", PROBE_SCRIPT, data_dir, termination_log]


def security_contexts(
    run_as: RunAs | None, what: str = ""
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pod-level and container-level ``securityContext`` of a Job running
    as ``run_as`` (None: the image's non-root user). :class:`RootUser` for
    uid 0: data Jobs never run as root (``what`` names the pod in the error)."""
    run_as = run_as or RunAs()
    if run_as.user == 0:
        where = f" {what}" if what else ""
        raise RootUser(
            f"the Redis container{where} runs as root (uid 0), and backupctl's Jobs never do: "
            "set securityContext.runAsUser (and runAsGroup/fsGroup) on the Redis container "
            "to a non-root user that owns the data directory"
        )
    pod: dict[str, Any] = {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
        **run_as.to_status(),  # the same four pod-level fields, same names
    }
    container: dict[str, Any] = {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return pod, container


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


__all__ = [
    "PROBE_SCRIPT",
    "RootUser",
    "RunAs",
    "effective_run_as",
    "probe_args",
    "probe_owner",
    "security_contexts",
]
