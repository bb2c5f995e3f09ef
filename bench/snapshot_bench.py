"""Snapshot benchmark: a real session manager holding 1,000,000 tasks writes a snapshot while
1,000 heartbeats a second arrive; then it is killed and restarted from that snapshot, and from
the log alone for comparison.

Measured:
- the longest loop stall while the snapshot is written: the worst Ping round trip (a Ping is
  sent every millisecond from a pipelining DEALER; answered from the loop like heartbeats),
  while 50 simulated nodes heartbeat every 50 ms (1,000 heartbeats a second), and the longest
  gap between the session manager's own heartbeats to those nodes (due every 50 ms);
- the snapshot's size and how long it took (`storage_last_snapshot_duration_ms`);
- restart from the snapshot and from the log alone: seconds until the daemon answers a Ping
  (process start included) and the recovery time it logs; its RSS then, next to its RSS before
  it was killed.

Usage: python bench/snapshot_bench.py [--tasks 1000000] [--sessions 10] [--quick]
Writes bench/results/snapshot.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocol import backend as be  # noqa: E402
from protocol.codec import HEADER, PROTOCOL_VERSION, manager_message_codec  # noqa: E402
from protocol.types import NodeInfo, ResourceRequirement  # noqa: E402

HEARTBEAT = 0.05
NODES = 50  # x 20 heartbeats a second = 1,000 heartbeats a second


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Node:
    """A simulated executor manager that only registers and heartbeats (no slots: it gets no
    executors), timing the gaps between the session manager's heartbeats to it."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, name: str) -> None:
        self.name = name
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.epoch = 0
        self.seq = 0
        self.next_beat = 0.0
        self.registered = False
        #: (time, seconds since the previous one) of each heartbeat from the session manager
        self.gaps: list[tuple[float, float]] = []
        self.last_heard = 0.0

    def send(self, message: msgspec.Struct) -> None:
        self.sock.send_multipart([HEADER, msgspec.msgpack.encode(message)], zmq.DONTWAIT)

    def register(self) -> None:
        info = NodeInfo(name=self.name, hostname=self.name, capacity=ResourceRequirement(), max_executors=0)
        self.send(be.RegisterNode(protocol_version=PROTOCOL_VERSION, node=info, incarnation="bench", executors=[]))

    def beat(self, now: float) -> None:
        if self.registered and now >= self.next_beat:
            self.seq += 1
            self.send(be.Heartbeat(epoch=self.epoch, seq=self.seq))
            self.next_beat += HEARTBEAT
            if self.next_beat < now:
                self.next_beat = now + HEARTBEAT

    def handle(self, message: be.ManagerMessage, now: float) -> None:
        if isinstance(message, be.Registered):
            self.epoch, self.seq, self.registered = message.epoch, 0, True
            self.next_beat = now
        elif isinstance(message, be.Heartbeat | be.Commands):
            if self.last_heard:
                self.gaps.append((now, now - self.last_heard))
            self.last_heard = now
        elif isinstance(message, be.Error):
            self.registered = False
            self.register()


