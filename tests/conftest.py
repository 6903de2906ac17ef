"""Fixtures shared by the whole suite (from ``tests/support/``), the ``slow`` marker
and how the suite is split for two workers.

- ``slow``: everything under ``tests/datapath`` and ``tests/controller`` starts real
  servers or the controller, so ``pytest -m "not slow"`` is the fast loop.
- ``serial``: tests whose assertions are about time or memory (a progress frame at
  least every 2 s, a bandwidth limit, a prompt timeout, peak RSS, leader leases) or
  that need a quiet machine. ``scripts/test.sh`` runs the rest on two workers
  (pytest-xdist, ``--phase parallel``), then these alone (``--phase serial``).
- The end-to-end tests of the running operator (its fake clock, kopf, the Job
  stand-in) stay on one worker (an ``xdist_group``), so two operators never compete.
"""

from pathlib import Path

import pytest

pytest_plugins = ["support.redis_servers", "support.object_stores", "support.kube.fixtures"]

_SLOW_DIRS = ("datapath", "controller")
#: Tests (a path under tests/, or the start of a node id) whose assertions are about
#: time or memory; single tests in files of ours carry ``@pytest.mark.serial`` instead.
_SERIAL = (
    "datapath/test_terminal_recording.py",  # a frame at least every 2 s
    "datapath/test_progress.py::test_off_a_terminal",  # a line at least every 10 s
    "datapath/test_progress.py::test_on_a_terminal",  # a redraw at least every 2 s
    "datapath/test_transfer_limits.py",  # elapsed time against --limit-*
    # peak RSS <= 100 MiB
    "datapath/test_restore_to_redis_matrix.py::test_values_far_above_the_large_value_threshold",
    "controller/test_leader",  # lease durations and renewals in real time
)
#: Files whose tests run the operator process: one group, kept on one worker.
_OPERATOR_FILES = (
    "controller/test_backup_controller_e2e.py",
    "controller/test_encrypted_drill_e2e.py",
    "controller/test_install_e2e.py",
    "controller/test_operating_e2e.py",
    "controller/test_restore_controller_e2e.py",
    "controller/test_users_and_stuck_jobs_e2e.py",
)
#: Files whose module-scoped fixtures start something: each file on one worker, so
#: that happens once.
_FILE_GROUPS = (
    "datapath/test_cloud_locks.py",
    "datapath/test_restore_to_redis_matrix.py",
    "store/test_retention_restic_oracle.py",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--phase",
        choices=("all", "parallel", "serial"),
        default="all",
        help="parallel: leave out the tests marked serial (for pytest -n 2); "
        "serial: only those (run them alone); all (default): every test",
    )


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    xdist = config.pluginmanager.hasplugin("xdist")
    for item in items:
        rel = Path(item.fspath).relative_to(here)
        path = rel.as_posix()
        if rel.parts and rel.parts[0] in _SLOW_DIRS:
            item.add_marker(pytest.mark.slow)
        if f"{path}::{item.name}".startswith(_SERIAL):
            item.add_marker(pytest.mark.serial)
        if xdist and path in _OPERATOR_FILES:
            item.add_marker(pytest.mark.xdist_group("operator"))
        elif xdist and path in _FILE_GROUPS:
            item.add_marker(pytest.mark.xdist_group(path))
    phase = config.getoption("phase")
    if phase == "all":
        return
    want_serial = phase == "serial"
    keep = [i for i in items if (i.get_closest_marker("serial") is not None) == want_serial]
    dropped = [i for i in items if (i.get_closest_marker("serial") is not None) != want_serial]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
