"""Can idle or trickling sockets hold a daemon's metrics endpoint? (issue 14, finding 9)

Starts a real session manager with `--metrics`, then a hoarder that keeps IDLE connections
that never send a byte and TRICKLING ones that send one byte every 0.05 s, reopening each one
the server closes at once; meanwhile a scraper does SCRAPES real `GET /metrics`, one every
INTERVAL seconds (so the hoarder refills its slots between them). Before the fix the hoarder
filled the 32 slots and most scrapes were refused; now each scrape evicts the oldest
connection (answering it first if its request is complete).

    python bench/metrics_hold.py [--idle 40] [--trickling 10] [--scrapes 50] [--interval 0.1]
    # prints scrapes served / failed, latency p50 / max, connections the server closed,
    # and writes bench/results/metrics_hold.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Hoarder:
    """Holds `idle` + `trickling` connections to the port, reopening what the server closes."""

    def __init__(self, port: int, idle: int, trickling: int) -> None:
        self.port = port
        self.conns = [(self._open(), i < trickling) for i in range(idle + trickling)]
        self.reopened = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _open(self) -> socket.socket:
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        conn.setblocking(False)
        return conn

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            for index, (conn, trickles) in enumerate(self.conns):
                try:
                    closed = conn.recv(1) == b""
                except BlockingIOError:
                    closed = False
                except OSError:
                    closed = True
                if closed:
                    conn.close()
                    self.conns[index] = (self._open(), trickles)
                    self.reopened += 1
                elif trickles:
                    with contextlib.suppress(OSError):
                        conn.send(b"G")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        for conn, _ in self.conns:
            conn.close()


def scrape(url: str) -> float | None:
    """Seconds for one scrape, or None when it failed."""
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read()
    except OSError:
        return None
    return time.perf_counter() - start if b"flame_" in body else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=40)
    parser.add_argument("--trickling", type=int, default=10)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--interval", type=float, default=0.1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flame-metrics-"))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("FLAME_CONF", None)
    log = (work / "sm.log").open("wb")
    sm = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flamed",
            "session-manager",
            "--frontend",
            f"ipc://{work}/fe",
            "--backend",
            f"ipc://{work}/be",
            "--state-dir",
            str(work / "state"),
            "--metrics",
            f"127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 30
        while scrape(url) is None:
            if time.monotonic() > deadline or sm.poll() is not None:
                print((work / "sm.log").read_text(), file=sys.stderr)
                return 1
            time.sleep(0.1)
        hoarder = Hoarder(port, args.idle, args.trickling)
        time.sleep(0.5)  # every slot taken before the first real scrape
        started, closed_before = time.monotonic(), hoarder.reopened
        times = []
        for _ in range(args.scrapes):
            times.append(scrape(url))
            time.sleep(args.interval)
        elapsed = time.monotonic() - started
        closed = hoarder.reopened - closed_before
        hoarder.close()
    finally:
        sm.terminate()
        sm.wait(30)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    served = [t for t in times if t is not None]
    result = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "idle": args.idle,
        "trickling": args.trickling,
        "scrapes": args.scrapes,
        "served": len(served),
        "failed": args.scrapes - len(served),
        "p50_ms": statistics.median(served) * 1000 if served else None,
        "max_ms": max(served) * 1000 if served else None,
        "interval": args.interval,
        "hoarded_connections_closed_by_server": closed,
        "seconds": elapsed,
    }
    print(
        f"{args.idle} idle + {args.trickling} trickling connections held (reopened at once when closed)\n"
        f"scrapes served: {len(served)}/{args.scrapes}, failed: {args.scrapes - len(served)}\n"
        f"scrape latency p50 {result['p50_ms'] or 0:.1f} ms, max {result['max_ms'] or 0:.1f} ms\n"
        f"hoarded connections the server closed meanwhile: {closed} in {elapsed:.1f} s"
    )
    out = REPO / "bench" / "results" / "metrics_hold.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if len(served) == args.scrapes else 1


if __name__ == "__main__":
    sys.exit(main())
