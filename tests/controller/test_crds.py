"""The YAML users apply: CRDs, the install manifests, the examples.

- every Kubernetes object in crds/, manifests/ and examples/ validates with
  kubernetes-validate; every custom resource validates against its CRD's
  openAPIV3Schema (jsonschema, unknown fields refused as kubectl's strict
  field validation does) and its CEL rules (cel-python, when installed);
- the seed's YAMLs apply with only the apiVersion changed;
- invalid resources are refused with a readable message, by the schema or,
  for what a schema cannot know (cron semantics, time zones), by spec.py;
- `kubectl kustomize manifests/` builds.
"""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from backupctl.controller import schedule
from backupctl.controller import spec as specmod
from backupctl.controller.spec_fields import SpecError

try:
    import celpy
    import celpy.adapter

    CEL = True
except ImportError:  # pragma: no cover - cel-python is an optional test dependency
    CEL = False

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSIONS = ["1.31.0", kubernetes_validate.utils.latest_version()]
SEED_API_VERSION = "redis.redis.opstreelabs.in/v1beta2"
SEED_MD = [ROOT.parent / "shared" / "seed-examples.md", ROOT / "shared" / "seed-examples.md"]


# --- helpers -----------------------------------------------------------------


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def yaml_files(*dirs: str) -> list[Path]:
    return sorted(
        p for d in dirs for p in (ROOT / d).glob("*.yaml") if p.name != "kustomization.yaml"
    )


@functools.cache
def crds() -> dict[str, dict[str, Any]]:
    """Kind -> CRD (shared: do not modify)."""
    return {d["spec"]["names"]["kind"]: d for p in yaml_files("crds") for d in load_docs(p)}


