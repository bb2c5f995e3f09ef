"""End-to-end task throughput and latency through a real local cluster.

A `flamed cluster` (one session manager, 1 or 2 executor managers with 2 slots each) runs on
ipc:// endpoints in a temporary directory, with the durable log's fsync policy `always`,
`interval` (1 s) or `never`. After a warm-up, each case is run several times and reported as median, min and max:

- throughput: N no-op tasks (1,000 / 30,000 / 100,000) in one session, all submitted at once
  with `Session.run` futures, timed from the first submit to the last result;
- concurrent: 4 client processes, 10 sessions in all, N tasks in all, timed from the start
  signal to the last result of the slowest client;
- latency: 1,000 sequential tasks (submit, wait for the result) in a warm session, p50 and p99,
  with the fsyncs per task and their mean latency (the disk's share of each round trip);
- session-manager RSS before and after 100,000 tasks are held (full run only).

Every output is checked: a task echoes its input (`flmping` echoes input that is not JSON), and
the bench fails if any output differs. With `dask.distributed` installed (a bench-only extra,
not a dependency of Flame), the same workloads also run on a Dask LocalCluster with as many
single-threaded worker processes as Flame has slots, and the ratio is reported.

    python bench/throughput_bench.py           # full run, several minutes
    python bench/throughput_bench.py --quick   # < 60 s

Prints the figures and writes bench/results/throughput.json with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flamed.client import open_connection  # noqa: E402 - after the path is set


class Cluster:
    """A `flamed cluster` subprocess on ipc:// endpoints under `workdir`."""

    def __init__(
        self, workdir: Path, fsync: str, executors: int, slots: int, extra_env: dict[str, str] | None = None
    ) -> None:
        workdir.mkdir(parents=True)
        self.workdir = workdir
        self.frontend = f"ipc://{workdir}/fe"
        config = workdir / "flame.toml"
        config.write_text(f'[storage]\nfsync = "{fsync}"\n')
        env = {**os.environ, "PYTHONPATH": str(REPO), **(extra_env or {})}
        env.pop("FLAME_CONF", None)
        with open(workdir / "cluster.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "flamed", "cluster", "--frontend", self.frontend,
                    "--backend", f"ipc://{workdir}/be", "--state-dir", str(workdir / "state"),
                    "--executors", str(executors), "--slots", str(slots), "--config", str(config),
                    "--log-level", os.environ.get("FLAME_BENCH_LOG", "warning"),
                ],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip

    def session_manager_pid(self) -> int | None:
        """The session manager is the cluster's first child."""
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def rss_mb(pid: int | None) -> float:
    if pid is None:
        return 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_tasks(endpoint: str, sessions: int, tasks: int, tag: str, start_at: float = 0.0) -> float:
    """Run `tasks` echo tasks spread over `sessions` sessions, all submitted at once; check
    every output; return the seconds from the first submit (or `start_at`) to the last result."""
    with open_connection(endpoint, timeout=30) as conn:
        opened = [conn.create_session("flmping") for _ in range(sessions)]
        inputs = [f"{tag}-{i}".encode() for i in range(tasks)]
        if start_at:
            time.sleep(max(0.0, start_at - time.time()))
        started = time.perf_counter()
        futures = [opened[i % sessions].run(data) for i, data in enumerate(inputs)]
        outputs = [f.result(timeout=600) for f in futures]
        elapsed = time.perf_counter() - started
        bad = sum(1 for want, got in zip(inputs, outputs, strict=True) if want != got)
        if bad:
            raise RuntimeError(f"{bad} of {tasks} outputs differ from their inputs")
        for session in opened:
            session.close()
    return elapsed


def _client_process(args: tuple[str, int, int, str, float]) -> float:
    return run_tasks(*args)


