#!/usr/bin/env bash
# Quick start: install Flame, run a local cluster (a session manager and one executor manager
# with a slot per core), and make it do real work: 1000 ping tasks, then a 30,000-task benchmark.
# Ports: FLAME_DEMO_PORT (default 8080) and the next one. State goes to a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
port="${FLAME_DEMO_PORT:-8080}"
frontend="tcp://127.0.0.1:${port}"
backend="tcp://127.0.0.1:$((port + 1))"
state="$(mktemp -d -t flame-demo.XXXXXX)"
.venv/bin/flamed cluster --frontend "$frontend" --backend "$backend" --state-dir "$state" --log-level warning &
cluster=$!
stop() {
    kill -TERM "$cluster" 2>/dev/null || true
    wait "$cluster" 2>/dev/null || true
    rm -rf "$state"
}
trap stop EXIT
export FLAME_ENDPOINT="$frontend"
.venv/bin/flmping -t 1000 | tail -n 3
.venv/bin/flmping -p -t 30000