class Load:
    """Drives the nodes' heartbeats and a Ping every millisecond; records their round trips."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], frontend: str, backend: str) -> None:
        self.codec = manager_message_codec()
        self.nodes = [Node(ctx, backend, f"bench-{i}") for i in range(NODES)]
        self.client = ctx.socket(zmq.DEALER)
        self.client.setsockopt(zmq.LINGER, 0)
        self.client.setsockopt(zmq.SNDHWM, 100_000)
        self.client.connect(frontend)
        self.poller = zmq.Poller()
        for node in self.nodes:
            self.poller.register(node.sock, zmq.POLLIN)
        self.poller.register(self.client, zmq.POLLIN)
        self.pings: dict[int, float] = {}
        self.next_ping = 0.0
        self.ping_id = 1 << 30
        self.rtts: list[tuple[float, float]] = []  # (time answered, round trip)
        self.replies: dict[int, dict[str, Any]] = {}

    def start(self) -> None:
        for node in self.nodes:
            node.register()

    def step(self, until: float) -> None:
        """Run until the monotonic time `until`."""
        while (now := time.monotonic()) < until:
            if now >= self.next_ping and len(self.pings) < 5000:
                self.ping_id += 1
                self.pings[self.ping_id] = now
                message = {"type": "Ping", "request_id": self.ping_id}
                self.client.send_multipart([HEADER, msgspec.msgpack.encode(message)], zmq.DONTWAIT)
                self.next_ping = max(self.next_ping + 0.001, now - 0.01)
            for node in self.nodes:
                node.beat(now)
            for sock, _ in self.poller.poll(1):
                while sock.poll(0):
                    frames = sock.recv_multipart()
                    now = time.monotonic()
                    if sock is self.client:
                        reply = msgspec.msgpack.decode(frames[1])
                        sent = self.pings.pop(reply.get("request_id", 0), None)
                        if sent is not None:
                            self.rtts.append((now, now - sent))
                        else:
                            self.replies[reply.get("request_id", 0)] = reply
                        continue
                    node = next(n for n in self.nodes if n.sock is sock)
                    node.handle(self.codec.decode(frames), now)

    def call(self, message: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        """A request on the Ping socket; the Pings and heartbeats go on while it waits."""
        self.ping_id += 1
        request_id = self.ping_id
        self.client.send_multipart(
            [HEADER, msgspec.msgpack.encode({**message, "request_id": request_id})], zmq.DONTWAIT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.step(time.monotonic() + 0.002)
            reply = self.replies.pop(request_id, None)
            if reply is not None:
                return reply
        raise TimeoutError(message["type"])

    def close(self) -> None:
        for node in self.nodes:
            node.sock.close(0)
        self.client.close(0)


def spawn(workdir: Path, state: Path, name: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("FLAME_CONF", None)
    log = open(workdir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flamed",
            "session-manager",
            "--frontend",
            f"ipc://{workdir}/fe",
            "--backend",
            f"ipc://{workdir}/be",
            "--state-dir",
            str(state),
            "--config",
            str(workdir / "flame.toml"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    log.close()
    return proc


def wait_ping(ctx: zmq.Context[zmq.Socket[bytes]], frontend: str, timeout: float = 120.0) -> float:
    """Seconds until the session manager answers a Ping."""
    started = time.monotonic()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(frontend)
    try:
        while time.monotonic() - started < timeout:
            sock.send_multipart([HEADER, msgspec.msgpack.encode({"type": "Ping", "request_id": 1})])
            if sock.poll(200):
                sock.recv_multipart()
                return time.monotonic() - started
        raise TimeoutError("no Pong")
    finally:
        sock.close(0)


def recovery_seconds(log: str) -> float:
    found = re.findall(r"recovered \d+ records \(snapshot at seq \d+\) in ([0-9.]+) s", log)
    return float(found[-1]) if found else -1.0


def restart(ctx: zmq.Context[zmq.Socket[bytes]], workdir: Path, state: Path, name: str) -> dict[str, float]:
    proc = spawn(workdir, state, name)
    try:
        seconds = wait_ping(ctx, f"ipc://{workdir}/fe")
        time.sleep(1.0)  # let it settle (first turns, the allocator) before reading its RSS
        rss = rss_mb(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    log = (workdir / f"{name}.log").read_text(errors="replace")
    return {"seconds_to_first_pong": seconds, "recovery_seconds": recovery_seconds(log), "rss_mb": rss}


def run(tasks: int, sessions: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="flsnap-", dir="/tmp"))
    state = workdir / "state"
    (workdir / "flame.toml").write_text(
        f"[recovery]\nheartbeat_interval = {HEARTBEAT}\nheartbeat_liveness = 40\n"
        "[storage]\nsnapshot_records = 100000000\nsnapshot_log_bytes = 0\n"
        "[limits]\nmax_message_size = 268435456\n"
    )
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    proc = spawn(workdir, state, "sm")
    load: Load | None = None
    try:
        wait_ping(ctx, f"ipc://{workdir}/fe")
        load = Load(ctx, f"ipc://{workdir}/fe", f"ipc://{workdir}/be")
        load.start()
        load.step(time.monotonic() + 1.0)
        per_session = tasks // sessions
        batch = 10_000
        started = time.monotonic()
        for s in range(sessions):
            sid = f"bench-{s}"
            reply = load.call({"type": "CreateSession", "session_id": sid, "spec": {"application": "flmping"}})
            assert reply["type"] == "SessionReply", reply
            for first in range(0, per_session, batch):
                inputs = [b"%016d" % (first + i) for i in range(min(batch, per_session - first))]
                reply = load.call({"type": "CreateTasks", "session_id": sid, "inputs": inputs})
                assert reply["type"] == "TasksCreated", reply
            if s % 2:  # half the sessions closed: their tasks Cancelled (finished)
                load.call({"type": "CloseSession", "session_id": sid})
        load_seconds = time.monotonic() - started
        load.step(time.monotonic() + 2.0)
        rss_before = rss_mb(proc.pid)
        load.rtts.clear()
        for node in load.nodes:
            node.gaps.clear()
        load.step(time.monotonic() + 3.0)
        quiet = max((rtt for _, rtt in load.rtts), default=0.0)
        stats = load.call({"type": "GetStats"})
    finally:
        if load is not None:
            load.close()
        proc.kill()
        proc.wait()
    result: dict[str, Any] = {
        "tasks": tasks,
        "sessions": sessions,
        "load_seconds": load_seconds,
        "rss_mb_holding_tasks": rss_before,
        "quiet_ping_max_ms": quiet * 1000,
        "records": stats["stats"].get("storage_last_seq"),
    }
    # Restart with a snapshot due 40 records after those of the load: recovery replays the log,
    # the heartbeats and Pings start, then records (new sessions) make the snapshot due while
    # they go on.
    due = int(result["records"]) + 40
    text = (workdir / "flame.toml").read_text().replace("snapshot_records = 100000000", f"snapshot_records = {due}")
    (workdir / "flame.toml").write_text(text)
    backup = workdir / "state-log-only"
    shutil.copytree(state, backup)
    proc = spawn(workdir, state, "sm2")
    try:
        wait_ping(ctx, f"ipc://{workdir}/fe")
        load = Load(ctx, f"ipc://{workdir}/fe", f"ipc://{workdir}/be")
        load.start()
        deadline = time.monotonic() + 120
        snapshot = {}
        while time.monotonic() < deadline:
            load.step(time.monotonic() + 0.1)
            # one more record: the snapshot is due after 40 of them
            load.call(
                {
                    "type": "CreateSession",
                    "session_id": f"tick-{time.monotonic_ns()}",
                    "spec": {"application": "flmping"},
                }
            )
            stats = load.call({"type": "GetStats"})["stats"]
            if stats.get("storage_snapshots", 0) >= 1 and stats.get("storage_last_snapshot_duration_ms"):
                snapshot = stats
                break
        load.step(time.monotonic() + 3.0)
        rtts = [rtt for _, rtt in load.rtts]
        gaps = [gap for node in load.nodes for _, gap in node.gaps]
        result.update(
            {
                "snapshot_bytes": snapshot.get("storage_last_snapshot_bytes"),
                "snapshot_duration_ms": snapshot.get("storage_last_snapshot_duration_ms"),
                # the time the loop itself spent on it (older versions: all of it)
                "snapshot_fork_ms": snapshot.get("storage_last_snapshot_fork_ms"),
                # compaction (no fork): starting the compactor
                "snapshot_spawn_ms": snapshot.get("storage_last_snapshot_spawn_ms"),
                "snapshot_finish_ms": snapshot.get("storage_last_snapshot_finish_ms"),
                "snapshot_loop_ms": snapshot.get(
                    "storage_last_snapshot_loop_ms", snapshot.get("storage_last_snapshot_duration_ms")
                ),
                "pings_during_snapshot_window": len(rtts),
                "longest_ping_ms": max(rtts, default=0.0) * 1000,
                "heartbeats_from_session_manager": len(gaps),
                "longest_heartbeat_gap_ms": max(gaps, default=0.0) * 1000,
            }
        )
        time.sleep(0.5)
        rss_after_snapshot = rss_mb(proc.pid)
    finally:
        if load is not None:
            load.close()
        proc.kill()
        proc.wait()
    result["rss_mb_after_snapshot"] = rss_after_snapshot
    (workdir / "flame.toml").write_text(text.replace(f"snapshot_records = {due}", "snapshot_records = 100000000"))
    result["restart_from_snapshot"] = restart(ctx, workdir, state, "sm3")
    result["restart_from_log"] = restart(ctx, workdir, backup, "sm4")
    ctx.term()
    shutil.rmtree(workdir, ignore_errors=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="100,000 tasks")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "snapshot.json"))
    args = parser.parse_args()
    tasks = 100_000 if args.quick else args.tasks
    result = run(tasks, args.sessions)
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
