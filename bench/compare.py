"""Flame, Ray and Dask side by side: every figure of issue 21 from one run on one machine.

The frameworks run in interleaved rounds (Flame, Ray, Dask, Flame, Ray, Dask, ...), one at a
time, each on its own fresh cluster with the same number of worker processes (`--workers`,
default: the machine's cores); bench/compare_rigs.py says what each workload is per framework.
Every output is checked. Per round and framework:

- no-op throughput: N no-op tasks in one session, then the same N over 10 and over 50
  concurrent sessions (tasks/s, and their ratio to one session);
- cold start: a new session's first task latency (median of a few), and 1,000 tasks in a new
  session against the same 1,000 again once it is warm (tasks/s);
- efficiency: 2,000 tasks of 10 ms (ideal time / measured time);
- sequential round trips: p50 / p99 (Flame with fsync always);
- in the first round only (the long cases): CPU per no-op task summed over every process of
  the framework (client, session manager / scheduler / GCS, daemons, workers; utime+stime of
  the whole process tree from /proc, before and after N tasks in one session), and the
  memory that N held tasks add to the process that holds them (scaled to 100,000).

`--million` adds Flame's CPU per task at 1,000,000 tasks in one session, 100,000 outstanding
at a time (Ray and Dask would take 10 and 30 minutes here). `--profile` runs Flame's CPU case
once more under cProfile (the client, all its threads; the session manager, its whole life)
and prints the top 15 functions by own CPU time.

    python bench/compare.py --quick     # a few minutes: smaller N, one round
    python bench/compare.py             # the full run (an idle machine, ~25 minutes)

Prints a table (Flame | Ray | Dask | Flame vs the best peer | issue 21's target) and writes
bench/results/compare.json with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from compare_rigs import FlameRig, RayRig, Rig, start  # noqa: E402 - after the path is set
from proc_tree import (  # noqa: E402
    SITECUSTOMIZE,
    cpu_delta,
    kind_pids,
    profile_all_threads,
    rss_mb,
    snapshot,
    write_profile,
)
from throughput_bench import git_commit, percentile  # noqa: E402


@dataclass(frozen=True)
class Sizes:
    noop: int = 30_000
    first: int = 5  # samples of a cold session's first task
    cold: int = 1_000
    sleeps: int = 2_000
    sleep_s: float = 0.010
    latency: int = 1_000
    cpu: int = 100_000
    hold: int = 100_000


QUICK = Sizes(noop=3_000, first=3, cold=500, sleeps=200, latency=200, cpu=10_000, hold=10_000)
SESSIONS = (10, 50)
#: --million: Flame only (Ray and Dask would take about 10 and 30 minutes here), submitted in
#: waves of 100,000 (a million at once exceeds the open watches a client may hold)
MILLION, WAVE = 1_000_000, 100_000


def cpu_case(rig: Rig, tasks: int, run: Callable[[], float] | None = None) -> dict[str, Any]:
    """CPU microseconds per no-op task, per kind of process and in all, for `tasks` in one
    session (run by `run`, default `rig.noop(tasks, 1)`)."""
    before = snapshot(rig.classify)
    seconds = run() if run else rig.noop(tasks, 1)
    shares = cpu_delta(before, snapshot(rig.classify))
    return {
        "tasks": tasks,
        "tasks_per_s": tasks / seconds,
        "us_per_task": {kind: cpu / tasks * 1e6 for kind, cpu in shares.items()},
    }


def hold_case(rig: Rig, tasks: int) -> dict[str, Any]:
    pids = kind_pids(rig.classify, rig.memory_kinds)
    before = sum(rss_mb(pid) for pid in pids)
    with rig.hold(tasks):
        held = sum(rss_mb(pid) for pid in pids)
    per_100k = (held - before) * 100_000 / tasks
    return {"tasks": tasks, "rss_mb_before": before, "rss_mb_held": held, "mb_per_100k": per_100k}


def one_round(rig: Rig, sizes: Sizes, workers: int, heavy: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def note(key: str, value: float) -> None:
        out[key] = value
        print(f"  {rig.name:<5} {key:<24} {value:>12.2f}", flush=True)

    note("noop_1", sizes.noop / rig.noop(sizes.noop, 1))
    for sessions in SESSIONS:
        note(f"noop_{sessions}", sizes.noop / rig.noop(sizes.noop, sessions))
        note(f"noop_{sessions}_over_1", out[f"noop_{sessions}"] / out["noop_1"])
    note("first_task_ms", statistics.median(rig.first_task() for _ in range(sizes.first)) * 1000)
    if isinstance(rig, RayRig):
        note("new_function_first_ms", statistics.median(rig.first_function() for _ in range(sizes.first)) * 1000)
    cold, warm = rig.cold_warm(sizes.cold)
    note("cold_tasks_per_s", sizes.cold / cold)
    note("warm_tasks_per_s", sizes.cold / warm)
    note("cold_over_warm", warm / cold)
    note("sleep_efficiency", sizes.sleeps * sizes.sleep_s / workers / rig.sleeps(sizes.sleeps, sizes.sleep_s))
    samples = rig.latency(sizes.latency)
    note("latency_p50_ms", percentile(samples, 0.50) * 1000)
    note("latency_p99_ms", percentile(samples, 0.99) * 1000)
    if heavy:
        out["cpu"] = cpu_case(rig, sizes.cpu)
        note("cpu_us_per_task", out["cpu"]["us_per_task"]["total"])
        out["hold"] = hold_case(rig, sizes.hold)
        note("held_mb_per_100k", out["hold"]["mb_per_100k"])
    return out


#: (row label, key, higher is better, issue 21's target as text)
ROWS = [
    ("no-op tasks/s, 1 session", "noop_1", True, ""),
    ("no-op tasks/s, 10 sessions", "noop_10", True, ""),
    ("  10 sessions / 1", "noop_10_over_1", True, ">= 0.8"),
    ("no-op tasks/s, 50 sessions", "noop_50", True, ""),
    ("  50 sessions / 1", "noop_50_over_1", True, ">= 0.5"),
    ("cold start: first task ms", "first_task_ms", False, "<= 20"),
    ("1,000 tasks cold, tasks/s", "cold_tasks_per_s", True, ""),
    ("1,000 tasks warm, tasks/s", "warm_tasks_per_s", True, ""),
    ("  cold / warm", "cold_over_warm", True, ">= 0.5"),
    ("10 ms tasks: efficiency", "sleep_efficiency", True, ""),
    ("round trip p50 ms", "latency_p50_ms", False, "<= 1.0"),
    ("round trip p99 ms", "latency_p99_ms", False, "<= 2"),
    ("CPU us per no-op task", "cpu_us_per_task", False, "<= 30"),
    ("MB per 100k held tasks", "held_mb_per_100k", False, "<= 12"),
]


def medians(rounds: list[dict[str, Any]]) -> dict[str, float]:
    keys = {k for r in rounds for k, v in r.items() if isinstance(v, float | int)}
    return {k: statistics.median(r[k] for r in rounds if k in r) for k in sorted(keys)}


def num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def table(results: dict[str, dict[str, float]]) -> tuple[str, list[dict[str, Any]]]:
    names = ["flame", "ray", "dask"]
    lines = [f"{'':<30}{'Flame':>11}{'Ray':>11}{'Dask':>11}{'vs best peer':>14}  target (issue 21)"]
    rows = []
    for label, key, higher, target in ROWS:
        values = {n: results.get(n, {}).get(key) for n in names}
        flame, peers = values["flame"], [v for n, v in values.items() if n != "flame" and v]
        ratio = None
        if flame and peers:
            best = max(peers) if higher else min(peers)
            ratio = flame / best if higher else best / flame
        cells = "".join(f"{num(v):>11}" for v in values.values())
        lines.append(f"{label:<30}{cells}{(f'{ratio:.2f}x' if ratio else '-'):>14}  {target}")
        rows.append({"row": label, "key": key, **values, "flame_vs_best_peer": ratio, "target": target})
    return "\n".join(lines), rows


def markdown(report: dict[str, Any]) -> str:
    """The README's table and its machine line, from a compare.json report."""
    m = report["machine"]
    versions = m["versions"]
    head = (
        f"{'Quick run' if report['quick'] else 'Full run'} of `bench/compare.py` ({report['rounds']} interleaved "
        f"round(s), {report['workers']} worker processes each, medians) on {m['cores']} cores of {m['cpu_model']}, "
        f"{m['memory_gb']} GB, Python {m['python']}, commit {report['commit']}; Ray {versions['ray']}, "
        f"Dask distributed {versions['distributed']}; load average {m['load_average_at_start'][0]:.1f} at the start."
        + (f" {report['note']}." if report.get("note") else "")
    )
    lines = [head, "", "| | Flame | Ray | Dask | Flame vs best peer | target |", "|---|---|---|---|---|---|"]
    for row in report["table"]:
        cells = [num(row[n]) for n in ("flame", "ray", "dask")]
        ratio = f"{row['flame_vs_best_peer']:.2f}x" if row["flame_vs_best_peer"] else "-"
        lines.append(f"| {row['row'].strip()} | {' | '.join(cells)} | {ratio} | {row['target']} |")
    for name, runs in report["runs"].items():
        if runs and "cpu" in runs[0]:
            lines.append(f"\n{breakdown(name, runs[0]['cpu'])}.")
    if "flame_million" in report:
        lines.append(f"\n{breakdown('flame', report['flame_million'])}.")
    return "\n".join(lines)


