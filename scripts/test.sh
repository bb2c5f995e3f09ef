#!/usr/bin/env bash
# Install Flame with its test tools and run every check: lint, types, import contracts, then the
# whole test suite (unit tests, and integration tests that start real daemons as subprocesses).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
.venv/bin/ruff check --output-format concise .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports  # the import contracts in pyproject.toml (DESIGN.md section 2)
.venv/bin/python scripts/import_cycles.py  # no import cycle anywhere in protocol, flamed, tui
.venv/bin/python -m pytest "$@"
