"""Runner calls side by side with Ray and Dask on the same machine.

Workloads, on one warm service / pool per framework with as many worker processes as Flame
has slots (the machine's cores by default), all calls of one function `work(x, seconds)`:

- no-op: 10,000 calls of a function that returns its argument, all submitted at once, timed
  from the first submit to the last result (tasks/s);
- 10 ms: 2,000 calls of a function that sleeps 10 ms; efficiency = ideal time
  (calls x 10 ms / workers) over the measured time;
- latency: 200 sequential calls (submit, wait for the result) of the no-op, p50/p99 (first).

Flame runs a `flamed cluster` (one executor manager) on ipc:// endpoints in a temporary
directory; its Runner packages an empty project directory, so the figures are the Runner's
overhead per call (a task through the session manager, the result through the object cache).
Ray (`ray.remote`) and Dask (`distributed.Client.submit` on a LocalCluster of single-threaded
worker processes) are bench-only extras (`pip install -e '.[bench]'`); a framework that is not
installed is reported as such.

    python bench/runner_bench.py            # full run
    python bench/runner_bench.py --quick    # 1,000 / 200 calls

Prints the figures and writes bench/results/runner.json with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SLEEP = 0.010


def work(x: int, seconds: float = 0.0) -> int:
    """The one function every framework runs: a no-op, or a sleep of `seconds`."""
    if seconds:
        time.sleep(seconds)
    return x


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(  # noqa: PLR0917 - the workloads and their sizes
    submit: Callable[[int, float], Any],
    gather: Callable[[list[Any]], list[Any]],
    calls: int,
    sleeps: int,
    latency_calls: int,
    workers: int,
) -> dict[str, Any]:
    """The three workloads with `submit(x, seconds) -> future` (a call of `work`) and
    `gather(futures) -> values`, on one warm pool of `workers`."""
    gather([submit(i, 0.05) for i in range(workers * 2)])  # every worker started and warm
    lat = []
    for i in range(latency_calls):
        t = time.perf_counter()
        gather([submit(i, 0.0)])
        lat.append((time.perf_counter() - t) * 1000)
    start = time.perf_counter()
    out = gather([submit(i, 0.0) for i in range(calls)])
    noop_s = time.perf_counter() - start
    assert out == list(range(calls)), "no-op results differ"
    start = time.perf_counter()
    out = gather([submit(i, SLEEP) for i in range(sleeps)])
    sleep_s = time.perf_counter() - start
    assert out == list(range(sleeps)), "10 ms results differ"
    ideal = sleeps * SLEEP / workers
    return {
        "noop_calls": calls,
        "noop_seconds": round(noop_s, 3),
        "noop_tasks_per_s": round(calls / noop_s, 1),
        "sleep_calls": sleeps,
        "sleep_seconds": round(sleep_s, 3),
        "sleep_tasks_per_s": round(sleeps / sleep_s, 1),
        "sleep_efficiency": round(ideal / sleep_s, 3),
        "latency_ms_p50": round(statistics.median(lat), 3),
        "latency_ms_p99": round(percentile(lat, 0.99), 3),
    }


def bench_flame(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    from flamed import client as flame
    from flamed.runner import Runner

    tmp = Path(tempfile.mkdtemp(prefix="runner-bench-", dir="/tmp"))
    project = tmp / "project"
    project.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("FLAME_CONF", None)
    frontend = f"ipc://{tmp}/fe"
    with open(tmp / "cluster.log", "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "flamed", "cluster", "--frontend", frontend, "--backend",
                f"ipc://{tmp}/be", "--state-dir", str(tmp / "state"), "--slots", str(workers),
                "--log-level", "warning",
            ],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    cwd = os.getcwd()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                flame.connect(frontend)
                if any(n.state == "Ready" for n in flame.list_nodes()):
                    break
            except flame.FlameError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the cluster did not start; see {tmp / 'cluster.log'}")
            time.sleep(0.1)
        os.chdir(project)
        started = time.perf_counter()
        with Runner("runner-bench") as rr:
            service = rr.service(work, warmup=workers)

            def submit(x: int, seconds: float) -> Any:
                return service(x, seconds) if seconds else service(x)

            first = time.perf_counter()
            submit(0, 0.0).get()
            first_call_s = time.perf_counter() - first
            result = measure(submit, rr.get, args.calls, args.sleeps, args.latency, workers)
        result["first_call_seconds"] = round(first_call_s, 3)
        result["runner_start_to_close_seconds"] = round(time.perf_counter() - started, 3)
        return result
    finally:
        os.chdir(cwd)
        flame.disconnect()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def bench_ray(args: argparse.Namespace, workers: int) -> dict[str, Any] | str:
    try:
        import ray as ray_module
    except ImportError:
        return "not installed (pip install ray)"
    ray: Any = ray_module  # typed or not depending on the version installed: used as Any
    ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        remote = ray.remote(work)

        def submit(x: int, seconds: float) -> Any:
            return remote.remote(x, seconds)

        return measure(submit, ray.get, args.calls, args.sleeps, args.latency, workers)
    finally:
        ray.shutdown()


def bench_dask(args: argparse.Namespace, workers: int) -> dict[str, Any] | str:
    try:
        import distributed as distributed_module
    except ImportError:
        return "not installed (pip install distributed)"
    distributed: Any = distributed_module  # untyped
    with (
        distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):

        def submit(x: int, seconds: float) -> Any:
            return client.submit(work, x, seconds, pure=False)

        return measure(submit, client.gather, args.calls, args.sleeps, args.latency, workers)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 no-op and 200 10 ms calls")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="slots / worker processes")
    parser.add_argument("--only", choices=["flame", "ray", "dask"], action="append", help="run only these")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "runner.json"))
    args = parser.parse_args()
    args.calls, args.sleeps, args.latency = (1_000, 200, 100) if args.quick else (10_000, 2_000, 200)
    workers = args.workers
    results: dict[str, Any] = {
        "bench": "runner_bench",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "workers": workers,
        "quick": args.quick,
    }
    for name, fn in (("flame", bench_flame), ("ray", bench_ray), ("dask", bench_dask)):
        if args.only and name not in args.only:
            continue
        print(f"--- {name}", flush=True)
        results[name] = fn(args, workers)
        print(json.dumps(results[name], indent=1), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
