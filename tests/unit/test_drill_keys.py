"""Restore drills of encrypted and signed backups: the verify Job built from
``spec.verify.decryption`` (and ``spec.encryption``) gets the identity, the
verify key and the SSE-C key as files (Secret mode 0440, an ``fsGroup`` so its
non-root user reads them), never a key in argv or env, and a command line the
``verify`` command accepts."""

from __future__ import annotations

from typing import Any

import pytest
import typer.main
from unit.test_encryption_jobs import DECRYPTION, ENCRYPTION, _backup, assert_valid

from backupctl.cli.app import app
from backupctl.controller.spec_crypto import KEYS_DIR, SECRET_FILE_MODE
from backupctl.controller.spec_fields import SpecError
from backupctl.controller.store_jobs import KEY_FILES_GROUP, verify_job

AFTER = {"afterEachBackup": True}
IDENTITY = {"identitySecret": {"name": "backup-identity", "key": "key.txt"}}
VERIFY_KEY = {"configMap": {"name": "pub", "key": "signing.pub.pem"}}
SSE_C = {"name": "sse-c", "key": "customer.key"}


def drill(**spec: Any) -> dict[str, Any]:
    return verify_job(_backup(**spec), name="nightly-20240101020000-verify", namespace="redis",
                      backup_name="nightly", backup_id="20240101T020000Z", owner=None,
                      image="backupctl:test")  # fmt: skip


def flags(job: dict[str, Any]) -> dict[str, str | None]:
    """Every ``--flag`` of the container's args with the value after it (None: a switch)."""
    (c,) = job["spec"]["template"]["spec"]["containers"]
    args, out = c["args"], {}
    for i, a in enumerate(args):
        if a.startswith("--"):
            nxt = args[i + 1] if i + 1 < len(args) else None
            out[a] = None if nxt is None or nxt.startswith("--") else nxt
    return out


def mounted_file(job: dict[str, Any], path: str) -> dict[str, Any]:
    """The volume that puts ``path`` in the container (read-only)."""
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    (mount,) = [m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    assert mount["readOnly"] is True
    (vol,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    return vol  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        # no keys at all: a plain drill, as before
        ({"verify": AFTER}, {}),
        # the identity only
        ({"verify": {**AFTER, "decryption": IDENTITY}},
         {"--identity": ("secret", "backup-identity", "key.txt")}),
        # the drill's own keys
        ({"verify": {**AFTER, "decryption": DECRYPTION}},
         {"--identity": ("secret", "backup-identity", "key.txt"),
          "--verify-key": ("secret", "backup-signing-pub", "signing.pub.pem"),
          "--require-signatures": None}),
        # no decryption: the backups' verify key (what prune trusts) still checks the drill
        ({"verify": AFTER, "encryption": ENCRYPTION},
         {"--verify-key": ("configMap", "backup-signing-pub", "signing.pub.pem"),
          "--require-signatures": None}),
        # the drill's verify key wins over spec.encryption's
        ({"verify": {**AFTER, "decryption": {**IDENTITY, "verifyKeyFrom": VERIFY_KEY}},
          "encryption": ENCRYPTION},
         {"--identity": ("secret", "backup-identity", "key.txt"),
          "--verify-key": ("configMap", "pub", "signing.pub.pem")}),
    ],
)  # fmt: skip
def test_the_drill_job_gets_its_keys_as_files(
    spec: dict[str, Any], want: dict[str, tuple[str, str, str] | None]
) -> None:
    job = drill(**spec)
    assert_valid(job)
    got = flags(job)
    key_flags = {f for f in got if f in ("--identity", "--verify-key", "--require-signatures")}
    assert key_flags == set(want)
    secrets = False
    for flag, source in want.items():
        if source is None:
            assert got[flag] is None
            continue
        kind, name, key = source
        path = got[flag]
        assert path is not None and path.startswith(KEYS_DIR + "/") and path.endswith("/" + key)
        vol = mounted_file(job, path)
        if kind == "secret":
            secrets = True
            assert vol["secret"]["secretName"] == name
            assert vol["secret"]["defaultMode"] == SECRET_FILE_MODE
            assert vol["secret"]["items"] == [{"key": key, "path": key}]
        else:
            assert vol["configMap"]["name"] == name
    pod_sc = job["spec"]["template"]["spec"]["securityContext"]
    assert pod_sc.get("fsGroup") == (KEY_FILES_GROUP if secrets else None)
    assert pod_sc["runAsNonRoot"] is True and "runAsUser" not in pod_sc


def test_a_drill_reads_an_sse_c_backup_with_the_key_file_of_either_spec() -> None:
    for spec in (
        {"verify": {**AFTER, "decryption": {"s3CustomerKeySecret": SSE_C}}},
        {"verify": AFTER, "encryption": {"s3CustomerKeySecret": SSE_C}},
    ):
        job = drill(**spec)
        (c,) = job["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        path = env["BACKUPCTL_S3_SSE_C_KEY_FILE"]
        assert path is not None and path.startswith(KEYS_DIR + "/")
        assert mounted_file(job, path)["secret"]["secretName"] == "sse-c"
        assert job["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == KEY_FILES_GROUP


def test_no_key_reaches_argv_or_env_and_the_verify_command_accepts_the_line() -> None:
    job = drill(verify={**AFTER, "decryption": DECRYPTION}, encryption=ENCRYPTION)
    (c,) = job["spec"]["template"]["spec"]["containers"]
    values = [*c["args"], *(str(e.get("value", "")) for e in c["env"])]
    assert not [v for v in values if "AGE-SECRET-KEY" in v or "PRIVATE KEY" in v]
    assert not [e for e in c["env"] if "IDENTITY" in e["name"] or "SIGNING" in e["name"]]
    assert c["command"] == ["backupctl"] and c["args"][0] == "verify"
    group = typer.main.get_command(app)
    sub = group.commands["verify"]  # type: ignore[attr-defined]
    sub_ctx = sub.make_context("verify", list(c["args"][1:]))  # refuses an unknown flag
    assert [str(p) for p in sub_ctx.params["identity"]] == [flags(job)["--identity"]]
    assert sub_ctx.params["require_signatures"] is True


@pytest.mark.parametrize(
    ("decryption", "message"),
    [
        ({"requireSignatures": True}, r"spec\.verify\.decryption\.requireSignatures"),
        ({"identitySecret": {"name": "Bad_Name", "key": "k"}}, r"identitySecret\.name"),
        ({"identitySecret": {"name": "ok", "key": "../k"}}, r"identitySecret\.key"),
    ],
)
def test_bad_drill_keys_are_refused_naming_the_field(
    decryption: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        _backup(verify={**AFTER, "decryption": decryption})
