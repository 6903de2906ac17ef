"""How the kubelet stand-in sets up a container it runs as a local process.

Why: a container sees paths (``/data``, ``/dev/termination-log``) and an environment that a
kubelet builds from the Pod spec and from objects in the API; without a runtime, the stand-ins
(:mod:`.kubelet` for Jobs, :mod:`.statefulset_controller` for Redis pods) must build the same
from local folders. :class:`ContainerSetup` resolves the env (``value``, ``valueFrom``
``secretKeyRef``/``configMapKeyRef``/``fieldRef``, ``envFrom``), backs each volume mount by a
folder, rewrites mount paths in the command, args, env and ``workingDir``, and refuses as a
kubelet does (:class:`ConfigError`: ``CreateContainerConfigError``, ``Unschedulable``). The
container's identity comes from :mod:`.security_context` (``fsGroup`` is applied to volumes
here, at mount); the process is started through :mod:`.mount_namespace`'s launcher, which
bind-mounts each volume folder (read-only where the mount or the volume kind says so) and
switches to that identity.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .api_client import K8sClient
from .mount_namespace import Mount, launcher, mount_point, runtime_mounts
from .security_context import (
    Identity,
    ImageUser,
    RunAsRootRefused,
    apply_fs_group,
    effective_identity,
)

JsonDict = dict[str, Any]
READ_ONLY_KINDS = ("secret", "configMap", "downwardAPI", "projected")  # always mounted ro


class ConfigError(Exception):
    """The container cannot be configured (CreateContainerConfigError, Unschedulable)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ContainerSetup:
    """The command, env, working directory and termination-log file of a pod's container."""

    def __init__(
        self,
        api: K8sClient,
        volumes: dict[str, Path],
        executables: dict[str, str],
        base_env: dict[str, str],
        image_users: dict[str, ImageUser] | None = None,
    ) -> None:
        self.api = api
        self.volumes = volumes  # PVC claim name (or "secret:<name>", ...) -> local folder
        self.executables = executables  # command word -> local executable
        self.base_env = base_env  # added to every process env
        self.image_users = image_users  # image pattern -> its USER (security_context's table)

    def secret(self, ns: str, name: str) -> dict[str, str] | None:
        secret = self.api.get("v1/secrets", ns, name)
        if secret is None:
            return None
        data = {
            k: base64.b64decode(v).decode(errors="replace")
            for k, v in (secret.get("data") or {}).items()
        }
        data.update(secret.get("stringData") or {})
        return data

    def configmap(self, ns: str, name: str) -> dict[str, str] | None:
        cm = self.api.get("v1/configmaps", ns, name)
        return None if cm is None else dict(cm.get("data") or {})

    def field(self, pod: JsonDict, path: str) -> str:
        meta = pod["metadata"]
        m = re.match(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
        values = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta.get("uid", ""),
            "spec.nodeName": pod["spec"].get("nodeName", ""),
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
            "status.podIP": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
        }
        return values.get(path, "")

    def env(self, pod: JsonDict, container: JsonDict) -> dict[str, str]:
        ns = pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for kind, loader in (("secretRef", self.secret), ("configMapRef", self.configmap)):
                ref = source.get(kind)
                if ref:
                    data = loader(ns, ref["name"])
                    if data is None and not ref.get("optional"):
                        what = "secret" if kind == "secretRef" else "configmap"
                        raise ConfigError(
                            "CreateContainerConfigError", f'{what} "{ref["name"]}" not found'
                        )
                    env.update({prefix + k: v for k, v in (data or {}).items()})
        for item in container.get("env") or []:
            name = item["name"]
            if "value" in item or "valueFrom" not in item:
                env[name] = expand(str(item.get("value", "")), env)
                continue
            source = item["valueFrom"]
            for kind, loader, what in (
                ("secretKeyRef", self.secret, "Secret"),
                ("configMapKeyRef", self.configmap, "ConfigMap"),
            ):
                ref = source.get(kind)
                if not ref:
                    continue
                data = loader(ns, ref["name"])
                if data is None or ref["key"] not in data:
                    if ref.get("optional"):
                        break
                    if data is None:
                        raise ConfigError(
                            "CreateContainerConfigError",
                            f'{what.lower()} "{ref["name"]}" not found',
                        )
                    raise ConfigError(
                        "CreateContainerConfigError",
                        f"couldn't find key {ref['key']} in {what} {ns}/{ref['name']}",
                    )
                env[name] = data[ref["key"]]
            if "fieldRef" in source:
                env[name] = self.field(pod, source["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in source:
                env[name] = "0"
        return env

    def volume_dir(self, pod: JsonDict, volume: JsonDict, root: Path) -> Path:
        """The local folder backing ``volume`` for a pod whose sandbox is ``root``."""
        ns = pod["metadata"]["namespace"]
        name = volume["name"]
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            if claim not in self.volumes:
                raise ConfigError(
                    "Unschedulable",
                    f'persistentvolumeclaim "{claim}" not found '
                    f"(give the kubelet stand-in a folder for it: volumes[{claim!r}])",
                )
            return self.volumes[claim]
        for kind, key, loader in (
            ("secret", "secretName", self.secret),
            ("configMap", "name", self.configmap),
        ):
            if kind in volume:
                ref = volume[kind][key]
                override = self.volumes.get(f"{kind.lower()}:{ref}")
                if override is not None:
                    return override
                data = loader(ns, ref)
                if data is None and not volume[kind].get("optional"):
                    raise ConfigError(
                        "CreateContainerConfigError", f'{kind.lower()} "{ref}" not found'
                    )
                target = root / "volumes" / name
                target.mkdir(parents=True, exist_ok=True)
                items = volume[kind].get("items") or [{"key": k, "path": k} for k in data or {}]
                mode = int(volume[kind].get("defaultMode", 0o644))
                for item in items:
                    if data and item["key"] in data:
                        path = target / item["path"]
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_text(data[item["key"]])
                        os.chmod(path, int(item.get("mode", mode)))
                return target
        if "hostPath" in volume and f"hostPath:{volume['hostPath']['path']}" in self.volumes:
            return self.volumes[f"hostPath:{volume['hostPath']['path']}"]
        target = root / "volumes" / name  # emptyDir, hostPath and anything else
        target.mkdir(parents=True, exist_ok=True)
        os.chmod(target, 0o777)  # an emptyDir is world-writable, as the kubelet makes it
        return target

    def identity(self, pod: JsonDict, container: JsonDict) -> Identity:
        """The container's effective user (:mod:`.security_context`); refuses runAsNonRoot."""
        try:
            return effective_identity(pod, container, self.image_users)
        except RunAsRootRefused as e:
            raise ConfigError("CreateContainerConfigError", str(e)) from e

    def mounts(
        self, pod: JsonDict, container: JsonDict, sandbox: Path
    ) -> tuple[list[Mount], dict[str, str]]:
        """The bind mounts of ``container`` and the mount path -> path-in-process mapping;
        ``fsGroup`` is applied to each volume that takes it (not hostPath), as at mount."""
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        pod_sc = pod["spec"].get("securityContext") or {}
        fs_group = pod_sc.get("fsGroup")
        mounts: list[Mount] = []
        mapping: dict[str, str] = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"])
            if volume is None:
                raise ConfigError("CreateContainerConfigError", f"volume {mount['name']} not found")
            local = self.volume_dir(pod, volume, sandbox)
            always_ro = any(k in volume for k in READ_ONLY_KINDS)
            if fs_group is not None and "hostPath" not in volume:
                apply_fs_group(
                    local, int(fs_group), pod_sc.get("fsGroupChangePolicy"), read_only=always_ro
                )
            if mount.get("subPath"):
                local = local / mount["subPath"]
                local.mkdir(parents=True, exist_ok=True)
            staging = mount_point(sandbox, len(mounts), local)
            mounts.append(Mount(local, staging, bool(mount.get("readOnly")) or always_ro))
            mapping[mount["mountPath"].rstrip("/") or "/"] = str(local)
        return mounts, mapping

    def prepare(self, pod: JsonDict, container: JsonDict, sandbox: Path) -> Prepared:
        """Everything to start ``container``'s process; ``sandbox``: a folder of this pod's
        under a base every uid can traverse (mount points, termination log, home, emptyDirs)."""
        identity = self.identity(pod, container)
        sandbox.mkdir(parents=True, exist_ok=True)
        os.chmod(sandbox, 0o755)
        mounts, mapping = self.mounts(pod, container, sandbox)
        mounts += runtime_mounts(identity, sandbox, len(mounts))
        tlog = sandbox / "termination-log"
        tlog.write_bytes(b"")
        os.chmod(tlog, 0o666)
        mapping[container.get("terminationMessagePath", "/dev/termination-log")] = str(tlog)
        env = self.env(pod, container)
        env = {k: rewrite(v, mapping) for k, v in env.items()}
        command = [expand(a, env) for a in container.get("command") or []]
        args = [expand(a, env) for a in container.get("args") or []]
        argv = [rewrite(a, mapping) for a in command + args]
        if not argv:
            raise ConfigError("CreateContainerConfigError", "no command: images are not emulated")
        argv[0] = self.executables.get(argv[0], shutil.which(argv[0]) or argv[0])
        home = sandbox / "home"
        home.mkdir(exist_ok=True)
        os.chown(home, identity.uid, identity.gid)
        # PYTHONPATH too: a Job must import the same backupctl as the test (a worktree's).
        python_path = {k: v for k, v in os.environ.items() if k == "PYTHONPATH"}
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            **python_path,
            "HOME": str(home),
            "HOSTNAME": pod["metadata"]["name"],
            "LANG": "C.UTF-8",
            "TMPDIR": tempfile.gettempdir(),
            **self.base_env,
            **env,
            "BACKUPCTL_PATH_MAP": json.dumps(mapping),
        }
        cwd = container.get("workingDir")
        if cwd:
            cwd = rewrite(cwd, mapping)
            if not any(cwd == m or cwd.startswith(m + "/") for m in mapping.values()):
                cwd = str(sandbox / "rootfs" / cwd.lstrip("/"))
                Path(cwd).mkdir(parents=True, exist_ok=True)
                os.chmod(cwd, 0o777)
        return Prepared(
            launcher(mounts, identity, argv, cwd or str(sandbox)),
            full_env,
            str(sandbox),
            tlog,
            identity,
            mapping,
        )


@dataclass
class Prepared:
    """A container ready to start: ``argv`` (the launcher's) runs it as ``identity``."""

    argv: list[str]
    env: dict[str, str]
    cwd: str  # for Popen; the process itself changes to its working directory
    termination_log: Path
    identity: Identity
    mapping: dict[str, str]  # mount path -> the path the process sees


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion (``$$(VAR)`` escapes); unknown references stay."""

    def sub(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return "$(" + m.group(1) + ")"
        return env.get(m.group(2), m.group(0))

    return re.sub(r"\$\$\(([A-Za-z_][A-Za-z0-9_]*)\)|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, value)


def rewrite(value: str, mapping: dict[str, str]) -> str:
    """Replace each mount path appearing as a whole path prefix by its local folder.

    One pass (longest path first at each position), so a replacement is never rewritten
    again: with ``/tmp`` mounted, ``/data`` -> ``/tmp/pytest-.../data`` must stay as is."""
    if not mapping:
        return value
    paths = "|".join(re.escape(p) for p in sorted(mapping, key=len, reverse=True))
    pattern = r"(?<![\w./-])(" + paths + r")(?=/|$|[^\w.-])"
    return re.sub(pattern, lambda m: mapping[m.group(1)], value)
