"""Where a cold session's first task spends its time: a timeline of every step (issue 21).

A real local cluster (`flamed cluster`, one executor manager, fsync `always`, as
bench/sessions_bench.py) runs with a `sitecustomize` on its path that wraps the functions each
step goes through and appends `(CLOCK_MONOTONIC, pid, step)` to a trace file, one write per
step (the clock is the same in every process). The bench itself times the client side. Each
sample is a new session on a node with a free slot (the previous session closed, its executor
gone); the first occurrence of each step after `create_session` is taken, and the medians over
the samples are printed as offsets from the client's `create_session`:

    client create_session -> SM request + fsync -> reply -> CreateTasks -> plan -> (create ->
    created ->) bind -> EM bind -> zygote spawn -> instance connected -> InstanceReady ->
    SessionEntered -> bound -> launch -> invoke -> result -> SM fsync -> client result

    python bench/coldstart_timeline.py [--samples 30]

The trace costs a few microseconds per step; the figures are for finding the waits, not for
comparing with bench/sessions_bench.py. Writes bench/results/coldstart_timeline.json.
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

from sessions_bench import settle
from throughput_bench import REPO, Cluster, git_commit

from flamed.client import open_connection
from flamed.client.errors import FlameError

#: Installed as the cluster's sitecustomize: wraps the functions of each step (see the docstring).
SITECUSTOMIZE = r"""
import os, sys, time
_path = os.environ.get("FLAME_TRACE_FILE")

def _mark(step):
    fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{time.monotonic():.6f} {os.getpid()} {step}\n".encode())
    finally:
        os.close(fd)

def _wrap(owner, name, before=None, after=None):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        if before is not None:
            step = before(*args, **kwargs)
            if step:
                _mark(step)
        result = original(*args, **kwargs)
        if after is not None:
            step = after(result, *args, **kwargs)
            if step:
                _mark(step)
        return result
    setattr(owner, name, wrapper)

def _install():
    import flamed.core.controller as controller
    import flamed.core.dispatch as dispatch
    import flamed.core.executor_reports as reports
    import flamed.core.scheduler as scheduler
    import flamed.executor_manager.core as em_core
    import flamed.executor_manager.holding as holding
    import flamed.executor_manager.lifecycle as lifecycle
    import flamed.executor_manager.manager as manager
    import flamed.executor_manager.zygote as zygote
    import flamed.service as service
    import flamed.service.runner as runner
    import flamed.session_manager.daemon as sm_daemon

    _wrap(controller.Controller, "handle_client", before=lambda s, p, r, *a, **k: "sm.req." + type(r).__name__)
    def plan_step(p, *a, **k):
        if p.create or p.bind:
            return f"sm.plan.create{len(p.create)}.bind{len(p.bind)}"
    _wrap(scheduler, "plan", after=plan_step)
    _wrap(dispatch.Dispatcher, "_launch", before=lambda s, t, sess, e, n: f"sm.launch.{n}")
    _wrap(reports, "_executor_report", before=lambda t, e, r: "sm.report." + type(r).__name__)
    _wrap(reports, "_flush_finished", before=lambda t, f: "sm.finished" if f else None)
    _wrap(sm_daemon.SessionManager, "_send", before=lambda s, o: "sm.send" if o.node_messages or o.replies else None)
    for name in ("fsync", "fdatasync"):
        _wrap(os, name, before=lambda fd: "fsync.begin", after=lambda r, fd: "fsync.end")
    _wrap(em_core.ExecutorsCore, "command", before=lambda s, c, n: "em.cmd." + type(c).__name__)
    _wrap(em_core.ExecutorsCore, "instance_message", before=lambda s, e, m, n: "em.inst." + type(m).__name__)
    _wrap(lifecycle.Executors, "_start", before=lambda s, e: "em.spawn.begin", after=lambda r, s, e: "em.spawn.end")
    _wrap(holding, "take_batch", after=lambda r, *a: f"em.invoke.{len(r)}" if r else None)
    def flush_step(s):
        if s.holder.reports:
            return "em.flush." + "+".join(sorted({type(r).__name__ for r in s.holder.reports}))
    _wrap(manager.ExecutorManager, "_flush", before=flush_step)
    _wrap(zygote, "_child", after=lambda r, *a: "inst.go")
    import runpy
    import protocol.codec as codec
    _wrap(os, "chdir", before=lambda *a: "inst.chdir")
    _wrap(runpy, "run_module", before=lambda *a, **k: "inst.run_module")
    _wrap(
        runner, "connect_dealer", before=lambda *a, **k: "inst.connect.begin", after=lambda *a, **k: "inst.connect.end"
    )
    _wrap(codec, "instance_command_codec", before=lambda: "inst.codec.begin", after=lambda r: "inst.codec.end")
    _wrap(service, "run", before=lambda *a: "inst.run")
    _wrap(runner._Runner, "__init__", after=lambda r, *a: "inst.connected")
    _wrap(runner._Runner, "enter", before=lambda *a: "inst.enter")
    _wrap(runner._Runner, "invoke", before=lambda *a: "inst.invoke")
    _wrap(runner._Runner, "flush", before=lambda s: "inst.results" if s.results else None)

