"""Memory per held task, and snapshot encode/decode time, in process (issue 17).

Builds a state of `--tasks` tasks (16-byte inputs, 10 sessions, half of them closed) by
applying records as a log replay does, and reports the RSS delta per task; then encodes a
snapshot and rebuilds the state from it, reporting the times. (The RSS of a restart from a
snapshot against one from the log is measured with real daemons: bench/snapshot_bench.py.)

Usage: python bench/task_memory.py [--tasks 1000000] [--succeeded] [--batch 10000] [--out FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flamed.core import records as r  # noqa: E402
from flamed.core.snapshot import decode_state, encode_state  # noqa: E402
from flamed.core.state import ClusterState  # noqa: E402
from protocol.types import Application, ApplicationSpec, ResourceRequirement, SessionSpec, TaskState  # noqa: E402


def rss_mb() -> float:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def build(tasks: int, succeeded: bool = False, batch: int = 10_000) -> ClusterState:
    """10 sessions of `tasks` / 10; with `succeeded` every task ran and succeeded with a 16-byte
    output (what retention holds), else half the sessions are closed (tasks Cancelled) and
    the others' tasks Pending. `batch` tasks per record (the transient records count in RSS:
    a big batch shows at 100,000 tasks)."""
    state = ClusterState()
    t = 1_760_000_000_000
    app = Application(name="a", spec=ApplicationSpec(command="x"), creation_time=t, version=1)
    state.apply(r.ApplicationSaved(time=t, application=app))
    state.apply(r.ExecutorCreated(time=t, executor_id="e", node="n", resreq=ResourceRequirement()))
    per = tasks // 10
    for s in range(10):
        state.apply(r.SessionCreated(time=t, session_id=f"s{s}", spec=SessionSpec(application="a")))
        for first in range(0, per, batch):
            inputs: list[bytes | None] = [b"%016d" % i for i in range(min(batch, per - first))]
            state.apply(r.TasksCreated(time=t + first, session_id=f"s{s}", first_id=first + 1, inputs=inputs))
            if succeeded:
                ids = list(range(first + 1, first + 1 + len(inputs)))
                state.apply(r.TasksDispatched(time=t + first, session_id=f"s{s}", executor_id="e", task_ids=ids))
                done = [r.TaskFinish(i, TaskState.Succeed, b"%016d" % i) for i in ids]
                state.apply(r.TasksFinished(time=t + first + 1, session_id=f"s{s}", tasks=done))
            state.touched.clear()  # as the controller does after each turn (and recovery after replay)
        if s % 2 and not succeeded:
            state.apply(r.SessionClosed(time=t + 5, session_id=f"s{s}"))
            state.touched.clear()
    return state


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--succeeded", action="store_true", help="every task succeeded with a 16-byte output")
    parser.add_argument("--batch", type=int, default=10_000, help="tasks per record")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "task_memory.json"))
    args = parser.parse_args()
    gc.disable()  # as recovery does (flamed.session_manager.durability)
    base = rss_mb()
    state = build(args.tasks, args.succeeded, args.batch)
    replayed = rss_mb() - base
    started = time.perf_counter()
    payload = encode_state(state)
    encode_s = time.perf_counter() - started
    del state
    started = time.perf_counter()
    rebuilt_state = decode_state(payload)
    decode_s = time.perf_counter() - started
    assert len(rebuilt_state.sessions) == 10
    result = {
        "tasks": args.tasks,
        "tasks_per_record": args.batch,
        "tasks_state": "succeeded, 16-byte outputs" if args.succeeded else "half Pending, half Cancelled",
        "bytes_per_task_replayed": round(replayed * (1 << 20) / args.tasks, 1),
        "rss_mb_replayed": round(replayed, 1),
        "snapshot_encode_s": round(encode_s, 3),
        "snapshot_decode_to_state_s": round(decode_s, 3),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
