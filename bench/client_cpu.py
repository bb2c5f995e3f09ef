"""The SDK client's own CPU per task, alone: a fake session manager in another process answers
every `CreateTasks{watch}` at once (`TasksCreated`, then `TaskUpdates` pages of `--page`
finished tasks, output = input, as a real one pushes them a loop turn at a time), so what this
process spends (both its threads: the caller's `run()` and `result()`, the I/O thread's
batching, decoding and completions, and the garbage collector) is the client's cost per task,
without the noise of a whole cluster sharing the machine's cores.

Issue 21: the client's cost per task must not grow with the session's size, so it runs the
same loop at several sizes (default 10,000, 100,000 and 1,000,000 tasks, in waves of 100,000 as
bench/compare.py's --million does) and prints us/task and the time spent in the garbage
collector.

    python bench/client_cpu.py                     # 10k, 100k, 1M; writes bench/results/client_cpu.json
    python bench/client_cpu.py --sizes 100000 --repeat 3
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent)]

import zmq  # noqa: E402 - after the path is set

from flamed.client import open_connection  # noqa: E402
from protocol import frontend as fe  # noqa: E402
from protocol.codec import PROTOCOL_VERSION, client_request_codec, encode  # noqa: E402
from protocol.types import Session, SessionSpec, SessionState, Task, TaskState  # noqa: E402

WAVE = 100_000


def fake_session_manager(endpoint: str, page: int, ready: Any) -> None:
    """Answer Hello, CreateSession, CloseSession, Ping and CreateTasks{watch} until killed."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.bind(endpoint)
    ready.set()
    codec = client_request_codec()
    next_id = 1
    while True:
        frames = sock.recv_multipart()
        peer, request = frames[0], codec.decode(frames[1:])
        replies: list[fe.Message] = []
        match request:
            case fe.Hello():
                replies = [fe.Welcome(protocol_version=PROTOCOL_VERSION, server_version="fake")]
            case fe.CreateSession() | fe.CloseSession():
                state = SessionState.Open if isinstance(request, fe.CreateSession) else SessionState.Closed
                session = Session(
                    id=request.session_id or "s", spec=SessionSpec(application="app"), state=state, creation_time=0
                )
                replies = [fe.SessionReply(session=session)]
            case fe.CreateTasks():
                ids = list(range(next_id, next_id + len(request.inputs)))
                next_id += len(ids)
                replies = [fe.TasksCreated(session_id=request.session_id, task_ids=ids)]
                done = [
                    Task(id=i, session_id=request.session_id, state=TaskState.Succeed, input=data, output=data)
                    for i, data in zip(ids, request.inputs, strict=True)
                ]
                for first in range(0, len(done), page):
                    chunk = done[first : first + page]
                    replies.append(fe.TaskUpdates(tasks=chunk, final=first + page >= len(done)))
            case fe.Ping():
                replies = [fe.Pong()]
            case _:
                replies = []
        for reply in replies:
            reply.request_id = request.request_id
            sock.send_multipart([peer, *encode(reply)])


class GcClock:
    """Seconds spent in the garbage collector (all generations) while installed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.thread_time()
        else:
            self.seconds += time.thread_time() - self._started
            self.collections += 1


def run_once(endpoint: str, tasks: int) -> dict[str, float]:
    """`tasks` runs in one session, WAVE outstanding at a time; the client's CPU per task."""
    clock = GcClock()
    with open_connection(endpoint, timeout=60) as conn:
        session = conn.create_session("app")
        gc.collect()
        gc.callbacks.append(clock)
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            for first in range(0, tasks, WAVE):
                inputs = [b"m%d" % i for i in range(first, min(tasks, first + WAVE))]
                outputs = [f.result(timeout=600) for f in [session.run(d) for d in inputs]]
                if outputs != inputs:
                    raise RuntimeError("outputs differ from their inputs")
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        finally:
            gc.callbacks.remove(clock)
        session.close()
    return {
        "us_per_task": cpu / tasks * 1e6,
        "gc_us_per_task": clock.seconds / tasks * 1e6,
        "gc_collections": clock.collections,
        "tasks_per_s": tasks / wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=1, help="runs per size (the median is reported)")
    parser.add_argument("--page", type=int, default=32, help="finished tasks per TaskUpdates push")
    parser.add_argument("--out", default=str(BENCH / "results" / "client_cpu.json"))
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="client-cpu-", dir="/tmp"))
    endpoint = f"ipc://{base}/sm"
    mp = multiprocessing.get_context("spawn")
    ready = mp.Event()
    server = mp.Process(target=fake_session_manager, args=(endpoint, args.page, ready), daemon=True)
    server.start()
    results: dict[str, Any] = {}
    try:
        if not ready.wait(30):
            raise RuntimeError("the fake session manager did not start")
        run_once(endpoint, 2_000)  # warm-up: imports, first connection
        for size in args.sizes:
            runs = [run_once(endpoint, size) for _ in range(args.repeat)]
            median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
            results[str(size)] = {"median": median, "runs": runs}
            print(
                f"{size:>9,} tasks: client {median['us_per_task']:6.2f} us/task "
                f"(gc {median['gc_us_per_task']:5.2f}, {median['gc_collections']:.0f} collections), "
                f"{median['tasks_per_s']:,.0f} tasks/s",
                flush=True,
            )
    finally:
        server.kill()
        server.join(5)
        shutil.rmtree(base, ignore_errors=True)
    report = {
        "bench": "client_cpu",
        "page": args.page,
        "load_average": os.getloadavg(),
        "python": sys.version.split()[0],
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