def breakdown(name: str, cpu: dict[str, Any]) -> str:
    shares = sorted(((k, v) for k, v in cpu["us_per_task"].items() if k != "total"), key=lambda kv: -kv[1])
    parts = ", ".join(f"{kind} {us:.1f}" for kind, us in shares if abs(us) >= 0.05)
    return f"{name} CPU per task at {cpu['tasks']:,} tasks: {cpu['us_per_task']['total']:.1f} us ({parts})"


def profile_flame(base: Path, workers: int, tasks: int) -> dict[str, Any]:
    """Flame's CPU case under cProfile: the client in this process, the session manager by a
    sitecustomize.py on its path; writes .prof and .txt summaries under a temp dir."""
    out_dir = Path(tempfile.mkdtemp(prefix="compare-profile-", dir="/tmp"))
    hook = base / "profile-hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {
        "PYTHONPATH": f"{hook}:{BENCH.parent}",
        "FLAME_BENCH_PROFILE_MATCH": "session-manager",
        "FLAME_BENCH_PROFILE_DIR": str(out_dir),
    }
    rig = FlameRig(base / "flame-profile", workers, env)
    try:
        with profile_all_threads() as profiles:
            rig.noop(tasks, 1)
    finally:
        rig.stop()
    client = pstats.Stats(profiles[0])
    for profile in profiles[1:]:
        client.add(profile)
    print(f"--- client, {tasks:,} tasks (all threads), top 15 by own time", flush=True)
    print(write_profile(client, out_dir / "client.prof"))
    found = sorted(out_dir.glob("session-manager-*.prof"))
    if found:
        print(f"--- session manager (its whole life: start, warm-up, {tasks:,} tasks), top 15 by own time")
        print(write_profile(pstats.Stats(str(found[0])), out_dir / "session-manager.prof"))
    else:
        print("--- session manager: no profile written (did it exit normally?)")
    print(f"profiles and summaries in {out_dir}")
    return {"tasks": tasks, "session_manager": bool(found)}  # not the temp dir: the JSON is committed


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    memory = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in line)
    versions = {}
    for package in ("flamed", "ray", "distributed", "pyzmq", "msgspec"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "memory_gb": round(int(memory) / 1024 / 1024, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "load_average_at_start": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"one round of smaller cases: {QUICK}")
    parser.add_argument("--rounds", type=int, help="rounds (default 3, --quick 1; 0: only --profile/--million)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="worker processes / slots")
    parser.add_argument("--only", choices=["flame", "ray", "dask"], action="append", help="run only these")
    parser.add_argument("--million", action="store_true", help="also Flame's CPU per task at 1,000,000 tasks")
    parser.add_argument("--profile", action="store_true", help="profile Flame's client and session manager")
    parser.add_argument("--out", default=str(BENCH / "results" / "compare.json"))
    parser.add_argument("--note", default="", help="kept in the JSON, e.g. 'shared machine'")
    parser.add_argument("--markdown", action="store_true", help="run nothing: print --out's figures for the README")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.out).read_text())))
        return 0
    sizes = QUICK if args.quick else Sizes()
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    names = args.only or ["flame", "ray", "dask"]
    base = Path(tempfile.mkdtemp(prefix="compare-", dir="/tmp"))  # ipc paths must be short
    report: dict[str, Any] = {
        "bench": "compare",
        "machine": machine(),
        "commit": git_commit(),
        "quick": args.quick,
        "note": args.note,
        "workers": args.workers,
        "rounds": rounds,
        "sizes": asdict(sizes),
        "runs": {name: [] for name in names},
    }
    started = time.perf_counter()
    try:
        for round_number in range(rounds):
            for name in names:
                print(f"--- round {round_number + 1}/{rounds}: {name}", flush=True)
                rig = start(name, base, args.workers)
                try:
                    report["runs"][name].append(one_round(rig, sizes, args.workers, heavy=round_number == 0))
                finally:
                    rig.stop()
        if args.million and "flame" in names:
            print(f"--- flame: CPU per task at {MILLION:,} tasks in waves of {WAVE:,} (Ray, Dask: not run)", flush=True)
            flame = FlameRig(base / "flame-million", args.workers)
            try:
                report["flame_million"] = {"wave": WAVE, **cpu_case(flame, MILLION, lambda: flame.waves(MILLION, WAVE))}
            finally:
                flame.stop()
        if args.profile:
            report["profile"] = profile_flame(base, args.workers, sizes.cpu)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    report["medians"] = {name: medians(runs) for name, runs in report["runs"].items()}
    text, report["table"] = table(report["medians"])
    if rounds:
        print(f"\n{rounds} round(s), {args.workers} worker processes each; medians; 'vs best peer' > 1: Flame better")
        print(text)
    for name, runs in report["runs"].items():
        if runs and "cpu" in runs[0]:
            print(breakdown(name, runs[0]["cpu"]))
    if "flame_million" in report:
        print(breakdown("flame", report["flame_million"]))
    report["machine"]["load_average_at_end"] = os.getloadavg()
    report["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out} ({report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
