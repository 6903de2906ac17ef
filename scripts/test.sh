#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what it needs
# (scripts/bootstrap.sh), then lint, format check, type-check, the layering
# contracts (import-linter), pytest. `.ci/run` runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh test
export PATH="$PWD/.venv/bin:$PWD/node_modules/.bin:$PATH"
echo "== ruff"; ruff check backupctl tests bench; ruff format --check backupctl tests bench
echo "== mypy"; mypy
echo "== import-linter"; lint-imports
# Two workers (pytest-xdist) for all but the tests marked `serial` (time or memory
# bounds: progress redraws, bandwidth limits, peak RSS, leader leases), which then
# run alone on a quiet machine (tests/conftest.py). Exit code 5 (nothing selected)
# counts only when neither run selected anything.
workers="${BACKUPCTL_TEST_WORKERS:-2}"
echo "== pytest: $workers workers, then the serial tests alone"
set +e
pytest -q -p no:cacheprovider -n "$workers" --dist loadgroup --phase parallel "$@"; parallel=$?
pytest -q -p no:cacheprovider --phase serial "$@"; serial=$?
set -e
if [ "$parallel" -eq 5 ] && [ "$serial" -eq 5 ]; then exit 5; fi
[ "$parallel" -eq 5 ] && parallel=0
[ "$serial" -eq 5 ] && serial=0
[ "$parallel" -ne 0 ] && exit "$parallel"
exit "$serial"