def schema_of(kind: str) -> dict[str, Any]:
    crd = crds()[kind]
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _to_json_schema(node: Any) -> Any:
    """openAPIV3Schema -> JSON Schema with unknown fields refused (kubectl
    apply's default strict field validation) and Kubernetes extensions dropped."""
    if isinstance(node, list):
        return [_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {
        k: (v if k in ("enum", "default", "required") else _to_json_schema(v))
        for k, v in node.items()
        if not k.startswith("x-kubernetes-")
    }
    if k8s_props := node.get("properties"):
        out["properties"] = {k: _to_json_schema(v) for k, v in k8s_props.items()}
        if "additionalProperties" not in node and not node.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    return out


def _walk_rules(
    value: Any, schema: dict[str, Any], path: str
) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(path, rule, value) for every CEL rule that applies to ``value``."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule, value
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                yield from _walk_rules(value[key], sub, f"{path}.{key}" if path else key)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, v in value.items():
                yield from _walk_rules(v, extra, f"{path}.{key}" if path else key)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            yield from _walk_rules(v, schema["items"], f"{path}[{i}]")


def cel_errors(obj: dict[str, Any], schema: dict[str, Any], old: Any = None) -> list[str]:
    """Evaluate the CEL rules of ``schema`` on ``obj`` as the API server does
    on create (transition rules, which use oldSelf, only when ``old`` is given)."""
    errors = []
    for path, rule, value in _walk_rules(obj, schema, ""):
        uses_old = "oldSelf" in rule["rule"]
        if uses_old and old is None:
            continue
        activation = {"self": celpy.adapter.json_to_cel(value)}
        if uses_old:
            old_value = _lookup(old, path)
            if old_value is None:
                continue
            activation["oldSelf"] = celpy.adapter.json_to_cel(old_value)
        result = _cel_program(rule["rule"]).evaluate(activation)
        if result is not True and not (isinstance(result, celpy.celtypes.BoolType) and result):
            errors.append(f"{path}: {' '.join(rule['message'].split())}")
    return errors


@functools.cache
def _cel_program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _lookup(obj: Any, path: str) -> Any:
    for part in path.split(".") if path else []:
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def _schema_nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for key, sub in node.get("properties", {}).items():
        yield from _schema_nodes(sub, f"{path}.{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _schema_nodes(node[key], f"{path}[{key}]")


def _rules(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Every CEL rule declared anywhere in ``schema``."""
    nodes = _schema_nodes(schema)
    return [rule for _, node in nodes for rule in node.get("x-kubernetes-validations", [])]


def schema_errors(obj: dict[str, Any]) -> list[str]:
    """What a Kubernetes API server (with kubectl's strict field validation)
    would say about a custom resource, as ``path: message`` lines."""
    schema = schema_of(obj["kind"])
    errors = [
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in _validator(obj["kind"]).iter_errors(obj)
    ]
    if not errors and CEL:
        errors = cel_errors(obj, schema)
    return errors


@functools.cache
def _validator(kind: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(_to_json_schema(schema_of(kind)))


def is_custom(doc: dict[str, Any]) -> bool:
    return doc["apiVersion"].startswith(specmod.API_GROUP + "/")


def parse(doc: dict[str, Any]) -> Any:
    if doc["kind"] == "RedisBackup":
        return specmod.parse_backup(doc["spec"])
    return specmod.parse_restore(doc["spec"])


def seed_docs() -> list[dict[str, Any]]:
    """The RedisBackup/RedisRestore YAMLs of shared/seed-examples.md, as written."""
    md = next((p for p in SEED_MD if p.exists()), None)
    if md is None:
        pytest.skip("shared/seed-examples.md is not beside the repository")
    text = md.read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    blocks += re.findall(r"<<EOF\n(.*?)EOF\n", text, re.S)
    docs = [d for b in blocks for d in yaml.safe_load_all(b) if d]
    return [d for d in docs if d["apiVersion"] == SEED_API_VERSION]


# --- every file validates ----------------------------------------------------

ALL_FILES = yaml_files("crds", "manifests/base", "examples")


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(ROOT)))
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_builtin_object_validates_with_kubernetes_validate(path: Path, version: str) -> None:
    for doc in load_docs(path):
        if is_custom(doc):
            continue
        kubernetes_validate.validate(doc, version, strict=True)


#: Examples of built-in kinds only (validated above and, for the prune CronJob, run by
#: tests/unit/test_prune_cronjob.py); every other example holds a custom resource.
BUILTIN_ONLY_EXAMPLES = {"prune-cronjob.yaml"}


@pytest.mark.parametrize("path", yaml_files("examples"), ids=lambda p: p.name)
def test_every_example_custom_resource_matches_its_crd_and_parses(path: Path) -> None:
    custom = [d for d in load_docs(path) if is_custom(d)]
    if path.name in BUILTIN_ONLY_EXAMPLES:
        assert not custom and load_docs(path), f"{path.name}: built-in objects only"
        return
    assert custom, f"{path.name} has no RedisBackup/RedisRestore"
    for doc in custom:
        assert schema_errors(doc) == []
        parse(doc)


def test_examples_cover_each_store_and_target_kind() -> None:
    docs = [d for p in yaml_files("examples") for d in load_docs(p) if is_custom(d)]
    stores = {next(iter(d["spec"]["storage"])) for d in docs if "storage" in d["spec"]}
    kinds = {d["spec"].get("target", {}).get("kind") for d in docs}
    assert stores == {"s3", "azureBlob", "gcs"}
    assert {"StatefulSet", "RedisReplication", "RedisFailover"} <= kinds
    assert any("redisClusterName" in d["spec"] for d in docs)
    assert any("schedule" not in d["spec"] and d["kind"] == "RedisBackup" for d in docs)
    assert {d["kind"] for d in docs} == {"RedisBackup", "RedisRestore"}


def test_examples_only_reference_secrets_by_name_and_key() -> None:
    for path in yaml_files("examples"):
        for doc in load_docs(path):
            if is_custom(doc):
                assert "stringData" not in str(doc) and "password:" not in yaml.safe_dump(
                    doc
                ).replace("passwordSecret:", "")


def _apiserver(doc: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    """The test API emulator's create path: prune, default, validate (with CEL)."""
    from support.kube.schema import process_custom_resource

    obj = copy.deepcopy(doc)
    pruned, errors = process_custom_resource(obj, schema_of(doc["kind"]))
    return obj, pruned, [str(e) for e in errors]


@pytest.mark.parametrize("path", yaml_files("examples"), ids=lambda p: p.name)
def test_examples_pass_the_emulators_apiserver_path_and_defaults_match_spec_py(
    path: Path,
) -> None:
    for doc in (d for d in load_docs(path) if is_custom(d)):
        stored, pruned, errors = _apiserver(doc)
        assert (pruned, errors) == ([], [])
        # The API server's defaults are the ones spec.py applies itself.
        assert parse(stored) == parse(doc)


# --- the seed's YAMLs --------------------------------------------------------


def test_seed_yamls_apply_with_only_the_api_version_changed() -> None:
    docs = seed_docs()
    assert {d["kind"] for d in docs} == {"RedisBackup", "RedisRestore"}
    assert len(docs) == 3
    for doc in docs:
        doc = {**doc, "apiVersion": specmod.GROUP_VERSION}
        assert schema_errors(doc) == [], doc["metadata"]["name"]
        parse(doc)


def test_seed_restore_key_is_read_as_the_backup_id() -> None:
    (restore,) = [d for d in seed_docs() if d["kind"] == "RedisRestore"]
    parsed = specmod.parse_restore(restore["spec"])
    assert parsed.backup == "backup-20240101-120000"


def test_examples_carry_the_seed_yamls_unchanged_but_for_the_api_version() -> None:
    ours = {
        d["metadata"]["name"]: d
        for p in yaml_files("examples")
        for d in load_docs(p)
        if is_custom(d)
    }
    for doc in seed_docs():
        assert ours[doc["metadata"]["name"]] == {**doc, "apiVersion": specmod.GROUP_VERSION}


# --- invalid resources are refused -------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _base_backup() -> dict[str, Any]:
    return {
        "apiVersion": specmod.GROUP_VERSION,
        "kind": "RedisBackup",
        "metadata": {"name": "b", "namespace": "redis"},
        "spec": {
            "redisClusterName": "redis-cluster",
            "schedule": "0 2 * * *",
            "storage": {
                "s3": {
                    "bucket": "my-redis-backups",
                    "accessKeyIdSecret": {"name": "aws", "key": "id"},
                    "secretAccessKeySecret": {"name": "aws", "key": "secret"},
                }
            },
            "retention": {"keepDaily": 7},
        },
    }


def _base_restore() -> dict[str, Any]:
    doc = _base_backup()
    doc["kind"] = "RedisRestore"
    del doc["spec"]["schedule"], doc["spec"]["retention"]
    doc["spec"]["backupId"] = "backup-20240101-120000"
    return doc


def _set(path: str, value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            del node[last]
        else:
            node[last] = value

    return mutate


def _chain(*mutations: Mutation) -> Mutation:
    """The mutations applied in order."""

    def mutate(doc: dict[str, Any]) -> None:
        for m in mutations:
            m(doc)

    return mutate


GCS = {"bucket": "bkt", "credentialsSecret": {"name": "gcs", "key": "sa.json"}}
AZ = {"container": "backups", "storageAccount": "acct"}

# (id, base, mutation, schema refuses it, what both say)
INVALID: list[tuple[str, Callable[[], dict[str, Any]], Mutation, bool, str]] = [
    (
        "two-storages",
        _base_backup,
        _set("spec.storage.gcs", GCS),
        True,
        "set exactly one of s3, azureBlob, gcs",
    ),
    (
        "no-storage-backend",
        _base_backup,
        _set("spec.storage.s3", None),
        True,
        "set exactly one of s3, azureBlob, gcs",
    ),
    ("no-storage", _base_backup, _set("spec.storage", None), True, "storage"),
    (
        "lock-of-another-store",
        _base_backup,
        _set("spec.encryption", {"gcsRetention": {"mode": "Locked", "days": 3}}),
        True,
        "the lock must match the store: s3ObjectLock with storage.s3, azureImmutability "
        "with storage.azureBlob, gcsRetention with storage.gcs",
    ),
    (
        "server-side-encryption-of-another-store",
        _base_backup,
        _set("spec.encryption", {"azureEncryptionScope": "backups-cmk"}),
        True,
        "the server-side encryption must match the store: s3ServerSide and s3CustomerKeySecret "
        "with storage.s3, azureEncryptionScope with storage.azureBlob, gcsKmsKeyName with "
        "storage.gcs",
    ),
    ("cron-garbage", _base_backup, _set("spec.schedule", "every day"), True, schedule.CRON_FORMAT),
    (
        "cron-six-fields",
        _base_backup,
        _set("spec.schedule", "0 0 2 * * *"),
        True,
        schedule.CRON_FORMAT,
    ),
    (
        "cron-unknown-macro",
        _base_backup,
        _set("spec.schedule", "@reboot"),
        True,
        schedule.CRON_FORMAT,
    ),
    (
        "cron-out-of-range",
        _base_backup,
        _set("spec.schedule", "0 25 * * *"),
        False,
        "not a valid cron expression",
    ),
    (
        "cron-never-fires",
        _base_backup,
        _set("spec.schedule", "0 0 31 2 *"),
        False,
        "not a valid cron expression",
    ),
    ("cron-random", _base_backup, _set("spec.schedule", "R 2 * * *"), False, "random (R)"),
    (
        "unknown-time-zone",
        _base_backup,
        _set("spec.timeZone", "Mars/Olympus_Mons"),
        False,
        "unknown time zone",
    ),
    ("negative-keep", _base_backup, _set("spec.retention.keepDaily", -1), True, "keepDaily"),
    ("bad-keep-within", _base_backup, _set("spec.retention.keepWithin", "2w"), True, "keepWithin"),
    (
        "both-targets",
        _base_backup,
        _set("spec.target", {"name": "redis"}),
        True,
        "set exactly one of redisClusterName or target",
    ),
    (
        "no-target",
        _base_backup,
        _set("spec.redisClusterName", None),
        True,
        "set exactly one of redisClusterName or target",
    ),
    (
        "target-name-and-selector",
        _base_backup,
        _chain(
            _set("spec.redisClusterName", None),
            _set("spec.target", {"name": "r", "selector": {"matchLabels": {"app": "r"}}}),
        ),
        True,
        "set exactly one of name or selector",
    ),
    (
        "kind-with-selector",
        _base_backup,
        _chain(
            _set("spec.redisClusterName", None),
            _set("spec.target", {"kind": "Redis", "selector": {"matchLabels": {"app": "r"}}}),
        ),
        True,
        "kind goes with target.name, not with a selector",
    ),
    (
        "empty-selector",
        _base_backup,
        _chain(
            _set("spec.redisClusterName", None),
            _set("spec.target", {"selector": {"matchLabels": {}}}),
        ),
        True,
        "set matchLabels or matchExpressions",
    ),
    (
        "half-a-secret-ref",
        _base_backup,
        _set("spec.storage.s3.accessKeyIdSecret", {"name": "a"}),
        True,
        "key",
    ),
    (
        "one-s3-secret-only",
        _base_backup,
        _set("spec.storage.s3.secretAccessKeySecret", None),
        True,
        "set both accessKeyIdSecret and secretAccessKeySecret, or neither (to use the pod's own "
        "identity)",
    ),
    (
        "azure-two-credentials",
        _base_backup,
        lambda d: d["spec"].__setitem__(
            "storage",
            {
                "azureBlob": {
                    **AZ,
                    "storageAccountKeySecret": {"name": "a", "key": "k"},
                    "connectionStringSecret": {"name": "a", "key": "c"},
                }
            },
        ),
        True,
        "set storageAccountKeySecret or connectionStringSecret, not both",
    ),
    (
        "azure-no-account",
        _base_backup,
        lambda d: d["spec"].__setitem__("storage", {"azureBlob": {"container": "backups"}}),
        True,
        "storageAccount is required unless connectionStringSecret is set",
    ),
    (
        "backup-with-restore-key",
        _base_backup,
        _set("spec.storage.s3.key", "backup-20240101-120000.tar.gz"),
        True,
        "names a backup to restore; it belongs in a RedisRestore, not a RedisBackup",
    ),
    ("bad-method", _base_backup, _set("spec.method", "copy"), True, "method"),
    (
        "bad-concurrency",
        _base_backup,
        _set("spec.concurrencyPolicy", "Skip"),
        True,
        "concurrencyPolicy",
    ),
    (
        "restore-two-backups",
        _base_restore,
        _set("spec.latest", True),
        True,
        "set exactly one of backupId, latest: true, or storage.<backend>.key",
    ),
    (
        "restore-no-backup",
        _base_restore,
        _set("spec.backupId", None),
        True,
        "set exactly one of backupId, latest: true, or storage.<backend>.key",
    ),
    (
        "restore-storage-and-from-backup",
        _base_restore,
        _set("spec.fromBackup", "nightly"),
        True,
        "set exactly one of storage or fromBackup (a RedisBackup's name)",
    ),
    (
        "restore-neither-storage-nor-from-backup",
        _base_restore,
        _set("spec.storage", None),
        True,
        "set exactly one of storage or fromBackup (a RedisBackup's name)",
    ),
    ("restore-bad-id", _base_restore, _set("spec.backupId", "yesterday"), True, "backupId"),
    # issue 18: keys for encrypted and signed backups (controller/spec_crypto.py)
    (
        "encryption-not-an-age-recipient",
        _base_backup,
        _set("spec.encryption", {"recipients": ["age1ok", "-----BEGIN PRIVATE KEY-----"]}),
        True,
        "must be an age recipient: an X25519 key (age1...) or an SSH public key "
        "(ssh-ed25519 ... / ssh-rsa ...)",
    ),
    (
        "encryption-require-signatures-without-key",
        _base_backup,
        _set(
            "spec.encryption",
            {"signingKeySecret": {"name": "s", "key": "k"}, "requireSignatures": True},
        ),
        True,
        "needs verifyKeyFrom (the public key)",
    ),
    (
        "encryption-recipients-from-both",
        _base_backup,
        _set(
            "spec.encryption",
            {
                "recipientsFrom": {
                    "configMap": {"name": "a", "key": "k"},
                    "secret": {"name": "b", "key": "k"},
                }
            },
        ),
        True,
        "set exactly one of configMap and secret ({name, key})",
    ),
    (
        "decryption-require-signatures-without-key",
        _base_restore,
        _set(
            "spec.decryption",
            {"identitySecret": {"name": "id", "key": "key.txt"}, "requireSignatures": True},
        ),
        True,
        "needs verifyKeyFrom (the public key)",
    ),
]


@pytest.mark.parametrize(
    "base, mutate, schema_refuses, message",
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_invalid_resources_are_refused_with_a_readable_message(
    base: Callable[[], dict[str, Any]], mutate: Mutation, schema_refuses: bool, message: str
) -> None:
    doc = base()
    assert schema_errors(doc) == [] and parse(doc)  # the base is valid
    mutate(doc)
    with pytest.raises(SpecError) as err:
        parse(doc)
    assert message in str(err.value)
    assert str(err.value).startswith("spec")
    errors = schema_errors(doc)
    _, _, emulated = _apiserver(doc)
    if not schema_refuses:
        assert errors == emulated == []  # spec.py is the layer that catches it
    elif not errors and not CEL:
        pytest.skip("refused by a CEL rule; cel-python is not installed")
    else:
        assert any(message in e for e in errors), errors
        assert emulated, "the test API emulator must refuse it too"


def test_unknown_fields_are_refused_by_the_schema() -> None:
    doc = _base_backup()
    doc["spec"]["retention"]["keepForever"] = True
    assert any("keepForever" in e for e in schema_errors(doc))


def test_every_cel_rule_has_an_invalid_case_worded_the_same_by_spec_py() -> None:
    """Each CEL rule is exercised above with its own message, which spec.py
    uses too (the case asserts both), so users read one wording."""
    worded = [case[4] for case in INVALID if case[3]]
    for kind in ("RedisBackup", "RedisRestore"):
        for rule in _rules(schema_of(kind)):
            if "oldSelf" in rule["rule"]:
                continue  # test_restore_spec_cannot_change_after_creation
            message = " ".join(rule["message"].split())
            assert any(message.endswith(w) for w in worded), message


def test_restore_spec_cannot_change_after_creation() -> None:
    if not CEL:
        pytest.skip("cel-python is not installed")
    old = _base_restore()
    new = copy.deepcopy(old)
    new["spec"]["backupId"] = "backup-20240102-120000"
    schema = schema_of("RedisRestore")
    assert cel_errors(old, schema, old=old) == []
    assert any("cannot be changed" in e for e in cel_errors(new, schema, old=old))


# --- the CRDs themselves -----------------------------------------------------


@pytest.mark.parametrize("kind", ["RedisBackup", "RedisRestore"])
def test_crd_schema_is_structural_and_its_defaults_are_valid(kind: str) -> None:
    schema = schema_of(kind)
    for path, node in _schema_nodes(schema):
        if node.get("x-kubernetes-int-or-string"):
            continue
        assert "type" in node, f"{path}: every schema node needs a type"
        assert not ("properties" in node and "additionalProperties" in node), path
        assert "$ref" not in node, path
        if "default" in node:
            jsonschema.validate(node["default"], _to_json_schema(node))
        if node.get("x-kubernetes-list-type") == "map":
            assert set(node["x-kubernetes-list-map-keys"]) <= set(node["items"]["required"])


@pytest.mark.parametrize("kind", ["RedisBackup", "RedisRestore"])
def test_crd_cel_rules_compile(kind: str) -> None:
    if not CEL:
        pytest.skip("cel-python is not installed")
    env = celpy.Environment()
    rules = _rules(schema_of(kind))
    assert rules
    for rule in rules:
        env.compile(rule["rule"])
        assert rule["message"].strip()


@pytest.mark.parametrize(
    "kind, short, columns",
    [
        ("RedisBackup", "rb", ["Target", "Schedule", "Last Success", "Phase", "Age"]),
        ("RedisRestore", "rrestore", ["Target", "Backup", "Phase", "Keys", "Age"]),
    ],
)
def test_crd_names_and_printer_columns(kind: str, short: str, columns: list[str]) -> None:
    crd = crds()[kind]
    assert crd["spec"]["group"] == specmod.API_GROUP
    assert short in crd["spec"]["names"]["shortNames"]
    assert "backupctl" in crd["spec"]["names"]["categories"]
    version = crd["spec"]["versions"][0]
    assert version["name"] == specmod.API_VERSION and version["subresources"] == {"status": {}}
    printed = version["additionalPrinterColumns"]
    assert [c["name"] for c in printed if not c.get("priority")] == columns
    schema = version["schema"]["openAPIV3Schema"]
    for column in printed:
        node = schema
        for part in column["jsonPath"].lstrip(".").split("."):
            if part == "metadata":
                break
            node = node["properties"][part]


def test_status_phases_match_spec_py() -> None:
    for kind, phases in (
        ("RedisBackup", specmod.BACKUP_PHASES),
        ("RedisRestore", specmod.RESTORE_PHASES),
    ):
        enum = schema_of(kind)["properties"]["status"]["properties"]["phase"]["enum"]
        assert tuple(enum) == phases


def test_shared_sections_are_identical_in_both_crds() -> None:
    backup = schema_of("RedisBackup")["properties"]["spec"]["properties"]
    restore = schema_of("RedisRestore")["properties"]["spec"]["properties"]
    for key in (
        "redisClusterName",
        "target",
        "resources",
        "tolerations",
        "image",
        "serviceAccountName",
    ):
        assert backup[key] == restore[key], key
    storage_b, storage_r = copy.deepcopy(backup["storage"]), copy.deepcopy(restore["storage"])
    for s in (storage_b, storage_r):
        s["x-kubernetes-validations"] = s["x-kubernetes-validations"][:1]
        s.pop("description")
        for backend in s["properties"].values():
            backend["properties"]["key"].pop("description")
    assert storage_b == storage_r


def test_crd_defaults_are_the_dataclass_defaults() -> None:
    props = schema_of("RedisBackup")["properties"]["spec"]["properties"]
    parsed = parse(_base_backup())
    assert props["timeZone"]["default"] == parsed.time_zone
    assert props["suspend"]["default"] is parsed.suspend
    assert props["concurrencyPolicy"]["default"] == parsed.concurrency_policy
    assert props["method"]["default"] == parsed.method
    assert props["compression"]["default"] == parsed.compression
    assert props["preferReplica"]["default"] is parsed.prefer_replica
    assert props["backoffLimit"]["default"] == parsed.job.backoff_limit
    assert (
        props["successfulJobsHistoryLimit"]["default"] == parsed.job.successful_jobs_history_limit
    )
    assert props["failedJobsHistoryLimit"]["default"] == parsed.job.failed_jobs_history_limit
    tls = props["target"]["properties"]["tls"]["properties"]
    assert tls["enabled"]["default"] is specmod.TLSSpec().enabled
    assert tls["insecureSkipVerify"]["default"] is specmod.TLSSpec().insecure_skip_verify
    assert props["concurrencyPolicy"]["enum"] == list(specmod.CONCURRENCY_POLICIES)
    assert props["method"]["enum"] == list(specmod.METHODS)
    assert props["compression"]["enum"] == list(specmod.COMPRESSIONS)
    assert props["target"]["properties"]["kind"]["enum"] == list(specmod.TARGET_KINDS)


# --- install manifests -------------------------------------------------------


def _manifest_docs() -> list[dict[str, Any]]:
    return [d for p in yaml_files("manifests/base") for d in load_docs(p)]


def test_controller_cannot_read_secrets() -> None:
    roles = [d for d in _manifest_docs() if d["kind"] in ("ClusterRole", "Role")]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
            if "" in rule["apiGroups"]:
                assert "secrets" not in rule["resources"], role["metadata"]["name"]


# The controller's roles are checked rule by rule against the API calls it makes
# in tests/unit/test_kustomize.py.


def test_controller_deployment_is_hardened_and_probed() -> None:
    (dep,) = [d for d in _manifest_docs() if d["kind"] == "Deployment"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"][:2] == ["operator", "--all-namespaces"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"] and c["resources"]["limits"]["memory"]
    assert {p["containerPort"] for p in c["ports"]} == {8080, 9090}
    (svc,) = [d for d in _manifest_docs() if d["kind"] == "Service"]
    assert svc["spec"]["ports"][0]["port"] == 9090
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


@pytest.fixture(scope="module")
def kustomized() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "manifests")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_kustomize_builds_everything(kustomized: list[dict[str, Any]]) -> None:
    kinds = sorted(d["kind"] for d in kustomized)
    assert kinds.count("CustomResourceDefinition") == 2
    assert {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
    } <= set(kinds)
    for doc in kustomized:
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)
        if doc["kind"] not in (
            "Namespace",
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleBinding",
        ):
            assert doc["metadata"]["namespace"] == "backupctl-system"


def test_kustomize_keeps_job_image_equal_to_controller_image(
    kustomized: list[dict[str, Any]],
) -> None:
    (dep,) = [d for d in kustomized if d["kind"] == "Deployment"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["BACKUPCTL_IMAGE"] == c["image"]


def test_dockerfile_builds_one_non_root_image_for_controller_and_jobs() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim-bookworm", text, re.M)
    assert "redis-tools" in text
    assert re.search(r"^USER 10001", text, re.M)
    assert re.search(r'^ENTRYPOINT \["backupctl"\]', text, re.M)


def test_encryption_and_decryption_fields_validate_and_parse() -> None:
    """Issue 18: every field of spec.encryption / spec.decryption passes the schema
    (with its CEL rules) and the API server path, and spec.py reads it."""
    backup = _base_backup()
    backup["spec"]["encryption"] = {
        "recipients": ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
                       "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9ok dr"],
        "recipientsFrom": {"configMap": {"name": "recipients", "key": "recipients.txt"}},
        "signingKeySecret": {"name": "signing", "key": "signing.pem"},
        "verifyKeyFrom": {"secret": {"name": "signing-pub", "key": "signing.pub.pem"}},
        "requireSignatures": True,
        "s3ServerSide": {"type": "aws:kms", "kmsKeyId": "alias/backups"},
        "s3ObjectLock": {"mode": "Governance", "days": 35},
    }  # fmt: skip
    restore = _base_restore()
    restore["spec"]["decryption"] = {
        "identitySecret": {"name": "identity", "key": "key.txt"},
        "verifyKeyFrom": {"configMap": {"name": "signing-pub", "key": "signing.pub.pem"}},
        "requireSignatures": True,
        "s3CustomerKeySecret": {"name": "sse-c", "key": "customer.key"},
    }
    for doc in (backup, restore):
        assert schema_errors(doc) == []
        _, pruned, emulated = _apiserver(doc)
        assert pruned == [] and emulated == []  # nothing dropped, nothing refused
    assert parse(backup).encryption.lock == ("GOVERNANCE", 35)
    assert parse(restore).decryption.sse_customer_key.name == "sse-c"


@pytest.mark.parametrize(
    ("storage", "field", "error"),
    [
        ({"azureBlob": {"container": "backups", "storageAccount": "acct"}},
         "azureImmutability", ""),
        ({"gcs": {"bucket": "my-bucket"}}, "gcsRetention", ""),
        (None, "azureImmutability", "the lock must match the store"),
        (None, "gcsRetention", "the lock must match the store"),
    ],
)  # fmt: skip
def test_azure_and_gcs_lock_fields_validate_beside_s3s(
    storage: dict[str, Any] | None, field: str, error: str
) -> None:
    """Issue 18: azureImmutability / gcsRetention pass the schema with their store,
    and a lock that does not match the store is refused by the CEL rule."""
    backup = _base_backup()
    if storage is not None:
        backup["spec"]["storage"] = storage
    backup["spec"]["encryption"] = {field: {"mode": "Locked", "days": 30}}
    _, pruned, emulated = _apiserver(backup)
    assert pruned == []
    if error:
        assert any(error in e for e in emulated), emulated
        with pytest.raises(SpecError, match=error):
            parse(backup)
    else:
        assert emulated == [] and schema_errors(backup) == []
        assert parse(backup).encryption.lock == ("LOCKED", 30)


KMS_KEY = "projects/p1/locations/europe-west1/keyRings/backups/cryptoKeys/redis"


@pytest.mark.parametrize(
    ("storage", "field", "value", "ok"),
    [
        (AZ, "azureEncryptionScope", "backups-cmk", True),
        (GCS, "gcsKmsKeyName", KMS_KEY, True),
        (AZ, "azureEncryptionScope", "Backups_CMK", False),
        (GCS, "gcsKmsKeyName", "redis", False),
        (GCS, "gcsKmsKeyName", KMS_KEY + "/cryptoKeyVersions/1", False),
    ],
)
def test_azure_scope_and_gcs_kms_key_fields_validate_with_their_store(
    storage: dict[str, Any], field: str, value: str, ok: bool
) -> None:
    """Issue 18: azureEncryptionScope / gcsKmsKeyName pass the schema and the API
    server path with their store and parse; a malformed name is refused by both the
    schema's pattern and spec.py."""
    backup = _base_backup()
    backup["spec"]["storage"] = {"azureBlob" if storage is AZ else "gcs": storage}
    backup["spec"]["encryption"] = {field: value}
    _, pruned, emulated = _apiserver(backup)
    assert pruned == []
    if ok:
        assert emulated == [] and schema_errors(backup) == []
        enc = parse(backup).encryption
        assert value in (enc.azure_encryption_scope, enc.gcs_kms_key_name)
    else:
        assert any(field in e for e in schema_errors(backup)), schema_errors(backup)
        assert emulated
        with pytest.raises(SpecError, match=field):
            parse(backup)