def concurrent(endpoint: str, clients: int, sessions: int, tasks: int) -> float:
    """`clients` processes sharing `sessions` sessions and `tasks` tasks, started together."""
    start_at = time.time() + 2.0  # time for every process to connect and open its sessions
    per = [sessions // clients + (i < sessions % clients) for i in range(clients)]
    jobs = [(endpoint, per[i], tasks // clients, f"c{i}", start_at) for i in range(clients)]
    with multiprocessing.get_context("spawn").Pool(clients) as pool:
        pool.map(_client_process, jobs)
    return time.time() - start_at


def latency(endpoint: str, tasks: int) -> list[float]:
    """Seconds per task for `tasks` sequential round trips in one warm session."""
    with open_connection(endpoint, timeout=30) as conn:
        session = conn.create_session("flmping")
        session.run(b"warm").result(timeout=60)
        samples = []
        for i in range(tasks):
            data = f"l{i}".encode()
            started = time.perf_counter()
            output = session.run(data).result(timeout=60)
            samples.append(time.perf_counter() - started)
            if output != data:
                raise RuntimeError(f"task {i}: output {output!r} differs from its input")
        session.close()
    return samples


def storage_counters(endpoint: str) -> tuple[float, float]:
    """(fsyncs, seconds spent in fsync) so far, from the session manager's GetStats."""
    with open_connection(endpoint, timeout=30) as conn:
        stats = conn.get_stats()
    return stats.get("storage_fsyncs", 0.0), stats.get("storage_fsync_seconds", 0.0)


def fsync_share(before: tuple[float, float], after: tuple[float, float], tasks: int) -> dict[str, float]:
    """How much of each sequential round trip the disk took: fsyncs per task, their mean."""
    fsyncs, seconds = after[0] - before[0], after[1] - before[1]
    return {
        "fsyncs_per_task": fsyncs / tasks,
        "mean_fsync_ms": seconds / fsyncs * 1000 if fsyncs else 0.0,
    }


def summary(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_cluster(base: Path, fsync: str, executors: int, args: argparse.Namespace) -> dict[str, Any]:
    cluster = Cluster(base / f"{fsync}-{executors}", fsync, executors, args.slots)
    name = f"fsync={fsync:<6} executor managers={executors}"
    result: dict[str, Any] = {"fsync": fsync, "executor_managers": executors, "slots": args.slots}
    try:
        run_tasks(cluster.frontend, 1, 2000, "warm")
        result["throughput"] = {}
        for n in args.sizes:
            runs = [n / run_tasks(cluster.frontend, 1, n, f"t{n}") for _ in range(args.runs)]
            result["throughput"][str(n)] = summary(runs)
            print(f"{name}  {n:>7} tasks, 1 session:   {fmt(runs)} tasks/s", flush=True)
        n = args.concurrent_tasks
        runs = [n / concurrent(cluster.frontend, 4, 10, n) for _ in range(args.runs)]
        result["concurrent"] = {"clients": 4, "sessions": 10, "tasks": n, **summary(runs)}
        print(f"{name}  {n:>7} tasks, 4 clients x 10 sessions: {fmt(runs)} tasks/s", flush=True)
        p50s, p99s = [], []
        disk_before = storage_counters(cluster.frontend)
        for _ in range(args.runs):
            samples = latency(cluster.frontend, args.latency_tasks)
            p50s.append(percentile(samples, 0.50) * 1000)
            p99s.append(percentile(samples, 0.99) * 1000)
        disk = fsync_share(disk_before, storage_counters(cluster.frontend), args.runs * (args.latency_tasks + 1))
        result["latency_ms"] = {"tasks": args.latency_tasks, "p50": summary(p50s), "p99": summary(p99s), **disk}
        print(
            f"{name}  latency over {args.latency_tasks} sequential tasks: "
            f"p50 {statistics.median(p50s):.2f} ms, p99 {statistics.median(p99s):.2f} ms "
            f"({disk['fsyncs_per_task']:.2f} fsyncs per task, mean fsync {disk['mean_fsync_ms']:.3f} ms)",
            flush=True,
        )
        if not args.quick and fsync == "always" and executors == 1:
            pid = cluster.session_manager_pid()
            before = rss_mb(pid)
            with open_connection(cluster.frontend, timeout=30) as conn:
                session = conn.create_session("flmping")
                futures = [session.run(b"x") for _ in range(100_000)]
                for future in futures:
                    future.result(timeout=600)
                held = rss_mb(pid)  # the session stays open: its 100k tasks are held
                session.close()
            result["session_manager_rss_mb"] = {"before": before, "holding_100k_tasks": held}
            print(f"{name}  session manager RSS {before:.0f} MB -> {held:.0f} MB holding 100k more tasks", flush=True)
    finally:
        cluster.stop()
    return result


def fmt(runs: list[float]) -> str:
    return f"median {statistics.median(runs):>8.0f} (min {min(runs):.0f}, max {max(runs):.0f})"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.decode().strip()


# Dask runs a few hundred no-op tasks per second here; 100,000 of them would take minutes a run.
DASK_MAX_TASKS = 30_000


def _echo(data: bytes) -> bytes:
    return data


def bench_dask(args: argparse.Namespace) -> dict[str, Any] | str:
    """The same no-op workloads on Dask distributed: worker processes = Flame's slots."""
    try:
        import distributed as distributed_module
    except ImportError:
        return "not run: dask distributed is not installed (pip install distributed)"
    distributed: Any = distributed_module  # untyped: used as Any
    Client, LocalCluster = distributed.Client, distributed.LocalCluster  # noqa: N806 - their names
    out: dict[str, Any] = {"workers": args.slots, "threads_per_worker": 1, "throughput": {}}
    with (
        LocalCluster(n_workers=args.slots, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.gather(client.map(_echo, [b"warm-%d" % i for i in range(200)], pure=False))
        for size in [n for n in args.sizes if n <= DASK_MAX_TASKS]:
            rates = []
            for run in range(args.runs):
                inputs = [b"d%d-%d" % (run, i) for i in range(size)]
                started = time.perf_counter()
                outputs = client.gather(client.map(_echo, inputs, pure=False))
                rates.append(size / (time.perf_counter() - started))
                if outputs != inputs:
                    raise SystemExit("dask returned wrong outputs")
            out["throughput"][str(size)] = summary(rates)
        latencies = []
        for i in range(args.latency_tasks):
            started = time.perf_counter()
            client.submit(_echo, b"l%d" % i, pure=False).result()
            latencies.append((time.perf_counter() - started) * 1000)
        latencies.sort()
        out["latency_ms"] = {
            "p50": latencies[len(latencies) // 2],
            "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        }
    print(f"dask: {json.dumps(out)}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and runs (< 60 s)")
    parser.add_argument("--runs", type=int, default=3, help="runs per case (default 3)")
    parser.add_argument("--slots", type=int, default=2, help="slots per executor manager (default 2)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "throughput.json"))
    args = parser.parse_args()
    args.sizes = [1_000, 30_000, 100_000]
    args.concurrent_tasks = 40_000
    args.latency_tasks = 1_000
    setups = [("always", 1), ("interval", 1), ("never", 1), ("always", 2), ("never", 2)]
    if args.quick:
        args.runs, args.sizes, args.concurrent_tasks = 1, [1_000, 30_000], 20_000
        setups = [("always", 1), ("never", 1)]
    base = Path(tempfile.mkdtemp(prefix="ftbench-", dir="/tmp"))  # ipc paths must be short
    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "commit": git_commit(),
        "quick": args.quick,
        "runs": args.runs,
        "cases": [],
    }
    started = time.perf_counter()
    try:
        for fsync, executors in setups:
            results["cases"].append(bench_cluster(base, fsync, executors, args))
        results["dask"] = bench_dask(args)
        dask = results["dask"]
        if isinstance(dask, dict):
            flame = results["cases"][0]["throughput"]
            results["flame_over_dask"] = {
                size: round(flame[size]["median"] / dask["throughput"][size]["median"], 2)
                for size in flame
                if size in dask["throughput"]
            }
            print(f"flame / dask throughput (fsync always, 1 executor manager): {results['flame_over_dask']}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    results["seconds"] = time.perf_counter() - started
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out} ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
