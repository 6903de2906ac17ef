"""Proves the Kubernetes test substrate (tests/support/kube) with real clients.

The ``kubernetes`` client, ``kubectl`` and a real ``kopf run`` talk HTTP to the emulator;
the kubelet stand-in runs Jobs as local processes. Each test gets a fresh emulator.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import kmock
import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from support.kube.api_client import ApiStatusError
from support.kube.fixtures import K8sApi
from support.kube.kubelet import Kubelet

HERE = Path(__file__).parents[1] / "support" / "kube"
CRD = HERE / "testdata" / "backup-crd.yaml"
GROUP, VERSION, PLURAL = "emu.backupctl.dev", "v1alpha1", "backups"
NS = "ns"


def backup(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Backup",
        "metadata": {"name": name, "labels": {"app": "redis"}},
        "spec": spec or {"target": "redis", "s3": {"bucket": "b"}},
    }


@pytest.fixture
def api(k8s_api: K8sApi) -> K8sApi:
    k8s_api.apply(CRD)
    k8s_api.create_namespace(NS)
    return k8s_api


@pytest.fixture
def kube(api: K8sApi) -> Iterator[client.ApiClient]:
    configuration = client.Configuration()
    config.load_kube_config(str(api.kubeconfig), client_configuration=configuration)
    with client.ApiClient(configuration) as api_client:
        yield api_client


def status_of(e: ApiException) -> dict[str, Any]:
    return json.loads(cast(str, e.body))  # type: ignore[no-any-return]


# -- the kubernetes client ---------------------------------------------------------------------


def test_custom_objects_with_the_kubernetes_client(api: K8sApi, kube: client.ApiClient) -> None:
    co: Any = client.CustomObjectsApi(kube)  # dict bodies and results: not its typed models
    created = co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, backup("one"))
    meta = created["metadata"]
    assert meta["namespace"] == NS and meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1 and int(meta["resourceVersion"]) > 0
    co.create_namespaced_custom_object(
        GROUP,
        VERSION,
        NS,
        PLURAL,
        dict(backup("two"), metadata={"name": "two", "labels": {"app": "x"}}),
    )

    listed = co.list_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, label_selector="app=redis"
    )
    assert [i["metadata"]["name"] for i in listed["items"]] == ["one"]
    assert int(listed["metadata"]["resourceVersion"]) >= int(meta["resourceVersion"])
    assert (
        len(
            co.list_namespaced_custom_object(
                GROUP, VERSION, NS, PLURAL, label_selector="app in (x,redis)"
            )["items"]
        )
        == 2
    )
    assert (
        len(
            co.list_cluster_custom_object(
                GROUP, VERSION, PLURAL, field_selector="metadata.name=two"
            )["items"]
        )
        == 1
    )

    # PUT: a spec change bumps generation; a stale resourceVersion is a conflict.
    replaced = co.replace_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "one", dict(created, spec=dict(created["spec"], keepLast=3))
    )
    assert replaced["metadata"]["generation"] == 2 and replaced["spec"]["keepLast"] == 3
    with pytest.raises(ApiException) as exc:
        co.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "one", created)
    assert exc.value.status == 409 and status_of(exc.value)["reason"] == "Conflict"

    # /status changes only status and not generation; main patches do not change status.
    patched = co.patch_namespaced_custom_object_status(
        GROUP, VERSION, NS, PLURAL, "one", {"status": {"phase": "Ready"}, "spec": {"keepLast": 9}}
    )
    assert patched["status"] == {"phase": "Ready"} and patched["spec"]["keepLast"] == 3
    assert patched["metadata"]["generation"] == 2
    patched = co.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        NS,
        PLURAL,
        "one",
        {"status": {"phase": "Hacked"}, "metadata": {"labels": {"l": "1"}}},
    )
    assert patched["status"] == {"phase": "Ready"} and patched["metadata"]["labels"]["l"] == "1"
    assert patched["metadata"]["generation"] == 2
    again = co.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "one", {"metadata": {"labels": {"l": "1"}}}
    )
    assert again["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]  # no-op

    with pytest.raises(ApiException) as exc:
        co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, backup("one"))
    assert exc.value.status == 409 and status_of(exc.value)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as exc:
        co.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "nope")
    assert status_of(exc.value)["message"] == f'{PLURAL}.{GROUP} "nope" not found'


def test_core_resources_namespaces_and_discovery(api: K8sApi, kube: client.ApiClient) -> None:
    core: Any = client.CoreV1Api(kube)  # dict bodies: not its typed models
    assert {NS, "default"} <= {n.metadata.name for n in core.list_namespace().items}
    assert api.request("GET", "/api/v1")["groupVersion"] == "v1"
    kinds = {r["kind"] for r in api.request("GET", f"/apis/{GROUP}/{VERSION}")["resources"]}
    assert kinds == {"Backup"}
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_config_map("missing", {"metadata": {"name": "c"}})
    assert (
        exc.value.status == 404
        and status_of(exc.value)["message"] == 'namespaces "missing" not found'
    )

    secret = core.create_namespaced_secret(
        NS, {"metadata": {"name": "s"}, "stringData": {"k": "v"}}
    )
    assert secret.data == {"k": "dg=="}
    pod = core.create_namespaced_pod(
        NS,
        {"metadata": {"generateName": "p-"}, "spec": {"containers": [{"name": "c", "image": "x"}]}},
    )
    assert pod.metadata.name.startswith("p-") and len(pod.metadata.name) == 7
    assert pod.status.phase == "Pending"
    # Strategic merge patch merges containers by name.
    patched = core.patch_namespaced_pod(
        pod.metadata.name,
        NS,
        {"spec": {"containers": [{"name": "c", "env": [{"name": "A", "value": "1"}]}]}},
    )
    assert (
        patched.spec.containers[0].image == "x" and patched.spec.containers[0].env[0].value == "1"
    )


def test_watch_resume_timeout_and_selector(api: K8sApi, kube: client.ApiClient) -> None:
    core: Any = client.CoreV1Api(kube)  # dict bodies: not its typed models
    first = core.create_namespaced_config_map(NS, {"metadata": {"name": "a", "labels": {"w": "1"}}})
    rv = first.metadata.resource_version
    core.patch_namespaced_config_map("a", NS, {"data": {"x": "1"}})
    core.create_namespaced_config_map(NS, {"metadata": {"name": "b"}})
    core.patch_namespaced_config_map("a", NS, {"metadata": {"labels": {"w": "2"}}})

    # Resuming from a resourceVersion replays what happened after it, filtered by the selector;
    # leaving the selector is a DELETED event; timeoutSeconds ends the stream.
    started = time.monotonic()
    events = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            core.list_namespaced_config_map,
            NS,
            label_selector="w=1",
            resource_version=rv,
            timeout_seconds=1,
        )
    ]
    assert events == [("MODIFIED", "a"), ("DELETED", "a")]
    assert 0.9 < time.monotonic() - started < 5

    with urllib.request.urlopen(
        f"{api.url}/api/v1/namespaces/{NS}/configmaps?watch=true&timeoutSeconds=1"
    ) as r:
        assert r.headers["Content-Type"] == "application/json"
        lines = [json.loads(line) for line in r.read().splitlines()]
    assert {(e["type"], e["object"]["metadata"]["name"]) for e in lines} >= {
        ("ADDED", "a"),
        ("ADDED", "b"),
    }


# -- kubectl -----------------------------------------------------------------------------------


def test_kubectl(api: K8sApi, tmp_path: Path) -> None:
    manifest = tmp_path / "b.yaml"
    manifest.write_text(json.dumps(backup("k1")) + "\n")
    assert (
        "created" in api.kubectl("apply", "--validate=false", "-f", str(manifest), "-n", NS).stdout
    )
    assert "k1" in api.kubectl("get", "ebk", "-n", NS, "-l", "app=redis").stdout
    assert "No resources" in api.kubectl("get", "backups", "-n", NS, "-l", "app=none").stderr

    def later() -> None:
        time.sleep(0.5)
        api.kubectl(
            "patch",
            "backup",
            "k1",
            "-n",
            NS,
            "--subresource=status",
            "--type=merge",
            "-p",
            '{"status": {"phase": "Done"}}',
        )

    patcher = threading.Thread(target=later)
    patcher.start()
    out = api.kubectl(
        "wait", "backup/k1", "-n", NS, "--for=jsonpath={.status.phase}=Done", "--timeout=10s"
    )
    patcher.join()
    assert "condition met" in out.stdout
    table = api.kubectl("get", "backups", "-A").stdout.splitlines()  # server-side printer columns
    assert table[0].split() == ["NAMESPACE", "NAME", "TARGET", "PHASE", "AGE"]
    assert table[1].split()[:4] == [NS, "k1", "redis", "Done"]
    bad = api.kubectl(
        "apply",
        "--validate=false",
        "-n",
        NS,
        "-f",
        "-",
        check=False,
        input=json.dumps(backup("k2", target="r", s3={"bucket": "b"}, compression="lz4")),
    )
    assert bad.returncode != 0
    # kubectl rewords the 422 Status from its causes, exactly as with a real API server.
    assert 'The Backup "k2" is invalid: spec.compression: Unsupported value: "lz4"' in bad.stderr


# -- schema validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"s3": {"bucket": "b"}}, "spec.target: Required value"),
        (
            {"target": "r", "s3": {"bucket": "b"}, "schedule": "every day"},
            'spec.schedule: Invalid value: "every day": spec.schedule in body should match \'^(@(hourly|daily|weekly))',  # noqa: E501
        ),
        (
            {"target": "r", "s3": {"bucket": "b"}, "keepLast": -1},
            "spec.keepLast: Invalid value: -1: spec.keepLast in body should be greater than or equal to 0",  # noqa: E501
        ),
        (
            {"target": 5, "s3": {"bucket": "b"}},
            'spec.target: Invalid value: "integer": spec.target in body must be of type string: "integer"',  # noqa: E501
        ),
        (
            {"target": "r", "s3": {"bucket": "b"}, "gcs": {"bucket": "g"}},
            'spec: Invalid value: "object": exactly one of s3 or gcs must be set',
        ),
        (
            {"target": "", "gcs": {}},
            'spec.target: Invalid value: "": spec.target in body should be at least 1 chars long',
        ),
    ],
)
def test_schema_validation_answers_422(
    api: K8sApi, kube: client.ApiClient, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(ApiException) as exc:
        client.CustomObjectsApi(kube).create_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, backup("bad", **spec)
        )
    status = status_of(exc.value)
    assert exc.value.status == 422 and status["reason"] == "Invalid"
    assert status["message"].startswith(f'Backup.{GROUP} "bad" is invalid: ')
    assert message in status["message"]
    assert status["details"]["causes"][0]["field"]


def test_schema_defaults_pruning_and_updates(api: K8sApi, kube: client.ApiClient) -> None:
    co: Any = client.CustomObjectsApi(kube)  # dict bodies and results: not its typed models
    body = backup("d", target="r", s3={"bucket": "b"}, unknown=1)
    created = co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    assert created["spec"] == {
        "target": "r",
        "s3": {"bucket": "b", "prefix": "backups"},
        "compression": "zstd",
    }
    with pytest.raises(ApiStatusError) as exc:  # fieldValidation=Strict refuses unknown fields
        api.request(
            "POST",
            f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}",
            backup("e", target="r", gcs={}, x=1),
            params={"fieldValidation": "Strict"},
        )
    assert exc.value.status == 400 and 'unknown field "spec.x"' in exc.value.message
    with pytest.raises(ApiException) as exc2:  # patches are validated too
        co.patch_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "d", {"spec": {"compression": "lz4"}}
        )
    assert exc2.value.status == 422
    bad_crd = CRD.read_text().replace("filter(x, x).size() == 1", "filter(x, x).size( ==")
    with pytest.raises(ApiStatusError) as exc3:
        api.apply(
            bad_crd.replace("backups", "others").replace("Backup", "Other").replace("ebk", "eot")
        )
    assert exc3.value.status == 422 and "compilation failed" in exc3.value.message


# -- deletion, finalizers, garbage collection ---------------------------------------------------


def test_finalizers_and_garbage_collection(api: K8sApi) -> None:
    owner = api.create(
        dict(backup("owner"), metadata={"name": "owner", "finalizers": ["test/hold"]}), NS
    )
    ref = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Backup",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    api.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "dep", "ownerReferences": [ref]},
        },
        NS,
    )
    api.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "orphan",
                "ownerReferences": [dict(ref, uid="00000000-0000-0000-0000-000000000000")],
            },
        },
        NS,
    )
    api.wait_for(
        lambda: api.get("configmaps", NS, "orphan") is None, message="dangling owner collected"
    )

    deleting = api.delete(PLURAL, NS, "owner")
    assert deleting is not None and deleting["metadata"]["deletionTimestamp"]
    assert api.get(PLURAL, NS, "owner") is not None and api.get("configmaps", NS, "dep") is not None
    api.patch(PLURAL, NS, "owner", {"metadata": {"finalizers": None}})
    assert api.get(PLURAL, NS, "owner") is None
    assert api.get("configmaps", NS, "dep") is None  # background propagation

    # batch/v1 Jobs orphan their pods by default, like the real API; background deletes them.
    for policy, survives in ((None, True), ("Background", False)):
        job = api.create(
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": "j"},
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "c", "image": "x"}],
                        }
                    }
                },
            },
            NS,
        )
        api.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": "j-pod",
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": "j",
                            "uid": job["metadata"]["uid"],
                        }
                    ],
                },
                "spec": {"containers": [{"name": "c", "image": "x"}]},
            },
            NS,
        )
        api.delete("jobs", NS, "j", propagation=policy)
        pod = api.get("pods", NS, "j-pod")
        assert (pod is not None) is survives
        if pod is not None:
            assert not pod["metadata"].get("ownerReferences")
            api.delete("pods", NS, "j-pod")

    # Foreground: the owner stays (with a finalizer) until its dependents are gone.
    cm = api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fg"}}, NS)
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "fg-dep",
                "finalizers": ["test/hold"],
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "fg",
                        "uid": cm["metadata"]["uid"],
                    }
                ],
            },
        },
        NS,
    )
    api.delete("configmaps", NS, "fg", propagation="Foreground")
    assert "foregroundDeletion" in api.get("configmaps", NS, "fg")["metadata"]["finalizers"]  # type: ignore[index]
    api.patch("secrets", NS, "fg-dep", {"metadata": {"finalizers": None}})
    assert api.get("configmaps", NS, "fg") is None and api.get("secrets", NS, "fg-dep") is None


def test_namespace_and_crd_deletion_cascade(api: K8sApi) -> None:
    api.create_namespace("gone")
    api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}, "gone")
    api.create(dict(backup("held"), metadata={"name": "held", "finalizers": ["test/hold"]}), "gone")
    api.delete("namespaces", None, "gone")
    assert api.get("namespaces", None, "gone")["status"]["phase"] == "Terminating"  # type: ignore[index]
    assert api.get("configmaps", "gone", "c") is None
    with pytest.raises(ApiStatusError) as exc:
        api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d"}}, "gone")
    assert exc.value.status == 403 and "being terminated" in exc.value.message
    api.patch(PLURAL, "gone", "held", {"metadata": {"finalizers": None}})
    assert api.get("namespaces", None, "gone") is None

    api.create(backup("x"), NS)
    api.delete("customresourcedefinitions", None, f"{PLURAL}.{GROUP}")
    assert api.get("customresourcedefinitions", None, f"{PLURAL}.{GROUP}") is None
    kinds = {g["name"] for g in api.request("GET", "/apis")["groups"]}
    assert GROUP not in kinds


# -- the kubelet stand-in ----------------------------------------------------------------------


def job(name: str, command: list[str], **extra: Any) -> dict[str, Any]:
    container = {
        "name": "main",
        "image": "ignored",
        "command": command,
        **extra.pop("container", {}),
    }
    pod_spec = {"restartPolicy": "Never", "containers": [container], **extra.pop("pod", {})}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, **extra, "template": {"spec": pod_spec}},
    }


def finished(api: K8sApi, name: str) -> dict[str, Any] | None:
    obj = api.get("jobs", NS, name)
    conds = {c["type"] for c in (obj or {}).get("status", {}).get("conditions") or []}
    return obj if conds & {"Complete", "Failed"} else None


def test_kubelet_runs_jobs_with_env_volumes_and_termination_message(
    api: K8sApi, kubelet: Kubelet, tmp_path: Path
) -> None:
    data = tmp_path / "pvc"
    data.mkdir()
    (data / "dump.rdb").write_text("REDIS")
    kubelet.volumes["data-pvc"] = data
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "data": {"key": "czNjcjN0"},
            "stringData": {"user": "me"},
        },
        NS,
    )
    script = (
        'echo "$PASSWORD $USERNAME $POD $NS $(cat /creds/key)"; cp /data/dump.rdb /out/copy.rdb; '
        'printf \'{"id":"b1","size":5}\' > /dev/termination-log; pwd'
    )
    api.create(
        job(
            "ok",
            ["sh", "-c", script],
            container={
                "workingDir": "/out",
                "env": [
                    {
                        "name": "PASSWORD",
                        "valueFrom": {"secretKeyRef": {"name": "creds", "key": "key"}},
                    },
                    {
                        "name": "USERNAME",
                        "valueFrom": {"secretKeyRef": {"name": "creds", "key": "user"}},
                    },
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                ],
                "volumeMounts": [
                    {"name": "data", "mountPath": "/data", "readOnly": True},
                    {"name": "out", "mountPath": "/out"},
                    {"name": "creds", "mountPath": "/creds"},
                ],
            },
            pod={
                "volumes": [
                    {"name": "data", "persistentVolumeClaim": {"claimName": "data-pvc"}},
                    {"name": "out", "emptyDir": {}},
                    {"name": "creds", "secret": {"secretName": "creds"}},
                ]
            },
        ),
        NS,
    )
    done = api.wait_for(lambda: finished(api, "ok"), timeout=15, message="job ok finished")
    status = done["status"]
    assert (
        status["succeeded"] == 1
        and status["active"] == 0
        and status["startTime"]
        and status["completionTime"]
    )
    assert [c["type"] for c in status["conditions"]] == ["SuccessCriteriaMet", "Complete"]

    pods = api.list("pods", NS, labels="job-name=ok")
    assert len(pods) == 1
    pod = pods[0]
    assert pod["metadata"]["name"].startswith("ok-") and len(pod["metadata"]["name"]) == 8
    assert pod["metadata"]["ownerReferences"][0]["uid"] == done["metadata"]["uid"]
    assert pod["metadata"]["labels"]["controller-uid"] == done["metadata"]["uid"]
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    assert json.loads(terminated["message"]) == {"id": "b1", "size": 5}
    assert pod["status"]["phase"] == "Succeeded"

    out = kubelet.logs("ok").splitlines()
    assert out[0] == f"s3cr3t me {pod['metadata']['name']} {NS} s3cr3t"
    # /out is the emptyDir, bind-mounted at a mount point in the pod's sandbox
    sandbox = kubelet.sandbox(NS, pod["metadata"]["name"])
    assert (sandbox / "volumes" / "out" / "copy.rdb").read_text() == "REDIS"
    assert out[1].startswith(str(sandbox))


def test_kubelet_retries_fails_and_reports_config_errors(api: K8sApi, kubelet: Kubelet) -> None:
    api.create(job("flaky", ["sh", "-c", "echo boom >&2; exit 3"], backoffLimit=2), NS)
    api.create(job("slow", ["sleep", "30"], activeDeadlineSeconds=1), NS)
    api.create(
        job(
            "nosecret",
            ["true"],
            container={
                "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "later", "key": "k"}}}]
            },
        ),
        NS,
    )

    failed = api.wait_for(lambda: finished(api, "flaky"), timeout=15, message="flaky failed")
    assert failed["status"]["failed"] == 3
    assert [(c["type"], c["reason"]) for c in failed["status"]["conditions"]] == [
        ("FailureTarget", "BackoffLimitExceeded"),
        ("Failed", "BackoffLimitExceeded"),
    ]
    assert len(api.list("pods", NS, labels="job-name=flaky")) == 3
    assert kubelet.logs("flaky", attempt=0) == "boom\n"
    assert api.kubectl("logs", "job/flaky", "-n", NS).stdout == "boom\n"
    term = api.list("pods", NS, labels="job-name=flaky")[0]["status"]["containerStatuses"][0][
        "state"
    ]["terminated"]
    assert term["exitCode"] == 3 and term["reason"] == "Error"

    slow = api.wait_for(lambda: finished(api, "slow"), timeout=15, message="slow hit its deadline")
    assert slow["status"]["conditions"][-1]["reason"] == "DeadlineExceeded"

    def waiting() -> dict[str, Any] | None:
        pods = api.list("pods", NS, labels="job-name=nosecret")
        statuses = pods[0]["status"].get("containerStatuses") if pods else None
        return statuses[0]["state"].get("waiting") if statuses else None

    state = api.wait_for(waiting, timeout=10, message="CreateContainerConfigError")
    assert state == {"reason": "CreateContainerConfigError", "message": 'secret "later" not found'}
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "later"},
            "stringData": {"k": "v"},
        },
        NS,
    )
    nosecret = api.wait_for(lambda: finished(api, "nosecret"), timeout=10)
    assert nosecret["status"]["succeeded"] == 1


# -- a real kopf operator ----------------------------------------------------------------------


@pytest.fixture
def operator(api: K8sApi, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    calls = tmp_path / "calls.log"
    calls.touch()
    log = open(tmp_path / "operator.log", "wb")  # noqa: SIM115 - closed below
    kopf = shutil.which("kopf", path=str(Path(sys.executable).parent)) or "kopf"
    proc = subprocess.Popen(
        [kopf, "run", "--standalone", "-n", NS, "--verbose", str(HERE / "operator_example.py")],
        env=dict(api.env, EMU_OPERATOR_CALLS=str(calls)),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc, calls
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()
        if os.environ.get("EMU_SHOW_OPERATOR_LOG"):
            print((tmp_path / "operator.log").read_text())


def test_kopf_operator_end_to_end(
    api: K8sApi, kubelet: Kubelet, operator: tuple[Any, Path]
) -> None:
    proc, calls = operator
    api.create(backup("b1"), NS)
    done = cast(  # wait_for returns the first truthy value: never None
        dict[str, Any],
        api.wait_for(
            lambda: (
                (b := api.get(PLURAL, NS, "b1"))
                and b.get("status", {}).get("phase") == "Completed"
                and b
            ),
            timeout=30,
            message="the operator completed b1",
        ),
    )
    assert done["status"]["result"] == {"ok": 1}
    assert done["status"]["create_job"] == {"job": "b1-job"}  # kopf's handler result, via /status
    assert "kopf.zalando.org/KopfFinalizerMarker" in done["metadata"]["finalizers"]

    job_obj = api.get("jobs", NS, "b1-job")
    assert (
        job_obj is not None
        and job_obj["metadata"]["ownerReferences"][0]["uid"] == done["metadata"]["uid"]
    )
    assert {c["type"] for c in job_obj["status"]["conditions"]} == {
        "SuccessCriteriaMet",
        "Complete",
    }
    pod = api.list("pods", NS, labels="job-name=b1-job")[0]
    assert json.loads(pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"]) == {
        "ok": 1
    }

    # Watches end (as on an API server restart); kopf reconnects and does not re-run handlers.
    def backup_watches() -> int:
        return api.call(
            lambda: sum(
                1
                for r in api.emulator.requests
                if r.action == kmock.action.WATCH and r.resource and r.resource.plural == PLURAL
            )
        )

    watches = backup_watches()
    assert api.close_watches() >= 2
    api.wait_for(lambda: backup_watches() > watches, timeout=10, message="kopf re-watching")
    api.patch(PLURAL, NS, "b1", {"metadata": {"labels": {"touched": "yes"}}})
    api.create(backup("b2"), NS)
    api.wait_for(lambda: "create b2" in calls.read_text(), timeout=20, message="b2 handled")
    assert calls.read_text().count("create b1") == 1

    # Deletion: kopf's finalizer holds the object until its delete handler ran; then GC.
    api.delete(PLURAL, NS, "b1")
    api.wait_for(
        lambda: api.get(PLURAL, NS, "b1") is None, timeout=20, message="b1 released by kopf"
    )
    assert "delete b1" in calls.read_text()
    api.wait_for(lambda: api.get("jobs", NS, "b1-job") is None, timeout=5, message="job collected")
    assert proc.poll() is None
