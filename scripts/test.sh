#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what it needs
# (scripts/bootstrap.sh), then lint, type-check, pytest. `.ci/run` runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh test
export PATH="$PWD/.venv/bin:$PWD/node_modules/.bin:$PATH"
echo "== ruff"; ruff check backupctl tests bench
echo "== mypy"; mypy
echo "== pytest"; exec pytest -q -p no:cacheprovider "$@"
