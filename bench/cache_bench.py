"""Object-cache figures through a real local cluster (`flamed cluster` on ipc:// endpoints).

- put and get of 1 KB, 1 MB and 100 MB objects (numpy uint8 arrays by default, which travel
  out of band and come back as views; `--kind bytes` for plain bytes, which pickle copies),
  median of several runs:
  put; get from the cache ("remote": a full read, `ObjectRef.version = 0`); get from the
  node-local copy ("local": a full read in a process with `FLAME_CACHE_LOCAL_DIR`, the cache
  only confirming the version); and a repeated get of a current object ("current": one round
  trip, this process's copy returned). Objects up to one chunk (1 MiB) travel inline, so for
  them "local" and "remote" are the same path;
- 1,000 tasks, each reading a 10 MB common object (its ObjectRef is the session's common
  data), on 1 executor manager with 2 slots: as services normally read (each instance keeps
  its copy while it is current), and forcing a full read in every task, from the node-local
  copy, then from the cache (no local directory);
- the object cache's RSS: after start, after the 100 MB transfers, and its peak (VmHWM).

    python bench/cache_bench.py            # a few minutes
    python bench/cache_bench.py --quick    # smaller: 10 MB instead of 100 MB, 200 tasks

Prints the figures and writes bench/results/cache.json with the machine they ran on.
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

import numpy as np  # noqa: E402 - a test extra; the bench needs it, flamed does not

from flamed import client as flame  # noqa: E402 - after the path is set
from flamed.client.cache import ObjectRef, get_object, put_object  # noqa: E402

KB, MB = 1000, 1000 * 1000


class Cluster:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.frontend = f"ipc://{workdir}/fe"
        self.cache = f"ipc://{workdir}/oc"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("FLAME_CONF", None)
        env.pop("FLAME_CACHE_ENDPOINT", None)
        with open(workdir / "cluster.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "flamed", "cluster", "--frontend", self.frontend,
                    "--backend", f"ipc://{workdir}/be", "--cache", self.cache,
                    "--state-dir", str(workdir / "state"), "--executors", "1", "--slots", "2",
                    "--log-level", "warning",
                ],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip

    def cache_pid(self) -> int:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        for pid in children:
            if b"object-cache" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
        raise RuntimeError("no object cache process")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def rss_mb(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return {"rss_mb": round(fields["VmRSS"], 1), "peak_rss_mb": round(fields["VmHWM"], 1)}


def timed(fn: Any, runs: int) -> dict[str, float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": runs}


def fresh(ref: ObjectRef) -> ObjectRef:
    return ObjectRef(ref.endpoint, ref.key, 0)


def _local_worker(encoded: list[bytes], runs: int, local_dir: str, queue: Any) -> None:
    """In a process with a node-local directory: read each object once (which leaves the local
    copy), then time full reads that the local copy serves."""
    os.environ["FLAME_CACHE_LOCAL_DIR"] = local_dir
    results = []
    for data in encoded:
        ref = ObjectRef.decode(data)
        get_object(fresh(ref))
        results.append(timed(lambda ref=ref: get_object(fresh(ref)), runs))
    queue.put(results)


def payload(size: int, kind: str) -> Any:
    data = os.urandom(size)
    return np.frombuffer(data, dtype=np.uint8).copy() if kind == "numpy" else data


def same(a: Any, b: Any) -> bool:
    return bool(np.array_equal(a, b)) if isinstance(a, np.ndarray) else bool(a == b)


def sizes_case(cluster: Cluster, sizes: list[int], workdir: Path, kind: str) -> list[dict[str, Any]]:
    rows = []
    encoded = []
    for size in sizes:
        runs = 200 if size <= KB else 20 if size <= MB else 3
        data = payload(size, kind)
        put = timed(lambda data=data: put_object("bench/sizes", data), runs)
        ref = put_object("bench/sizes", data)
        assert same(get_object(fresh(ref)), data)
        remote = timed(lambda ref=ref: get_object(fresh(ref)), runs)
        get_object(ref)
        current = timed(lambda ref=ref: get_object(ref), min(runs * 5, 200))
        encoded.append(ref.encode())
        rows.append({"size_bytes": size, "put": put, "get_remote": remote, "get_current": current})
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    worker = ctx.Process(target=_local_worker, args=(encoded, 3, str(workdir / "local"), queue))
    worker.start()
    for row, local in zip(rows, queue.get(timeout=600), strict=True):
        row["get_local"] = local
    worker.join(60)
    return rows


def tasks_case(cluster: Cluster, tasks: int, size: int, kind: str) -> list[dict[str, Any]]:
    flame.register_application(
        "cachebench",
        flame.ApplicationAttributes(
            command=sys.executable,
            arguments=[str(REPO / "bench" / "cache_service.py")],
            environments={"PYTHONPATH": str(REPO)},
        ),
    )
    ref = put_object("cachebench/common", payload(size, kind))
    rows = []
    for name, task_input, env in (
        ("current copy", b"", {}),
        ("full read, node-local copy", b"fresh", {}),
        ("full read, from the cache", b"fresh", {"FLAME_CACHE_LOCAL_DIR": ""}),
    ):
        flame.update_application(
            "cachebench",
            flame.ApplicationAttributes(
                command=sys.executable,
                arguments=[str(REPO / "bench" / "cache_service.py")],
                environments={"PYTHONPATH": str(REPO), **env},
            ),
        )
        session = flame.create_session("cachebench", common_data=ref.encode())
        assert session.invoke(task_input) == str(size).encode()  # instances up, copies warm
        start = time.perf_counter()
        futures = [session.run(task_input) for _ in range(tasks)]
        outputs = [f.result(timeout=600) for f in futures]
        elapsed = time.perf_counter() - start
        assert outputs == [str(size).encode()] * tasks
        session.close()
        rows.append(
            {
                "case": name,
                "tasks": tasks,
                "object_bytes": size,
                "seconds": round(elapsed, 3),
                "tasks_per_s": round(tasks / elapsed, 1),
                "object_reads_mb_per_s": round(tasks * size / elapsed / MB, 1),
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 MB instead of 100 MB, 200 tasks")
    parser.add_argument("--kind", choices=["numpy", "bytes"], default="numpy", help="what the objects are")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "cache.json"))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cbench-", dir="/tmp"))
    cluster = Cluster(workdir)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                flame.connect(cluster.frontend, timeout=5)
                if any(n.state == "Ready" for n in flame.list_nodes()):
                    break
            except flame.FlameError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not come up")
            time.sleep(0.2)
        pid = cluster.cache_pid()
        memory = {"after_start": rss_mb(pid)}
        big = 10 * MB if args.quick else 100 * MB
        sizes = sizes_case(cluster, [KB, MB, big], workdir, args.kind)
        memory["after_transfers"] = rss_mb(pid)
        tasks = tasks_case(cluster, 200 if args.quick else 1000, 10 * MB, args.kind)
        memory["end"] = rss_mb(pid)
    finally:
        flame.disconnect()
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    for row in sizes:
        print(
            f"{row['size_bytes']:>11,} B  put {row['put']['median_s'] * 1000:9.2f} ms   "
            f"get remote {row['get_remote']['median_s'] * 1000:9.2f} ms   "
            f"local {row['get_local']['median_s'] * 1000:9.2f} ms   "
            f"current {row['get_current']['median_s'] * 1000:7.3f} ms"
        )
    for row in tasks:
        print(
            f"{row['tasks']} tasks reading {row['object_bytes'] // MB} MB ({row['case']}): {row['tasks_per_s']} tasks/s"
        )
    print(f"object cache RSS: {memory}")
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "quick": args.quick,
        "kind": args.kind,
        "sizes": sizes,
        "tasks": tasks,
        "cache_memory": memory,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
