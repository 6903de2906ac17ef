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
echo "== pytest"; exec pytest -q -p no:cacheprovider "$@"
