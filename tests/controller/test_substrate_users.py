"""The stand-ins run each container as its effective user, with its groups and privileges,
and mount volumes as the pod says (read-only, fsGroup), with plain Jobs and StatefulSets."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from support.kube.fixtures import K8sApi
from support.kube.kubelet import Kubelet
from support.kube.security_context import apply_fs_group, image_user
from support.kube.statefulset_controller import StatefulSets, wait_ready
from support.kube.workloads import finished, job, job_pods, statefulset, succeeded, waiting

NS = "ns"


@pytest.fixture
def api(k8s_api: K8sApi) -> K8sApi:
    k8s_api.create_namespace(NS)
    return k8s_api


def run(api: K8sApi, kubelet: Kubelet, name: str, script: str, **extra: object) -> str:
    """Run ``script`` in a Job; returns its output (stdout + stderr), Job must finish."""
    api.create(job(name, ["sh", "-c", script], **extra), NS)
    api.wait_for(lambda: finished(api, NS, name), timeout=15, message=f"job {name}")
    return kubelet.logs(name, NS)


def pvc_folder(tmp_path: Path, name: str, uid: int = 0, gid: int = 0, mode: int = 0o755) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    os.chown(folder, uid, gid)
    os.chmod(folder, mode)
    return folder


DATA = {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}
MOUNT = {"volumeMounts": [{"name": "data", "mountPath": "/data"}]}


def test_jobs_run_as_container_over_pod_over_image_user(api: K8sApi, kubelet: Kubelet) -> None:
    out = run(api, kubelet, "image", "id -u; id -g; id -G", container={"image": "backupctl:1"})
    assert out.split() == ["10001", "10001", "10001"]  # the Dockerfile's USER 10001:10001
    out = run(api, kubelet, "unknown", "id -u", container={"image": "busybox:1.36"})
    assert out.split() == ["0"]
    out = run(
        api,
        kubelet,
        "levels",
        "id -u; id -g; id -G",
        container={"image": "backupctl:1", "securityContext": {"runAsUser": 2000}},
        pod={
            "securityContext": {
                "runAsUser": 1000,
                "runAsGroup": 1500,
                "fsGroup": 3000,
                "supplementalGroups": [4000],
            }
        },
    )
    uid, gid, *groups = out.split()
    assert (uid, gid) == ("2000", "1500")
    assert {"3000", "4000"} <= set(groups)


def test_run_as_non_root_with_a_root_image_never_starts(api: K8sApi, kubelet: Kubelet) -> None:
    api.create(
        job(
            "nonroot",
            ["sh", "-c", "touch /tmp/started"],
            pod={"securityContext": {"runAsNonRoot": True}},
        ),
        NS,
    )

    def refused() -> dict[str, str] | None:
        pods = job_pods(api, NS, "nonroot")
        return waiting(pods[0]) if pods else None

    state = api.wait_for(refused, timeout=10, message="a waiting container")
    assert state["reason"] == "CreateContainerConfigError"
    assert "container has runAsNonRoot and image will run as root" in state["message"]
    assert kubelet.runs("nonroot", NS)[0].process is None


def test_a_user_without_access_is_refused_and_fs_group_grants_it(
    api: K8sApi, kubelet: Kubelet, tmp_path: Path
) -> None:
    kubelet.volumes["data"] = pvc_folder(tmp_path, "pvc", mode=0o755)
    user = {"securityContext": {"runAsUser": 5000, "runAsGroup": 5000}}
    out = run(api, kubelet, "denied", "echo x > /data/f", pod={**DATA, **user}, container=MOUNT)
    assert "Permission denied" in out
    assert not succeeded(api.get("jobs", NS, "denied") or {})

    fs = {"securityContext": {"runAsUser": 5000, "runAsGroup": 5000, "fsGroup": 6000}}
    out = run(api, kubelet, "granted", "echo x > /data/f && ls -n /data/f", pod={**DATA, **fs},
              container=MOUNT)  # fmt: skip
    assert succeeded(api.get("jobs", NS, "granted") or {}), out
    st = (tmp_path / "pvc").stat()
    assert st.st_gid == 6000 and st.st_mode & 0o2070 == 0o2070  # setgid, g+rwx
    f = (tmp_path / "pvc" / "f").stat()
    assert (f.st_uid, f.st_gid) == (5000, 6000)


def test_dropped_capabilities_and_no_new_privs_hold_for_root(
    api: K8sApi, kubelet: Kubelet, tmp_path: Path
) -> None:
    folder = pvc_folder(tmp_path, "pvc")
    (folder / "f").write_text("x")
    kubelet.volumes["data"] = folder
    script = "chown 7 /data/f; echo rc=$?; grep NoNewPrivs /proc/self/status"
    hardened = {
        **MOUNT,
        "securityContext": {"capabilities": {"drop": ["ALL"]}, "allowPrivilegeEscalation": False},
    }
    out = run(api, kubelet, "dropped", script, pod=DATA, container=hardened)
    assert "rc=1" in out and "Operation not permitted" in out
    assert "NoNewPrivs:\t1" in out
    assert (folder / "f").stat().st_uid == 0
    out = run(api, kubelet, "full", script, pod=DATA, container=MOUNT)
    assert "rc=0" in out and "NoNewPrivs:\t0" in out
    assert (folder / "f").stat().st_uid == 7


def test_read_only_mounts_and_secret_volumes_refuse_writes(
    api: K8sApi, kubelet: Kubelet, tmp_path: Path
) -> None:
    kubelet.volumes["data"] = pvc_folder(tmp_path, "pvc")
    api.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                "stringData": {"k": "v"}}, NS)  # fmt: skip
    pod = {"volumes": [*DATA["volumes"], {"name": "s", "secret": {"secretName": "s"}}]}
    mounts = {"volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True},
                               {"name": "s", "mountPath": "/s"}]}  # fmt: skip
    script = "touch /data/x; touch /s/x; cat /s/k; echo"
    out = run(api, kubelet, "ro", script, pod=pod, container=mounts)
    assert out.count("Read-only file system") == 2, out
    assert "v" in out.splitlines()
    assert not (tmp_path / "pvc" / "x").exists()


def _process_ids(pid: int) -> tuple[int, int]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])


def _save(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"SET k v\r\nSAVE\r\n")
        reply = b""
        while reply.count(b"\r\n") < 2:
            chunk = s.recv(64)
            if not chunk:
                break
            reply += chunk
    return reply


def test_official_redis_runs_as_999_on_a_0700_data_dir(
    api: K8sApi, statefulsets: StatefulSets, tmp_path: Path
) -> None:
    statefulsets.kubelet.volumes["data-redis-0"] = pvc_folder(tmp_path, "pvc", 999, 999, 0o700)
    api.create(statefulset("redis", "redis:7.4"), NS)
    wait_ready(api, NS, "redis", 1)
    pid = statefulsets.pid("redis-0", NS)
    assert pid is not None and _process_ids(pid) == (999, 999)
    assert _save(statefulsets.port("redis-0", NS)) == b"+OK\r\n+OK\r\n"
    dump = (tmp_path / "pvc" / "dump.rdb").stat()
    assert (dump.st_uid, dump.st_gid) == (999, 999)


def test_bitnami_like_target_runs_as_its_container_user(
    api: K8sApi, statefulsets: StatefulSets, tmp_path: Path
) -> None:
    statefulsets.kubelet.volumes["data-bn-0"] = pvc_folder(tmp_path, "pvc", 1001, 0, 0o770)
    api.create(statefulset("bn", "bitnami/redis:7.4", mount_path="/bitnami/redis/data",
                           container_security={"runAsUser": 1001, "runAsNonRoot": True}),
               NS)  # fmt: skip
    wait_ready(api, NS, "bn", 1)
    pid = statefulsets.pid("bn-0", NS)
    assert pid is not None and _process_ids(pid) == (1001, 0)
    assert _save(statefulsets.port("bn-0", NS)) == b"+OK\r\n+OK\r\n"


def test_a_root_redis_pod_with_run_as_non_root_waits(
    api: K8sApi, statefulsets: StatefulSets
) -> None:
    api.create(statefulset("nr", "redis:7.4", pod_security={"runAsNonRoot": True}), NS)

    def refused() -> dict[str, str] | None:
        pod = api.get("pods", NS, "nr-0")
        return waiting(pod) if pod else None

    state = api.wait_for(refused, timeout=10, message="a waiting redis container")
    assert state["reason"] == "CreateContainerConfigError"
    assert "image will run as root" in state["message"]
    assert statefulsets.pid("nr-0", NS) is None


@pytest.mark.parametrize(
    ("image", "user"),
    [
        ("backupctl:0.1.0", (10001, 10001)),
        ("ghcr.io/acme/backupctl@sha256:00", (10001, 10001)),
        ("docker.io/library/redis:7.4", (0, 0)),
        ("bitnami/redis:7.4", (1001, 0)),
        ("registry.local:5000/bitnami/valkey:8", (1001, 0)),
        ("busybox", (0, 0)),
    ],
)
def test_image_users(image: str, user: tuple[int, int]) -> None:
    found = image_user(image)
    assert (found.uid, found.gid) == user


def test_fs_group_change_policy_on_root_mismatch_skips_a_matching_root(tmp_path: Path) -> None:
    root = pvc_folder(tmp_path, "v", 0, 6000, 0o2770)
    (root / "f").write_text("x")
    os.chown(root / "f", 0, 0)  # (the setgid folder gave it 6000)
    apply_fs_group(root, 6000, "OnRootMismatch")
    assert (root / "f").stat().st_gid == 0  # the root matched: nothing below was touched
    apply_fs_group(root, 6000)  # Always
    assert (root / "f").stat().st_gid == 6000
    assert (root / "f").stat().st_mode & 0o060 == 0o060
