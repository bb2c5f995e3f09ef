"""Cold starts and many sessions through a real local cluster (issue 21).

One `flamed cluster` (one session manager, one executor manager of 2 slots, fsync `always`) on
ipc:// endpoints in a temporary directory, after a warm-up:

- first task: the time from `create_session` to the first task's result, on a node with a free
  slot (each time a new session, so a new instance is started for it);
- cold vs warm: 1,000 no-op tasks in a new session, timed from `create_session` to the last
  result, against the same tasks again in that session, now warm (`--cold` pairs a run);
- many sessions: N no-op tasks over 1, 10 and 50 concurrent sessions of one client, all
  submitted at once (the sessions are opened before the clock starts), and the rate of 10 and
  50 sessions as a share of the rate of one session.

The cases are interleaved run by run (1, 10, 50, 1, 10, 50, ...) so that a machine shared with
other work slows each about equally; medians are reported. Every output is checked.

    python bench/sessions_bench.py            # about a minute
    python bench/sessions_bench.py --runs 5 --tasks 30000

Prints the figures and writes bench/results/sessions.json with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput_bench import REPO, Cluster, git_commit, run_tasks, summary

from flamed.client import open_connection


def first_task(endpoint: str, times: int) -> list[float]:
    """Seconds from `create_session` to the first result, `times` times, each in a new session
    on a node whose slots are free (the previous session is closed and its executor unbound)."""
    samples = []
    with open_connection(endpoint, timeout=30) as conn:
        for i in range(times):
            settle(conn)
            started = time.perf_counter()
            session = conn.create_session("flmping")
            output = session.run(f"first-{i}".encode()).result(timeout=60)
            samples.append(time.perf_counter() - started)
            if output != f"first-{i}".encode():
                raise RuntimeError(f"first task {i}: output {output!r}")
            session.close()
    return samples


def settle(conn: Any, timeout: float = 30.0) -> None:
    """Wait until no executor is bound to a session (the slots are free for the next one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = [e for e in conn.list_executors() if str(e.state) not in {"Void", "Idle", "Releasing", "Released"}]
        if not busy:
            return
        time.sleep(0.02)
    raise RuntimeError("executors still bound after the sessions closed")


def cold_and_warm(endpoint: str, tasks: int, tag: str) -> tuple[float, float]:
    """(cold rate, warm rate) in tasks/s: `tasks` tasks in a new session, timed from
    `create_session`; then the same number again in that (now warm) session."""
    inputs = [f"{tag}-{i}".encode() for i in range(tasks)]
    with open_connection(endpoint, timeout=30) as conn:
        settle(conn)
        started = time.perf_counter()
        session = conn.create_session("flmping")
        outputs = [f.result(timeout=120) for f in [session.run(data) for data in inputs]]
        cold = time.perf_counter() - started
        started = time.perf_counter()
        again = [f.result(timeout=120) for f in [session.run(data) for data in inputs]]
        warm = time.perf_counter() - started
        if outputs != inputs or again != inputs:
            raise RuntimeError("outputs differ from their inputs")
        session.close()
    return tasks / cold, tasks / warm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per case (default 3)")
    parser.add_argument("--tasks", type=int, default=30_000, help="tasks of the many-sessions case")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 10, 50], help="session counts (1 first)")
    parser.add_argument("--first", type=int, default=10, help="first-task samples per run")
    parser.add_argument("--cold", type=int, default=5, help="cold/warm pairs per run")
    parser.add_argument("--fsync", default="always")
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--skip-sessions", action="store_true", help="only the cold-start cases")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "sessions.json"))
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="fsbench-", dir="/tmp"))  # ipc paths must be short
    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        # the machine may be shared: its load average (1, 5, 15 minutes) at this point of the run
        "load_average": os.getloadavg(),
        "commit": git_commit(),
        "fsync": args.fsync,
        "slots": args.slots,
        "runs": args.runs,
    }
    started = time.perf_counter()
    cluster = Cluster(base / "c", args.fsync, 1, args.slots)
    try:
        run_tasks(cluster.frontend, 1, 2000, "warm")
        firsts: list[float] = []
        colds: list[float] = []
        warms: list[float] = []
        rates: dict[int, list[float]] = {n: [] for n in args.sessions}
        for run in range(args.runs):
            firsts.extend(t * 1000 for t in first_task(cluster.frontend, args.first))
            for i in range(args.cold):
                cold, warm = cold_and_warm(cluster.frontend, 1000, f"cw{run}-{i}")
                colds.append(cold)
                warms.append(warm)
            if not args.skip_sessions:
                for n in args.sessions:
                    rates[n].append(args.tasks / run_tasks(cluster.frontend, n, args.tasks, f"s{run}-{n}"))
            print(
                f"run {run}: first task p50 {statistics.median(firsts):.1f} ms; 1000 tasks cold "
                f"{statistics.median(colds):.0f}/s warm {statistics.median(warms):.0f}/s; "
                + ", ".join(f"{n} sessions {r[-1]:.0f}/s" for n, r in rates.items() if r),
                flush=True,
            )
        results["first_task_ms"] = {
            "p50": statistics.median(firsts),
            "min": min(firsts),
            "max": max(firsts),
            "samples": len(firsts),
        }
        results["cold_1000"] = {
            "cold": summary(colds),
            "warm": summary(warms),
            "ratio": statistics.median(colds) / statistics.median(warms),
        }
        if not args.skip_sessions:
            one = statistics.median(rates[args.sessions[0]])
            results["sessions"] = {
                str(n): {"tasks": args.tasks, **summary(r), "ratio": statistics.median(r) / one}
                for n, r in rates.items()
            }
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    results["seconds"] = time.perf_counter() - started
    print(f"first task after create_session: p50 {results['first_task_ms']['p50']:.1f} ms")
    print(f"1000 tasks cold / warm: {results['cold_1000']['ratio']:.2f}")
    for n, row in results.get("sessions", {}).items():
        print(f"{args.tasks} tasks over {n} sessions: median {row['median']:.0f}/s, ratio {row['ratio']:.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out} ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
