"""Task throughput through a real session manager under each fsync policy, and restart time.

Throughput: a session manager subprocess per policy (`always`, `interval`, `never`); one client
keeps `--in-flight` CreateTasks requests of `--batch` tasks (32-byte inputs) outstanding for
`--seconds` and counts acknowledged tasks per second. Tasks are not run (no executors).

Restart: a log holding N tasks (100k and 1M; 100k only with `--quick`) is written, the session
manager is killed with SIGKILL (no snapshot at exit), then timed from start to its first Pong:
once replaying the log, and once more after a clean stop (which writes a snapshot).

    python bench/durability_bench.py           # full run, a few minutes
    python bench/durability_bench.py --quick   # < 60 s

Prints the figures and writes bench/results/durability.json with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import zmq

REPO = Path(__file__).resolve().parents[1]
HEADER = b"FLM\x01"


class Client:
    def __init__(self, endpoint: str) -> None:
        self.sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.next_id = 1

    def send(self, message: dict[str, Any]) -> int:
        request_id = self.next_id
        self.next_id += 1
        self.sock.send_multipart([HEADER, msgspec.msgpack.encode({**message, "request_id": request_id})])
        return request_id

    def receive(self, timeout: float) -> dict[str, Any] | None:
        if not self.sock.poll(int(timeout * 1000)):
            return None
        reply: dict[str, Any] = msgspec.msgpack.decode(self.sock.recv_multipart()[-1])
        return reply

    def call(self, message: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        request_id = self.send(message)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self.receive(deadline - time.monotonic())
            if reply is not None and reply.get("request_id") == request_id:
                return reply
        raise TimeoutError(f"no reply to {message['type']} within {timeout}s")

    def close(self) -> None:
        self.sock.close(0)


class SessionManagerProcess:
    def __init__(self, workdir: Path, fsync: str, snapshot_records: int = 200_000) -> None:
        self.workdir = workdir
        self.frontend = f"ipc://{workdir}/fe"
        self.config = workdir / "flame.toml"
        self.config.write_text(f'[storage]\nfsync = "{fsync}"\nsnapshot_records = {snapshot_records}\n')
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start and wait for the first Pong; returns the seconds that took."""
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("FLAME_CONF", None)
        log = open(self.workdir / "sm.log", "ab")  # noqa: SIM115 - owned by the child
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "flamed", "session-manager", "--frontend", self.frontend,
                "--backend", f"ipc://{self.workdir}/be", "--state-dir", str(self.workdir / "state"),
                "--config", str(self.config), "--log-level", "warning",
            ],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        log.close()
        client = Client(self.frontend)
        try:
            while True:
                client.send({"type": "Ping"})
                reply = client.receive(0.05)
                if reply is not None and reply.get("type") == "Pong":
                    return time.perf_counter() - started
                if self.proc.poll() is not None:
                    raise RuntimeError(f"session manager exited: {(self.workdir / 'sm.log').read_text()[-2000:]}")
        finally:
            client.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(600)


def submit(
    client: Client, session: str, *, seconds: float | None, total: int | None, batch: int, in_flight: int
) -> dict[str, float]:
    """Keep `in_flight` CreateTasks outstanding; stop after `seconds` or `total` tasks."""
    started = time.perf_counter()
    acked = sent = 0
    outstanding = 0
    body = os.urandom(16).hex().encode()
    while True:
        now = time.perf_counter()
        done = (seconds is not None and now - started >= seconds) or (total is not None and sent >= total)
        while not done and outstanding < in_flight:
            client.send({"type": "CreateTasks", "session_id": session, "inputs": [body] * batch})
            outstanding += 1
            sent += batch
            done = total is not None and sent >= total
        if outstanding == 0:
            break
        reply = client.receive(60)
        if reply is None or reply.get("type") != "TasksCreated":
            raise RuntimeError(f"unexpected reply {reply!r}")
        outstanding -= 1
        acked += len(reply["task_ids"])
    elapsed = time.perf_counter() - started
    return {"tasks": acked, "seconds": elapsed, "tasks_per_s": acked / elapsed}


def throughput(base: Path, policy: str, args: argparse.Namespace) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="fdb-", dir=base))
    sm = SessionManagerProcess(workdir, policy)
    sm.start()
    client = Client(sm.frontend)
    try:
        client.call({"type": "CreateSession", "session_id": "b", "spec": {"application": "flmping"}})
        submit(client, "b", seconds=0.5, total=None, batch=args.batch, in_flight=args.in_flight)  # warm-up
        result = submit(client, "b", seconds=args.seconds, total=None, batch=args.batch, in_flight=args.in_flight)
        stats = client.call({"type": "GetStats"})["stats"]
        result["fsyncs"] = stats.get("storage_fsyncs", 0.0)
        result["commits"] = stats.get("storage_commits", 0.0)
    finally:
        client.close()
        sm.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def restart(base: Path, tasks: int, args: argparse.Namespace) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="fdr-", dir=base))
    sm = SessionManagerProcess(workdir, "never", snapshot_records=10_000_000)
    sm.start()
    client = Client(sm.frontend)
    try:
        client.call({"type": "CreateSession", "session_id": "r", "spec": {"application": "flmping"}})
        submit(client, "r", seconds=None, total=tasks, batch=1000, in_flight=8)
    finally:
        client.close()
    sm.kill()
    log_bytes = sum(p.stat().st_size for p in (workdir / "state").glob("wal-*.log"))
    replay = sm.start()
    sm.stop()  # clean stop: writes a snapshot
    from_snapshot = sm.start()
    sm.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        "tasks": tasks,
        "log_bytes": log_bytes,
        "restart_from_log_s": replay,
        "restart_from_snapshot_s": from_snapshot,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs and 100k tasks only (< 60 s)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per throughput run (default 5)")
    parser.add_argument("--batch", type=int, default=100, help="tasks per CreateTasks (default 100)")
    parser.add_argument("--in-flight", type=int, default=8, help="outstanding requests (default 8)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "durability.json"))
    args = parser.parse_args()
    if args.quick:
        args.seconds = min(args.seconds, 3.0)
    base = Path(tempfile.mkdtemp(prefix="fdbench-", dir="/tmp"))  # ipc paths must be short
    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "settings": {"batch": args.batch, "in_flight": args.in_flight, "seconds": args.seconds},
        "throughput": {},
        "restart": [],
    }
    try:
        for policy in ("always", "interval", "never"):
            result = throughput(base, policy, args)
            results["throughput"][policy] = result
            print(
                f"throughput fsync={policy:<8} {result['tasks_per_s']:>10.0f} tasks/s  ({result['fsyncs']:.0f} fsyncs)"
            )
        never = results["throughput"]["never"]["tasks_per_s"]
        ratio = results["throughput"]["always"]["tasks_per_s"] / never
        results["always_vs_never"] = ratio
        print(f"always / never: {ratio:.2f}")
        for tasks in (100_000,) if args.quick else (100_000, 1_000_000):
            result = restart(base, tasks, args)
            results["restart"].append(result)
            print(
                f"restart with {tasks:>9} tasks: {result['restart_from_log_s']:.2f} s from the log "
                f"({result['log_bytes'] / 1e6:.1f} MB), {result['restart_from_snapshot_s']:.2f} s from a snapshot"
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
