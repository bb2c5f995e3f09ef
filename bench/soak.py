"""Soak: a real session manager under sustained load at full speed, for a task count or a time.

Issue 17: a long-running service must hold what its retention config says, not its history.
The executor managers are simulated in this process (bench/scale_bench.py's `FakeNode`: they
register, heartbeat and complete every launched task at once), so the session manager is the
only thing under test and runs as fast as it can. The workload: many short sessions (each gets
`--session-tasks` tasks in batches, waits for them, is closed) kept `--parallel` at a time,
plus one long-lived session that gets a batch whenever its last one is done.

Every `--every` seconds (10) it samples: the session manager's RSS, the state directory's
size, tasks completed per second since the last sample, and the round trips of Pings sent every
100 ms meanwhile (p50, p99, max). Also at every `--milestone` tasks (RSS, state dir, and the
first session's fate: `GetSession` must answer that it expired under retention). Writes JSON.

Usage:
  python bench/soak.py [--tasks 10000000] [--seconds 0] [--closed-session-ttl S]
                       [--max-finished-tasks N] [--milestone N] [--out FILE]
The issue's acceptance run:
  python bench/soak.py --tasks 400000 --closed-session-ttl 1 --max-finished-tasks 20000 \\
      --milestone 100000 --out bench/results/retention_acceptance.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
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
sys.path.insert(0, str(ROOT / "bench"))

from scale_bench import FakeNode, percentile  # noqa: E402

from protocol.codec import HEADER, manager_message_codec  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file()) / (1 << 20) if path.exists() else 0.0


class Client:
    """A pipelining DEALER: requests go out at once, replies are matched by request id."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 100_000)
        self.sock.connect(endpoint)
        self.next_id = 1
        self.replies: dict[int, dict[str, Any]] = {}

    def send(self, message: dict[str, Any]) -> int:
        request_id = self.next_id
        self.next_id += 1
        self.sock.send_multipart([HEADER, msgspec.msgpack.encode({**message, "request_id": request_id})])
        return request_id

    def read(self) -> None:
        while self.sock.poll(0):
            reply: dict[str, Any] = msgspec.msgpack.decode(self.sock.recv_multipart()[1])
            self.replies[reply.get("request_id", 0)] = reply

    def take(self, request_id: int) -> dict[str, Any] | None:
        return self.replies.pop(request_id, None)


