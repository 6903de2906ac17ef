"""examples/prune-cronjob.yaml, the retention cron: it validates, and what its
containers run prunes each listed target -- a deleted RedisBackup's too -- by its
own policy, never removes a target's newest complete backup, and leaves targets
it does not list alone.

The containers' ``args`` are run as they are, with the S3 URL swapped for a
directory store holding fake backups (tests/support/fake_backups.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner
from unit.test_kustomize import K8S_VERSIONS

from backupctl.cli.app import app
from backupctl.store import catalog
from backupctl.store.backends.local import LocalBackend

from support.fake_backups import add_backup

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples/prune-cronjob.yaml"
T0 = datetime(2024, 1, 1, 3, 0, tzinfo=UTC)


def docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]


def containers() -> list[dict[str, Any]]:
    (cron,) = [d for d in docs() if d["kind"] == "CronJob"]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_example_validates(version: str) -> None:
    for doc in docs():
        kubernetes_validate.validate(doc, version, strict=True)


def test_every_container_prunes_one_target_and_runs_hardened() -> None:
    for container in containers():
        args = container["args"]
        assert args[0] == "prune" and "--target" in args and "--dry-run" not in args
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] and security["capabilities"]["drop"] == ["ALL"]


def test_the_cron_prunes_a_deleted_backups_target_and_never_its_newest(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path)
    weekly = {  # 20 weekly backups of each target; "old-cache"'s RedisBackup is gone
        target: [add_backup(store, target, T0 + timedelta(weeks=i)) for i in range(20)]
        for target in ("redis/redis", "redis/old-cache", "other/unlisted")
    }
    for container in containers():
        args = [str(a) for a in container["args"]]
        args[1] = str(tmp_path)  # the store: a directory instead of S3
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output

    def left(target: str) -> list[str]:
        return sorted(e.id for e in catalog.scan(store, target) if e.complete)

    # old-cache: --keep-last 1 --keep-within 30d keeps the newest and the 4 weeks before it.
    assert left("redis/old-cache") == sorted(weekly["redis/old-cache"][-5:])
    # redis: --keep-last 4 --keep-daily 7 (one backup a week: the 7 newest days that have one).
    assert left("redis/redis") == sorted(weekly["redis/redis"][-7:])
    assert left("other/unlisted") == sorted(weekly["other/unlisted"])