if _path:
    _install()
"""


def read_trace(path: Path) -> list[tuple[float, int, str]]:
    events = []
    for line in path.read_text().splitlines():
        at, pid, step = line.split(" ", 2)
        events.append((float(at), int(pid), step))
    events.sort()
    return events


#: Steps of an instance's start: numbered (#1, #2) when a sample starts two instances.
NUMBERED = ("sm.plan", "em.cmd.BindExecutor", "em.spawn", "inst.", "em.inst.InstanceReady", "em.inst.SessionEntered")


def sample(conn: Any, i: int, trace: Path, tasks: int) -> dict[str, float]:
    """One cold session of `tasks` tasks: the offset (ms) of each step's first occurrence after
    create_session (of the first two, for the steps of an instance's start)."""
    settle(conn)
    time.sleep(0.05)  # let the instance of the previous session exit, so its steps are not ours
    start = time.monotonic()
    session = conn.create_session("flmping")
    created = time.monotonic()
    inputs = [f"first-{i}-{n}".encode() for n in range(tasks)]
    futures = [session.run(data) for data in inputs]
    submitted = time.monotonic()
    outputs = [future.result(timeout=60) for future in futures]
    done = time.monotonic()
    if outputs != inputs:
        raise RuntimeError(f"sample {i}: outputs differ from their inputs")
    session.close()
    steps: dict[str, float] = {
        "client.create_session.returned": created,
        "client.run.submitted": submitted,
        "client.result": done,
    }
    seen_fsyncs = 0
    seen: dict[str, int] = {}
    for at, _pid, name in read_trace(trace):
        if at < start or at > done:
            continue
        if name == "fsync.begin":
            seen_fsyncs += 1
        if name.startswith("fsync"):  # the n-th fsync of the sample
            steps.setdefault(f"{name}.{seen_fsyncs}", at)
        elif tasks > 1 and name.startswith(NUMBERED):
            seen[name] = seen.get(name, 0) + 1
            if seen[name] <= 2:
                steps[f"{name}#{seen[name]}"] = at
        else:
            steps.setdefault(name, at)
    return {step: (at - start) * 1000 for step, at in steps.items()}


def connect(endpoint: str, within: float = 60.0) -> Any:
    """A connection to the cluster once it answers (it may take seconds to start on a busy machine)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return open_connection(endpoint, timeout=30)
        except FlameError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--fsync", default="always")
    parser.add_argument("--tasks", type=int, default=1, help="tasks per cold session (1: the first task)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "coldstart_timeline.json"))
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="fstl-", dir="/tmp"))  # ipc paths must be short
    site = base / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    trace = base / "trace"
    env = {"PYTHONPATH": f"{site}:{REPO}", "FLAME_TRACE_FILE": str(trace)}
    cluster = Cluster(base / "c", args.fsync, 1, 2, extra_env=env)
    samples: list[dict[str, float]] = []
    try:
        with connect(cluster.frontend) as conn:
            for _ in range(3):  # warm-up: the zygote comes up at the first start
                session = conn.create_session("flmping")
                session.run(b"warm").result(timeout=60)
                session.close()
            for i in range(args.samples):
                samples.append(sample(conn, i, trace, args.tasks))
    finally:
        cluster.stop()
    steps: dict[str, list[float]] = {}
    for one in samples:
        for step, ms in one.items():
            steps.setdefault(step, []).append(ms)
    rows = sorted(
        ((step, statistics.median(v), len(v)) for step, v in steps.items()),
        key=lambda row: row[1],
    )
    what = "first task" if args.tasks == 1 else f"session of {args.tasks} tasks"
    print(f"cold {what}, median of {args.samples} samples (ms after create_session; shared machine):")
    for step, ms, count in rows:
        print(f"  {ms:8.2f}  {step}" + (f"  ({count} of {args.samples})" if count != args.samples else ""))
    result = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "load_average": os.getloadavg(),
        "commit": git_commit(),
        "fsync": args.fsync,
        "tasks": args.tasks,
        "samples": args.samples,
        "median_ms_after_create_session": {step: ms for step, ms, _ in rows},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
