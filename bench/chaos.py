"""Chaos soak: a session manager and N executor managers (each in its own network namespace
where root allows it), a client workload, and a seeded random schedule of faults; then the
invariants of DESIGN section 5 and every re-execution attributed to the fault that caused it.

Usage:
    python bench/chaos.py                                  # 10,000 tasks, 50 faults, seed 1
    python bench/chaos.py --tasks 1500 --faults 8 --seed 7 # a short run
    python bench/chaos.py --seed 7 --plan                  # print the schedule, run nothing

The same options give the same schedule (fault kinds, targets, offsets, durations, workload);
the summary ends with the command line that reruns it. Writes bench/results/chaos-<seed>.json
(--out to change). Exit code: 0 if every correctness invariant held, 1 if one broke, 2 on bad
options. Run it as root for the namespaced variant; otherwise partitions are simulated with
SIGSTOP and the output says so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import threading
import time
from dataclasses import fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.chaos import report  # noqa: E402
from tests.chaos.evidence import Evidence  # noqa: E402
from tests.chaos.plan import Settings, make_plan  # noqa: E402
from tests.chaos.runner import load_evidence, run_plan, save_evidence  # noqa: E402

HELP = {
    "seed": "seed of the schedule and the workload",
    "tasks": "tasks in the workload",
    "faults": "faults in the schedule",
    "nodes": "executor managers",
    "slots": "executor slots per node",
    "sessions": "sessions the tasks are spread over",
    "fail_rate": "share of tasks that fail on purpose",
    "max_task_ms": "longest task, ms (each works 0..this)",
    "heartbeat": "recovery.heartbeat_interval, seconds",
    "liveness": "recovery.heartbeat_liveness",
    "drain": "recovery.drain_timeout, seconds",
    "backoff_min": "recovery.reconnect_backoff_min, seconds",
    "backoff_max": "recovery.reconnect_backoff_max, seconds",
    "retry_limit": "recovery.task_retry_limit",
    "client_timeout": "client.timeout, seconds",
    "gap_min": "least seconds from a heal to the next fault",
    "gap_max": "most seconds from a heal to the next fault",
    "burst_share": "share of the tasks submitted in bursts during faults",
    "overlap": "let faults overlap (never two on one target)",
    "kinds": "fault kinds, comma-separated: em-kill,em-stop,partition,sm-kill,sm-stop",
    "netns": "put each node in a network namespace when root allows",
}


class LoadSampler:
    """The 1-minute load average every 5 s while the run lasts: other work on the machine
    shifts every timing the run measures, so the figures say how busy it was."""

    def __init__(self) -> None:
        self.samples = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(5.0):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def figures(self) -> dict[str, float]:
        return {
            "before": round(self.samples[0], 2),
            "mean": round(statistics.fmean(self.samples), 2),
            "max": round(max(self.samples), 2),
        }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    default = Settings()
    for field in fields(Settings):
        flag = "--" + field.name.replace("_", "-")
        value = getattr(default, field.name)
        text = f"{HELP[field.name]} (default: {value})"
        if isinstance(value, bool):
            p.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=value, help=text)
        else:
            p.add_argument(flag, dest=field.name, type=type(value), default=value, help=text)
    p.add_argument("--plan", action="store_true", help="print the schedule and exit")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="directory for chaos-<seed>.json")
    p.add_argument("--keep", action="store_true", help="keep the run's directory (logs, journals, state, evidence)")
    p.add_argument("--analyse", metavar="DIR", type=Path, help="report again on the run kept in DIR (--keep) and exit")
    p.add_argument(
        "--hot-loop-cpu", type=float, default=0.5, help="CPU-s per second away above which I6 warns (default: 0.5)"
    )
    p.add_argument("--settle-timeout", type=float, default=240.0, help="seconds to wait for every result at the end")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = Settings(**{f.name: getattr(args, f.name) for f in fields(Settings)})
    try:
        plan = make_plan(settings)
    except ValueError as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2
    if args.analyse:
        return write(load_evidence(args.analyse), args, args.analyse)
    if args.plan:
        for fault in plan.faults:
            when = f"{fault.start:7.2f}s"
            print(f"#{fault.index:<3} {when} {fault.kind:<9} {fault.target:<3} {fault.duration:5.2f}s {fault.band}")
        print(f"{len(plan.submissions)} submissions of {len(plan.tasks)} tasks over {plan.span:.1f}s")
        return 0
    load = LoadSampler()
    started = time.monotonic()
    try:
        evidence, kept = run_plan(plan, print, args.settle_timeout, args.keep)
    finally:
        load.stop()
    evidence.seconds = time.monotonic() - started
    evidence.load = load.figures()
    if kept is not None:
        save_evidence(kept, evidence)
    return write(evidence, args, kept)


def write(evidence: Evidence, args: argparse.Namespace, kept: Path | None) -> int:
    """Print the summary, write the JSON; the exit code."""
    result = report.build(evidence, args.hot_loop_cpu)
    print(f"machine: {os.cpu_count()} CPUs; 1-minute load average during the run {evidence.load}")
    print(report.text(result))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"chaos-{evidence.plan.settings.seed}.json"
    # The run's directory is gone (or this machine's business): keep its path out of results.
    text = re.sub(r"ipc://\S*?/flc-[^/\s]+/", "ipc://<run dir>/", json.dumps(result, indent=1) + "\n")
    path.write_text(text)
    print(f"results: {path}")
    if kept is not None:
        print(f"logs, journals, state and evidence: {kept}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
