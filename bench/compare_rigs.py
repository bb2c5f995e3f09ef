"""The three frameworks bench/compare.py runs side by side, behind one interface (`Rig`).

Each rig starts its framework on this machine with `workers` worker processes, runs the
workloads it is asked for, checks every output, and stops. What each workload means per
framework (the closest honest analogue of a Flame session):

- cluster: Flame a `flamed cluster` with 1 executor manager of `workers` slots and fsync
  always; Ray `ray.init(num_cpus=workers)`; Dask a `LocalCluster` of `workers` single-threaded
  worker processes (its scheduler runs in the client's process, as LocalCluster does);
- no-op task: Flame's `flmping` echoes its input; Ray and Dask call a function returning it;
- N sessions: Flame N sessions of one client, tasks round robin (each session gets its own
  instances); Ray N driver threads, each with its share of the remote calls (one driver per
  process is Ray's rule); Dask N `Client`s, one per thread, each with its share;
- cold start: Flame `create_session` -> first result (a new instance process); Ray a new
  actor's first call (Ray may hand it a pre-started worker process), and apart a new remote
  function's first call; Dask a new `Client`'s connect and first result;
- cold 1,000: Flame 1,000 tasks in a new session; Ray 1,000 calls of a remote function never
  called before; Dask 1,000 tasks of a new `Client`; each against the same 1,000 again;
- tasks held: Flame a session with N done tasks left open (session manager RSS); Ray N object
  refs held by the driver (GCS + raylet RSS); Dask N futures held by the client (the RSS of
  the client's process, which runs the scheduler: it holds both).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from proc_tree import Classify, classifier
from throughput_bench import Cluster, latency, run_tasks

from flamed.client import open_connection


class Rig(Protocol):
    name: str
    classify: Classify
    #: the kinds of process whose memory holds the tasks (Flame: the session manager)
    memory_kinds: set[str]

    def stop(self) -> None: ...
    def noop(self, tasks: int, sessions: int) -> float: ...
    def first_task(self) -> float: ...
    def cold_warm(self, tasks: int) -> tuple[float, float]: ...
    def sleeps(self, tasks: int, seconds: float) -> float: ...
    def latency(self, tasks: int) -> list[float]: ...
    def hold(self, tasks: int) -> AbstractContextManager[None]: ...


def check(inputs: list[Any], outputs: list[Any], what: str) -> None:
    bad = sum(1 for want, got in zip(inputs, outputs, strict=True) if want != got)
    if bad:
        raise RuntimeError(f"{what}: {bad} of {len(inputs)} outputs differ from their inputs")


def in_threads(count: int, work: Callable[[int], None]) -> float:
    """Run `work(0..count-1)` in `count` threads released together; seconds to the last end."""
    barrier = threading.Barrier(count + 1)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except BaseException as error:  # re-raised by the caller below
            errors.append(error)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def sequential(tasks: int, call: Callable[[bytes], None]) -> list[float]:
    """Seconds of each of `tasks` sequential `call(input)`s (a round trip, output checked)."""
    samples = []
    for i in range(tasks):
        data = b"l%d" % i
        started = time.perf_counter()
        call(data)
        samples.append(time.perf_counter() - started)
    return samples


# --------------------------------------------------------------------------------------- Flame

FLAME_KINDS = [
    ("session-manager", "session manager"),
    ("executor-manager", "executor managers"),
    ("object-cache", "object cache"),
    ("flamed.apps", "instances"),
    ("flmping", "instances"),
    (" cluster ", "cluster supervisor"),
]


class FlameRig:
    name = "flame"
    memory_kinds = {"session manager"}

    def __init__(self, workdir: Path, workers: int, extra_env: dict[str, str] | None = None) -> None:
        self.classify = classifier(FLAME_KINDS, "client")
        self.cluster = Cluster(workdir, "always", 1, workers, extra_env)
        self.endpoint = self.cluster.frontend
        self.rounds = 0
        run_tasks(self.endpoint, 1, 2000, "warm")

    def stop(self) -> None:
        self.cluster.stop()

    def tag(self) -> str:
        self.rounds += 1
        return f"f{self.rounds}"

    def noop(self, tasks: int, sessions: int) -> float:
        return run_tasks(self.endpoint, sessions, tasks, self.tag())

    def waves(self, tasks: int, wave: int) -> float:
        """`tasks` no-op tasks in one session, `wave` outstanding at a time: a client that
        submits a million at once runs into the session manager's limit of open watches per
        client (each `CreateTasks` batch of the I/O thread is one watch; 1,000 by default)."""
        with open_connection(self.endpoint, timeout=30) as conn:
            session = conn.create_session("flmping")
            started = time.perf_counter()
            for first in range(0, tasks, wave):
                inputs = [b"m%d" % i for i in range(first, min(tasks, first + wave))]
                check(inputs, [f.result(timeout=600) for f in [session.run(d) for d in inputs]], "flame waves")
            elapsed = time.perf_counter() - started
            session.close()
        return elapsed

    def first_task(self) -> float:
        with open_connection(self.endpoint, timeout=30) as conn:
            started = time.perf_counter()
            session = conn.create_session("flmping")
            output = session.run(b"cold").result(timeout=60)
            elapsed = time.perf_counter() - started
            session.close()
        check([b"cold"], [output], "flame first task")
        return elapsed

    def cold_warm(self, tasks: int) -> tuple[float, float]:
        with open_connection(self.endpoint, timeout=30) as conn:
            session = conn.create_session("flmping")
            seconds = []
            for phase in ("cold", "warm"):
                inputs = [f"{phase}-{i}".encode() for i in range(tasks)]
                started = time.perf_counter()
                outputs = [f.result(timeout=600) for f in [session.run(data) for data in inputs]]
                seconds.append(time.perf_counter() - started)
                check(inputs, outputs, f"flame {phase} session")
            session.close()
        return seconds[0], seconds[1]

    def sleeps(self, tasks: int, seconds: float) -> float:
        request = json.dumps({"duration": round(seconds * 1000)}).encode()
        with open_connection(self.endpoint, timeout=30) as conn:
            session = conn.create_session("flmping")
            session.run(request).result(timeout=60)  # its instances started
            started = time.perf_counter()
            outputs = [f.result(timeout=600) for f in [session.run(request) for _ in range(tasks)]]
            elapsed = time.perf_counter() - started
            session.close()
        bad = [o for o in outputs if not (o or b"").startswith(b'{"message": "Completed')]
        if bad:
            raise RuntimeError(f"flame sleeps: {len(bad)} unexpected outputs, e.g. {bad[0]!r}")
        return elapsed

    def latency(self, tasks: int) -> list[float]:
        return latency(self.endpoint, tasks)

    @contextmanager
    def hold(self, tasks: int) -> Iterator[None]:
        with open_connection(self.endpoint, timeout=30) as conn:
            session = conn.create_session("flmping")
            inputs = [b"h%d" % i for i in range(tasks)]
            check(inputs, [f.result(timeout=600) for f in [session.run(data) for data in inputs]], "flame hold")
            yield
            session.close()


# ----------------------------------------------------------------------------------------- Ray


def echo(data: bytes) -> bytes:
    return data


def nap(data: bytes, seconds: float) -> bytes:
    time.sleep(seconds)
    return data


def new_echo(tag: int) -> Callable[[bytes], bytes]:
    """A function Ray has never seen (its pickle differs by `tag`), to time a cold function."""

    def fresh_echo(data: bytes) -> bytes:
        return data if tag >= 0 else b""

    return fresh_echo


class EchoActor:
    def echo(self, data: bytes) -> bytes:
        return data


RAY_KINDS = [
    ("gcs_server", "GCS"),
    ("raylet", "raylet"),
    ("default_worker", "workers"),
    ("ray::", "workers"),
]


class RayRig:
    name = "ray"
    memory_kinds = {"GCS", "raylet"}

    def __init__(self, workers: int) -> None:
        import ray as ray_module

        self.ray: Any = ray_module  # typed or not depending on the version: used as Any
        # Ray's workers cannot import this file: its functions travel by value.
        self.ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        self.ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        self.classify = classifier(RAY_KINDS, "driver (client)")
        self.echo = self.ray.remote(echo)
        self.nap = self.ray.remote(nap)
        self.actor = self.ray.remote(EchoActor)
        self.fresh = 0
        self.ray.get([self.nap.remote(b"w", 0.05) for _ in range(workers * 2)])  # every worker up
        self.ray.get([self.echo.remote(b"w") for _ in range(2000)])

    def stop(self) -> None:
        self.ray.shutdown()

    def run(self, fn: Any, inputs: list[bytes], what: str) -> None:
        check(inputs, self.ray.get([fn.remote(data) for data in inputs]), what)

    def noop(self, tasks: int, sessions: int) -> float:
        shares = [[b"r%d-%d" % (s, i) for i in range(s, tasks, sessions)] for s in range(sessions)]
        if sessions == 1:
            return timed(lambda: self.run(self.echo, shares[0], "ray no-op"))
        return in_threads(sessions, lambda s: self.run(self.echo, shares[s], "ray no-op"))

    def first_task(self) -> float:
        started = time.perf_counter()
        actor = self.actor.remote()
        output = self.ray.get(actor.echo.remote(b"cold"))
        elapsed = time.perf_counter() - started
        self.ray.kill(actor)
        check([b"cold"], [output], "ray first task")
        return elapsed

    def first_function(self) -> float:
        self.fresh += 1
        fn = self.ray.remote(new_echo(self.fresh))
        return timed(lambda: self.run(fn, [b"cold"], "ray new function"))

    def cold_warm(self, tasks: int) -> tuple[float, float]:
        self.fresh += 1
        fn = self.ray.remote(new_echo(self.fresh))
        cold = timed(lambda: self.run(fn, [b"c%d" % i for i in range(tasks)], "ray cold"))
        warm = timed(lambda: self.run(fn, [b"w%d" % i for i in range(tasks)], "ray warm"))
        return cold, warm

    def sleeps(self, tasks: int, seconds: float) -> float:
        inputs = [b"s%d" % i for i in range(tasks)]
        return timed(lambda: check(inputs, self.ray.get([self.nap.remote(d, seconds) for d in inputs]), "ray sleeps"))

    def latency(self, tasks: int) -> list[float]:
        return sequential(tasks, lambda data: self.run(self.echo, [data], "ray latency"))

    @contextmanager
    def hold(self, tasks: int) -> Iterator[None]:
        inputs = [b"h%d" % i for i in range(tasks)]
        refs = [self.echo.remote(data) for data in inputs]
        check(inputs, self.ray.get(refs), "ray hold")
        yield
        del refs


# ---------------------------------------------------------------------------------------- Dask

DASK_KINDS = [("multiprocessing.resource_tracker", "other"), ("spawn_main", "workers"), ("forkserver", "workers")]


class DaskRig:
    name = "dask"
    memory_kinds = {"client + scheduler"}

    def __init__(self, workers: int) -> None:
        import distributed as distributed_module

        self.distributed: Any = distributed_module  # untyped
        self.classify = classifier(DASK_KINDS, "client + scheduler")
        self.cluster = self.distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        self.client = self.new_client()
        self.run(self.client, [b"w%d" % i for i in range(500)], "dask warm-up")

    def new_client(self) -> Any:
        return self.distributed.Client(self.cluster.scheduler_address, set_as_default=False)

    def stop(self) -> None:
        self.client.close()
        self.cluster.close()

    def run(self, client: Any, inputs: list[bytes], what: str) -> None:
        check(inputs, client.gather(client.map(echo, inputs, pure=False)), what)

    def noop(self, tasks: int, sessions: int) -> float:
        shares = [[b"d%d-%d" % (s, i) for i in range(s, tasks, sessions)] for s in range(sessions)]
        if sessions == 1:
            return timed(lambda: self.run(self.client, shares[0], "dask no-op"))
        clients = [self.new_client() for _ in range(sessions)]
        try:
            return in_threads(sessions, lambda s: self.run(clients[s], shares[s], "dask no-op"))
        finally:
            for client in clients:
                client.close()

    def first_task(self) -> float:
        started = time.perf_counter()
        client = self.new_client()
        output = client.submit(echo, b"cold", pure=False).result()
        elapsed = time.perf_counter() - started
        client.close()
        check([b"cold"], [output], "dask first task")
        return elapsed

    def cold_warm(self, tasks: int) -> tuple[float, float]:
        client = self.new_client()
        try:
            cold = timed(lambda: self.run(client, [b"c%d" % i for i in range(tasks)], "dask cold"))
            warm = timed(lambda: self.run(client, [b"w%d" % i for i in range(tasks)], "dask warm"))
        finally:
            client.close()
        return cold, warm

    def sleeps(self, tasks: int, seconds: float) -> float:
        inputs = [b"s%d" % i for i in range(tasks)]
        client = self.client
        return timed(
            lambda: check(inputs, client.gather(client.map(nap, inputs, seconds=seconds, pure=False)), "dask sleeps")
        )

    def latency(self, tasks: int) -> list[float]:
        return sequential(tasks, lambda data: self.run(self.client, [data], "dask latency"))

    @contextmanager
    def hold(self, tasks: int) -> Iterator[None]:
        inputs = [b"h%d" % i for i in range(tasks)]
        futures = self.client.map(echo, inputs, pure=False)
        check(inputs, self.client.gather(futures), "dask hold")
        yield
        del futures


def start(name: str, workdir: Path, workers: int, extra_env: dict[str, str] | None = None) -> Rig:
    if name == "flame":
        return FlameRig(workdir / f"flame-{os.getpid()}-{time.monotonic_ns()}", workers, extra_env)
    if name == "ray":
        return RayRig(workers)
    return DaskRig(workers)
