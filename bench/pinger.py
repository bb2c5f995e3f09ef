"""A client's Ping round trips, sampled densely, next to a benchmark's load.

A separate process (so that the benchmark's own loop does not delay its sends) sends one `Ping`
at a time to a session manager's frontend, every `--every` seconds, until SIGTERM; then prints
one JSON line: the samples' count, p50, p99 and max in milliseconds. A probe every 0.25 s over a
ten-second workload is about 40 samples, whose "p99" is their max; at 50 Hz it is hundreds.

Usage from a benchmark: `proc = start(frontend)` when the load begins, `stop(proc)` when it
ends (a dict of figures). Alone: python bench/pinger.py ENDPOINT [--every 0.02]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocol.codec import HEADER  # noqa: E402

#: Request ids of the pinger's Pings: apart from any the benchmark's own client uses.
FIRST_ID = 10_000_000


def start(endpoint: str, every: float = 0.02) -> subprocess.Popen[str]:
    """The pinger, started against `endpoint` (stop it with `stop`)."""
    argv = [sys.executable, __file__, endpoint, "--every", str(every)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Stop the pinger; its figures (`dense_pings`, `dense_ping_ms_p50`, `_p99`, `_max`)."""
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return figures


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def ping_until_stopped(endpoint: str, every: float) -> list[float]:
    """Round trips in milliseconds, one Ping at a time, until SIGTERM."""
    stopped = False

    def on_term(*_: object) -> None:
        nonlocal stopped
        stopped = True

    signal.signal(signal.SIGTERM, on_term)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    samples: list[float] = []
    request_id = FIRST_ID
    try:
        while not stopped:
            request_id += 1
            sent = time.perf_counter()
            sock.send_multipart([HEADER, msgspec.msgpack.encode({"type": "Ping", "request_id": request_id})])
            while not stopped:
                if sock.poll(100) and msgspec.msgpack.decode(sock.recv_multipart()[1]).get("request_id") == request_id:
                    samples.append((time.perf_counter() - sent) * 1000)
                    break
            time.sleep(every)
    finally:
        ctx.destroy(0)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint")
    parser.add_argument("--every", type=float, default=0.02, help="seconds between two Pings")
    args = parser.parse_args()
    samples = ping_until_stopped(args.endpoint, args.every)
    figures = {
        "dense_pings": len(samples),
        "dense_ping_ms_p50": round(percentile(samples, 50), 2),
        "dense_ping_ms_p99": round(percentile(samples, 99), 2),
        "dense_ping_ms_max": round(max(samples, default=0.0), 2),
    }
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
