"""PodSecurity admission: the ``baseline`` and ``restricted`` levels of namespaces that ask.

Why: clusters label namespaces ``pod-security.kubernetes.io/enforce: restricted`` and then refuse
pods that could run as root or keep privileges; a controller whose Jobs miss one field never
gets a pod there, only a ``FailedCreate`` Event on the Job. :func:`violations` (pure) lists
what a pod spec breaks at a level with the wording of the real admission plugin, and
:func:`pod_security_check` refuses pod creation in an enforcing namespace with
``pods "x" is forbidden: violates PodSecurity "restricted:latest": ...``. Checked: host
namespaces, privileged, capabilities (baseline's allowed set; restricted: drop ALL, add at most
NET_BIND_SERVICE), hostPath volumes, hostPorts, allowPrivilegeEscalation, runAsNonRoot,
runAsUser=0, seccompProfile. Not checked: AppArmor, SELinux, procMount, sysctls, Windows
options, pinned level versions (``enforce-version``), ``warn``/``audit`` modes, exemptions;
the workload controllers' warnings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .admission import Write
from .errors import ApiError, JsonDict
from .object_store import ObjectStore
from .resources import PODS, ResourceRegistry

ENFORCE = "pod-security.kubernetes.io/enforce"
BASELINE_CAPS = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip
ALLOWED_PROFILES = ("RuntimeDefault", "Localhost")


def _containers(spec: JsonDict) -> list[JsonDict]:
    return [
        *(spec.get("initContainers") or []),
        *(spec.get("containers") or []),
        *(spec.get("ephemeralContainers") or []),
    ]


def _who(names: list[str]) -> str:
    quoted = ", ".join(f'"{n}"' for n in names)
    return f"container {quoted}" if len(names) == 1 else f"containers {quoted}"


def _caps(sc: JsonDict, which: str) -> list[str]:
    return [str(c) for c in (sc.get("capabilities") or {}).get(which) or []]


def _baseline(spec: JsonDict) -> list[str]:
    found: list[str] = []
    hosts = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    if hosts:
        found.append(f"host namespaces ({', '.join(hosts)})")
    containers = _containers(spec)
    privileged = [
        c["name"] for c in containers if (c.get("securityContext") or {}).get("privileged")
    ]
    if privileged:
        found.append(
            f"privileged ({_who(privileged)} must not set securityContext.privileged=true)"
        )
    extra: list[str] = []
    for c in containers:
        for cap in ((c.get("securityContext") or {}).get("capabilities") or {}).get("add") or []:
            if str(cap).upper().removeprefix("CAP_") not in BASELINE_CAPS:
                extra.append(f'{_who([c["name"]])} must not include "{cap}" in '
                             "securityContext.capabilities.add")  # fmt: skip
    if extra:
        found.append(f"non-default capabilities ({'; '.join(extra)})")
    host_paths = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
    if host_paths:
        found.append(f"hostPath volumes ({', '.join(f'volume {n!r}' for n in host_paths)})"
                     .replace("'", '"'))  # fmt: skip
    ports = [
        f"{_who([c['name']])} uses hostPort {p['hostPort']}"
        for c in containers
        for p in c.get("ports") or []
        if p.get("hostPort")
    ]
    if ports:
        found.append(f"hostPort ({'; '.join(ports)})")
    return found


def _restricted(spec: JsonDict) -> list[str]:
    found: list[str] = []
    pod_sc = spec.get("securityContext") or {}
    containers = _containers(spec)

    def sc(c: JsonDict) -> JsonDict:
        return dict(c.get("securityContext") or {})

    escalating = [
        c["name"] for c in containers if sc(c).get("allowPrivilegeEscalation") is not False
    ]
    if escalating:
        found.append(f"allowPrivilegeEscalation != false ({_who(escalating)} must set "
                     "securityContext.allowPrivilegeEscalation=false)")  # fmt: skip
    caps: list[str] = []
    not_dropping = [
        c["name"]
        for c in containers
        if "ALL"
        not in [str(d).upper() for d in (sc(c).get("capabilities") or {}).get("drop") or []]
    ]
    if not_dropping:
        caps.append(f'{_who(not_dropping)} must set securityContext.capabilities.drop=["ALL"]')
    for c in containers:
        for cap in _caps(sc(c), "add"):
            if str(cap).upper().removeprefix("CAP_") != "NET_BIND_SERVICE":
                caps.append(f'{_who([c["name"]])} must not include "{cap}" in '
                            "securityContext.capabilities.add")  # fmt: skip
    if caps:
        found.append(f"unrestricted capabilities ({'; '.join(caps)})")
    if any("hostPath" in v for v in spec.get("volumes") or []):
        names = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
        found.append("restricted volume types ("
                     + ", ".join(f'volume "{n}" uses restricted volume type "hostPath"'
                                 for n in names) + ")")  # fmt: skip
    pod_non_root = pod_sc.get("runAsNonRoot")
    unset = [c["name"] for c in containers
             if not (sc(c).get("runAsNonRoot") is True
                     or (sc(c).get("runAsNonRoot") is None and pod_non_root is True))]  # fmt: skip
    if pod_non_root is False or unset:
        who = f"pod or {_who(unset)}" if unset else "pod"
        found.append(f"runAsNonRoot != true ({who} must set securityContext.runAsNonRoot=true)")
    zero = []
    if pod_sc.get("runAsUser") == 0:
        zero.append("pod must not set runAsUser=0")
    names = [c["name"] for c in containers if sc(c).get("runAsUser") == 0]
    if names:
        zero.append(f"{_who(names)} must not set runAsUser=0")
    if zero:
        found.append(f"runAsUser=0 ({'; '.join(zero)})")
    pod_profile = (pod_sc.get("seccompProfile") or {}).get("type")
    bad = [
        c["name"]
        for c in containers
        if ((sc(c).get("seccompProfile") or {}).get("type") or pod_profile) not in ALLOWED_PROFILES
    ]
    if bad:
        found.append(
            f"seccompProfile (pod or {_who(bad)} must set securityContext.seccompProfile.type "
            'to "RuntimeDefault" or "Localhost")'
        )
    return found


def violations(spec: JsonDict, level: str) -> list[str]:
    """What ``spec`` (a pod spec) breaks at ``level`` (privileged, baseline, restricted)."""
    if level == "baseline":
        return _baseline(spec)
    if level == "restricted":
        return _baseline(spec) + _restricted(spec)
    return []


def pod_security_check(store: ObjectStore, types: ResourceRegistry) -> Callable[[Write], list[str]]:
    """The admission check: refuse a pod that violates its namespace's enforced level."""

    def check(write: Write) -> list[str]:
        if write.rt.storage_key != PODS or write.old is not None:
            return []
        ns = write.obj["metadata"].get("namespace")
        ns_obj = store.get(types.get("", "v1", "namespaces"), None, ns)
        labels: dict[str, Any] = ((ns_obj or {}).get("metadata") or {}).get("labels") or {}
        level = str(labels.get(ENFORCE, "privileged"))
        found = violations(write.obj.get("spec") or {}, level)
        if found:
            name = write.obj["metadata"]["name"]
            raise ApiError(
                403,
                "Forbidden",
                f'pods "{name}" is forbidden: violates PodSecurity "{level}:latest": '
                + ", ".join(found),
                {"name": name, "kind": "pods"},
            )
        return []

    return check
