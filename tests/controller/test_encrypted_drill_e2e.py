"""Restore drills of encrypted backups, end to end with the real ``backupctl operator``
(the substrate of test_operating_e2e.py: API emulator, kubelet stand-in running each
Job as the image's non-root user with its volumes' owners and modes, moto's S3): a
RedisBackup encrypting to an age key, with ``spec.verify.decryption`` naming the
identity's Secret, has its drill pass after the backup; the identity reached the drill
only as a mounted file. And the CRD takes ``spec.verify.decryption`` (CEL included)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pyrage
from controller.test_crds import _apiserver, _base_backup, parse, schema_errors

from backupctl.controller.spec_crypto import KEYS_DIR

from support.controller_e2e import (
    NS,
    backup_jobs,
    job_done,
    redis_backup,
    s3_storage,
    secret,
    wait,
)
from support.controller_e2e import backup_status as status
from support.controller_e2e import pod_statefulset as redis_statefulset
from support.kube.fixtures import K8sApi
from support.kube.kubelet import Kubelet
from support.kube.operator_process import Operator
from support.object_stores import S3Emulator
from support.redis_servers import RedisFactory, populate


def test_the_crd_takes_the_drills_decryption_keys() -> None:
    doc = _base_backup()
    doc["spec"]["verify"] = {
        "afterEachBackup": True,
        "decryption": {
            "identitySecret": {"name": "identity", "key": "key.txt"},
            "verifyKeyFrom": {"configMap": {"name": "signing-pub", "key": "signing.pub.pem"}},
            "requireSignatures": True,
            "s3CustomerKeySecret": {"name": "sse-c", "key": "customer.key"},
        },
    }
    assert schema_errors(doc) == []
    _, pruned, refused = _apiserver(doc)
    assert pruned == [] and refused == []  # nothing dropped, nothing refused
    assert parse(doc).verify.decryption.identity.name == "identity"
    bad = copy.deepcopy(doc)
    del bad["spec"]["verify"]["decryption"]["verifyKeyFrom"]
    assert any("needs verifyKeyFrom" in e for e in schema_errors(bad) + _apiserver(bad)[2])


def test_a_drill_of_an_encrypted_backup_passes_with_the_identity_as_a_file(
    api: K8sApi,
    kubelet: Kubelet,
    operator: Operator,
    redis_factory: RedisFactory,
    s3_server: S3Emulator,
) -> None:
    bucket = s3_server.new_bucket()
    server = redis_factory()
    keys = populate(server.client(), 200)
    redis_statefulset(api, "redis-e", server)
    identity = pyrage.x25519.Identity.generate()
    secret(api, "s3-creds", **{"access-key-id": "testing", "secret-access-key": "testing"})
    secret(api, "drill-identity", **{"key.txt": f"# drills\n{identity}\n"})
    operator.set_time(datetime(2030, 1, 1, 10, 0, 30, tzinfo=UTC))
    operator.start()
    api.create(
        redis_backup(
            "sealed",
            target={"kind": "StatefulSet", "name": "redis-e"},
            schedule="0 2 * * *",
            method="replication",
            storage=s3_storage(s3_server, bucket),
            encryption={"recipients": [str(identity.to_public())]},
            verify={
                "afterEachBackup": True,
                "decryption": {"identitySecret": {"name": "drill-identity", "key": "key.txt"}},
            },
        ),
        NS,
    )
    wait(operator, lambda: status(api, "sealed").get("nextScheduleTime"), 30, "scheduled")
    api.patch("redisbackups", NS, "sealed",
              {"metadata": {"annotations": {"backupctl.dev/run-now": "one"}}})  # fmt: skip
    (job,) = wait(operator, lambda: backup_jobs(api, "sealed"), 30, "the backup Job")
    wait(operator, lambda: job_done(api, job["metadata"]["name"]), 120, "the backup")
    s3 = s3_server.client()
    stored = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert any(k.endswith(".tar.zst.age") for k in stored), stored

    def drill() -> dict[str, object] | None:
        last = status(api, "sealed").get("lastVerification") or {}
        return last if last.get("result") in ("Passed", "Failed") else None

    result = wait(operator, drill, 120, "the drill's result")
    assert result["result"] == "Passed", result
    assert result["keys"] == keys
    (drill_job,) = backup_jobs(api, "sealed", component="verify")
    pod = drill_job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    path = c["args"][c["args"].index("--identity") + 1]
    assert path.startswith(KEYS_DIR + "/") and str(identity) not in str(drill_job)
