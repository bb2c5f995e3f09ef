#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install Flame into it.
# Usage: scripts/setup.sh [extras]   e.g. scripts/setup.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "setup: Flame needs Python 3.11 or newer; '$python' is $("$python" --version 2>&1)." >&2
    echo "setup: set PYTHON=/path/to/python3.11 and try again." >&2
    exit 2
fi
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
target="."
[ -n "$extras" ] && target=".[$extras]"
# pip and setuptools are chatty about editable installs; keep their output unless it fails.
if ! { .venv/bin/python -m pip install --quiet --upgrade pip && .venv/bin/python -m pip install --quiet -e "$target"; } \
    >.venv/setup.log 2>&1; then
    cat .venv/setup.log >&2
    echo "setup: installing Flame into .venv failed (log above, also in .venv/setup.log)" >&2
    exit 1
fi