class Session:
    def __init__(self, session_id: str, quota: int | None) -> None:
        self.id = session_id
        self.quota = quota  # None: the long-lived one
        self.created = 0
        self.batch_done = 0  # tasks of its batches created and acknowledged
        self.succeed = 0
        self.pending: int | None = None  # request in flight
        self.kind = ""
        self.closed = False
        self.wait_until = 0.0


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="flsoak-", dir="/tmp"))
    frontend, backend = f"ipc://{workdir}/fe", f"ipc://{workdir}/be"
    state = workdir / "state"
    retention = ""  # the defaults need no table (and a version without retention runs too)
    if (args.closed_session_ttl, args.max_finished_tasks) != (86400.0, 1_000_000):
        retention = f"[retention]\nclosed_session_ttl = {float(args.closed_session_ttl)}\n"
        retention += f"max_finished_tasks = {args.max_finished_tasks}\n"
    (workdir / "flame.toml").write_text(
        f'[recovery]\nheartbeat_interval = 1.0\nheartbeat_liveness = 5\n[storage]\nfsync = "{args.fsync}"\n' + retention
    )
    argv = [sys.executable, "-m", "flamed", "session-manager", "--frontend", frontend, "--backend", backend]
    argv += ["--state-dir", str(state), "--config", str(workdir / "flame.toml"), "--log-level", args.sm_log_level]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("FLAME_CONF", None)
    log = open(workdir / "sm.log", "wb")  # noqa: SIM115 - owned by the child
    sm = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    codec = manager_message_codec()
    fleet = [FakeNode(ctx, backend, f"node-{i:02d}", args.slots) for i in range(args.nodes)]
    by_sock = {n.sock: n for n in fleet}
    client = Client(ctx, frontend)
    prober = Client(ctx, frontend)
    poller = zmq.Poller()
    for n in fleet:
        poller.register(n.sock, zmq.POLLIN)
    poller.register(client.sock, zmq.POLLIN)
    poller.register(prober.sock, zmq.POLLIN)
    samples: list[dict[str, Any]] = []
    milestones: list[dict[str, Any]] = []
    result: dict[str, Any] = {
        "tasks_goal": args.tasks,
        "seconds_goal": args.seconds,
        "closed_session_ttl": args.closed_session_ttl,
        "max_finished_tasks": args.max_finished_tasks,
        "session_tasks": args.session_tasks,
        "nodes": args.nodes,
        "slots": args.slots,
    }
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rid = prober.send({"type": "Ping"})
            if prober.sock.poll(200):
                prober.read()
                if prober.take(rid):
                    break
        for node in fleet:
            node.register()
        sessions: list[Session] = []
        long_lived = Session("long-lived", None)
        numbering = 0
        started = time.monotonic()
        completed = 0  # tasks succeeded, as the sessions' counts say
        closed_sessions: list[str] = []
        pings: list[float] = []
        ping_sent: dict[int, float] = {}
        next_ping = started
        next_sample = started + args.every
        last_sample_t, last_sample_done = started, 0
        next_milestone = args.milestone or 0
        created_total = 0
        first_session = ""

        def issue(session: Session, message: dict[str, Any], kind: str) -> None:
            session.pending = client.send(message)
            session.kind = kind

        def create_tasks(session: Session, want: int) -> int:
            """Submit `want` more tasks of 16-byte inputs to `session`; returns `want`."""
            session.created += want
            inputs = [b"%016d" % i for i in range(want)]
            issue(session, {"type": "CreateTasks", "session_id": session.id, "inputs": inputs}, "tasks")
            return want

        def poll_later(session: Session) -> None:
            """Ask for its counts again in 20 ms (not in a tight loop of requests)."""
            session.kind, session.wait_until = "wait", time.monotonic() + 0.02

        issue(
            long_lived,
            {"type": "CreateSession", "session_id": long_lived.id, "spec": {"application": "flmping"}},
            "create",
        )
        while True:
            if sm.poll() is not None:
                raise RuntimeError(f"the session manager exited with status {sm.returncode}")
            now = time.monotonic()
            goal_reached = bool(args.tasks and created_total >= args.tasks) or bool(
                args.seconds and now - started >= args.seconds
            )
            # keep `parallel` short sessions going
            while not goal_reached and len(sessions) < args.parallel:
                numbering += 1
                session = Session(f"soak-{numbering:07d}", args.session_tasks)
                first_session = first_session or session.id
                sessions.append(session)
                issue(
                    session,
                    {"type": "CreateSession", "session_id": session.id, "spec": {"application": "flmping"}},
                    "create",
                )
            for sock, _ in poller.poll(5):
                if sock is client.sock:
                    client.read()
                elif sock is prober.sock:
                    prober.read()
                    for rid in [r for r in ping_sent if r in prober.replies]:
                        prober.replies.pop(rid)
                        pings.append((time.monotonic() - ping_sent.pop(rid)) * 1000)
                else:
                    node = by_sock[sock]
                    while True:
                        try:
                            frames = node.sock.recv_multipart(zmq.DONTWAIT)
                        except zmq.Again:
                            break
                        node.handle(codec.decode(frames), time.monotonic())
            now = time.monotonic()
            for node in fleet:
                node.beat(now)
            if now >= next_ping:
                ping_sent[prober.send({"type": "Ping"})] = now
                next_ping = now + 0.1
            # advance every session whose request was answered
            for session in [long_lived, *sessions]:
                if session.pending is None:
                    if session.kind == "wait" and now >= session.wait_until:
                        issue(session, {"type": "GetSession", "session_id": session.id}, "get")
                    continue
                reply = client.take(session.pending)
                if reply is None:
                    continue
                session.pending = None
                kind = session.kind
                if reply["type"] == "Error":
                    raise RuntimeError(f"{session.id} {kind}: {reply}")
                if kind in {"create", "tasks"}:
                    if kind == "tasks":
                        session.batch_done = session.created
                    want = args.batch if session.quota is None else min(args.batch, session.quota - session.created)
                    if session.quota is None and session.created > session.succeed:
                        poll_later(session)
                    elif want > 0 and not goal_reached:
                        created_total += create_tasks(session, want)
                    else:
                        poll_later(session)
                elif kind == "get":
                    got = reply["session"].get("succeed", 0)
                    completed += got - session.succeed
                    session.succeed = got
                    if session.quota is None:
                        if session.succeed >= session.created and not goal_reached:
                            created_total += create_tasks(session, args.batch)
                        else:
                            poll_later(session)
                    elif session.succeed >= session.created and (session.created >= session.quota or goal_reached):
                        issue(session, {"type": "CloseSession", "session_id": session.id}, "close")
                    elif session.succeed >= session.batch_done and session.created < session.quota and not goal_reached:
                        want = min(args.batch, session.quota - session.created)
                        created_total += create_tasks(session, want)
                    else:
                        poll_later(session)
                elif kind == "close":
                    session.closed = True
                    closed_sessions.append(session.id)
            sessions = [s for s in sessions if not s.closed]
            now = time.monotonic()
            if now >= next_sample:
                window = list(pings)
                pings.clear()
                sample = {
                    "t": round(now - started, 1),
                    "tasks_completed": completed,
                    "tasks_per_s": round((completed - last_sample_done) / (now - last_sample_t)),
                    "rss_mb": round(rss_mb(sm.pid), 1),
                    "state_dir_mb": round(dir_mb(state), 1),
                    "ping_ms_p50": round(statistics.median(window), 2) if window else None,
                    "ping_ms_p99": round(percentile(window, 99), 2) if window else None,
                    "ping_ms_max": round(max(window), 2) if window else None,
                    "sessions_closed": len(closed_sessions),
                }
                samples.append(sample)
                print(json.dumps(sample), flush=True)
                last_sample_t, last_sample_done = now, completed
                next_sample = now + args.every
            if next_milestone and completed >= next_milestone:
                milestones.append(
                    {
                        "tasks_completed": completed,
                        "t": round(now - started, 1),
                        "rss_mb": round(rss_mb(sm.pid), 1),
                        "state_dir_mb": round(dir_mb(state), 1),
                    }
                )
                print("milestone", json.dumps(milestones[-1]), flush=True)
                next_milestone += args.milestone
            if (
                goal_reached
                and not sessions
                and long_lived.succeed >= long_lived.created
                and long_lived.pending is None
            ):
                break
        elapsed = time.monotonic() - started
        stats_id = prober.send({"type": "GetStats"})
        first_id = prober.send({"type": "GetSession", "session_id": first_session})
        end = time.monotonic() + 30
        while (stats_id in prober.replies) + (first_id in prober.replies) < 2 and time.monotonic() < end:
            prober.sock.poll(100)
            prober.read()
        stats = prober.replies.get(stats_id, {}).get("stats", {})
        result.update(
            {
                "tasks_completed": completed,
                "seconds": round(elapsed, 1),
                "tasks_per_s": round(completed / elapsed),
                "sessions_closed": len(closed_sessions),
                "rss_mb_end": round(rss_mb(sm.pid), 1),
                "state_dir_mb_end": round(dir_mb(state), 1),
                "first_session": first_session,
                "first_session_read": prober.replies.get(first_id),
                "sessions_expired_total": stats.get("sessions_expired_total"),
                "tasks_expired_total": stats.get("tasks_expired_total"),
                "tasks_held": stats.get("tasks_held"),
                "finished_tasks_held": stats.get("finished_tasks_held"),
                "storage_snapshots": stats.get("storage_snapshots"),
                "storage_last_snapshot_loop_ms": stats.get("storage_last_snapshot_loop_ms"),
                "long_lived_tasks_created": long_lived.created,
                "verdict": verdict(samples),
                "samples": samples,
                "milestones": milestones,
            }
        )
    finally:
        sm.terminate()
        try:
            sm.wait(60)
        except subprocess.TimeoutExpired:
            sm.kill()
            sm.wait()
        log.close()
        tail = (workdir / "sm.log").read_text(errors="replace")[-2000:]
        if tail.strip():
            print("session manager log (tail):\n" + tail, file=sys.stderr)
        ctx.destroy(0)
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def verdict(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Issue 17's checks over the samples: throughput of the last tenth of the run against the
    first tenth, RSS and state dir after warm-up (the first fifth), the worst Ping p99."""
    if len(samples) < 5:
        return {}
    span = samples[-1]["t"]
    first = [s["tasks_per_s"] for s in samples if s["t"] <= span / 10 + 1e-9] or [samples[0]["tasks_per_s"]]
    last = [s["tasks_per_s"] for s in samples if s["t"] > span * 0.9 - 1e-9]
    warm = [s for s in samples if s["t"] > span / 5]
    first_rate, last_rate = statistics.mean(first), statistics.mean(last)
    return {
        "first_tenth_tasks_per_s": round(first_rate),
        "last_tenth_tasks_per_s": round(last_rate),
        "last_vs_first": round(last_rate / first_rate, 3),
        "rss_mb_after_warmup": [min(s["rss_mb"] for s in warm), max(s["rss_mb"] for s in warm)],
        "state_dir_mb_after_warmup": [min(s["state_dir_mb"] for s in warm), max(s["state_dir_mb"] for s in warm)],
        "ping_ms_p99_worst_sample": max((s["ping_ms_p99"] or 0.0) for s in samples),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000_000, help="stop after this many tasks (0: no limit)")
    parser.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: no limit)")
    parser.add_argument("--closed-session-ttl", type=float, default=86400.0)
    parser.add_argument("--max-finished-tasks", type=int, default=1_000_000)
    parser.add_argument("--session-tasks", type=int, default=5_000, help="tasks per short session")
    parser.add_argument("--batch", type=int, default=1_000, help="tasks per CreateTasks")
    parser.add_argument("--parallel", type=int, default=4, help="short sessions at a time")
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--milestone", type=int, default=0, help="also sample every this many tasks")
    parser.add_argument("--fsync", default="always", choices=["always", "interval", "never"])
    parser.add_argument("--sm-log-level", default="warning", help="the session manager's log level")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "soak.json"))
    args = parser.parse_args()
    result = run(args)
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
