"""Fixtures shared by the whole suite (from ``tests/support/``) and the ``slow``
marker: everything under ``tests/datapath`` and ``tests/controller`` starts real
servers or the controller, so ``pytest -m "not slow"`` is the fast loop."""

from pathlib import Path

import pytest

pytest_plugins = ["support.redis_servers", "support.object_stores", "support.kube.fixtures"]

_SLOW_DIRS = ("datapath", "controller")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        parts = Path(item.fspath).relative_to(here).parts
        if parts and parts[0] in _SLOW_DIRS:
            item.add_marker(pytest.mark.slow)
