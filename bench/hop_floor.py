"""The floor under Flame's sequential round trip: the same six ZeroMQ hops between four Python
processes, with none of Flame's logic.

A task's round trip goes client -> session manager -> executor manager -> instance and back,
each hop a DEALER/ROUTER pair over ipc://. Here each process only forwards bytes, with the same
poll-then-drain loop shape as Flame's daemons. The difference between this and
`throughput_bench.py`'s latency is what Flame's own code (and its fsyncs) cost.

    python bench/hop_floor.py            # prints p50/p99, writes bench/results/hop_floor.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import zmq

REPO = Path(__file__).resolve().parents[1]


def _drain(sock: zmq.Socket[bytes]) -> list[list[bytes]]:
    got = []
    while True:
        try:
            got.append(sock.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            return got


def session_manager(base: str) -> None:
    """Frontend ROUTER <-> backend ROUTER: forwards each request to the one executor manager."""
    ctx = zmq.Context()
    front, back = ctx.socket(zmq.ROUTER), ctx.socket(zmq.ROUTER)
    front.bind(f"ipc://{base}/fe")
    back.bind(f"ipc://{base}/be")
    poller = zmq.Poller()
    poller.register(front, zmq.POLLIN)
    poller.register(back, zmq.POLLIN)
    node = client = b""
    while True:
        for sock, _ in poller.poll():
            for frames in _drain(sock):
                if sock is back:
                    if frames[1] == b"hello":
                        node = frames[0]
                    else:
                        front.send_multipart([client, frames[1]])
                else:
                    client = frames[0]
                    back.send_multipart([node, frames[1]])


def executor_manager(base: str) -> None:
    """DEALER to the session manager <-> ROUTER to the instance."""
    ctx = zmq.Context()
    up, down = ctx.socket(zmq.DEALER), ctx.socket(zmq.ROUTER)
    up.connect(f"ipc://{base}/be")
    down.bind(f"ipc://{base}/in")
    up.send(b"hello")
    poller = zmq.Poller()
    poller.register(up, zmq.POLLIN)
    poller.register(down, zmq.POLLIN)
    instance = b""
    while True:
        for sock, _ in poller.poll():
            for frames in _drain(sock):
                if sock is down:
                    if frames[1] == b"hello":
                        instance = frames[0]
                    else:
                        up.send_multipart([frames[1]])
                else:
                    down.send_multipart([instance, frames[0]])


def instance(base: str) -> None:
    """Echoes every message."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(f"ipc://{base}/in")
    sock.send(b"hello")
    while True:
        sock.send(sock.recv())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000, help="round trips per run (default 3000)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "hop_floor.json"))
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="fhop-", dir="/tmp")  # ipc paths must be short
    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=f, args=(base,), daemon=True) for f in (session_manager, executor_manager, instance)]
    for p in procs:
        p.start()
    ctx = zmq.Context()
    client = ctx.socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    client.connect(f"ipc://{base}/fe")
    p50s, p99s = [], []
    try:
        deadline = time.monotonic() + 30
        while True:  # until every process is up and has said hello (a request before is dropped)
            client.send(b"warm")
            if client.poll(200):
                client.recv()
                break
            if time.monotonic() > deadline:
                raise SystemExit("the forwarding chain did not answer within 30 s")
        while client.poll(500):
            client.recv()  # late answers to the warm-up requests sent while it was starting
        for _ in range(200):
            client.send(b"w")
            client.recv()
        for _ in range(args.runs):
            samples = []
            for _ in range(args.tasks):
                started = time.perf_counter()
                client.send(b"x")
                client.recv()
                samples.append((time.perf_counter() - started) * 1000)
            samples.sort()
            p50s.append(samples[len(samples) // 2])
            p99s.append(samples[min(len(samples) - 1, int(0.99 * len(samples)))])
            print(f"six hops, four processes: p50 {p50s[-1]:.3f} ms, p99 {p99s[-1]:.3f} ms", flush=True)
    finally:
        client.close(0)
        for p in procs:
            p.terminate()
            p.join(5)
        shutil.rmtree(base, ignore_errors=True)
    results = {
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "tasks": args.tasks,
        "p50_ms": sorted(p50s)[len(p50s) // 2],
        "p99_ms": sorted(p99s)[len(p99s) // 2],
        "runs": {"p50_ms": p50s, "p99_ms": p99s},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
