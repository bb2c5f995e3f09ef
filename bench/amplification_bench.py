"""Memory amplification by one client (issue 14, finding 5), replayed against a real session
manager with raw pyzmq sockets.

Each scenario starts a fresh `flamed session-manager` (ipc:// endpoints, a temporary state
dir, no executor manager: tasks stay Pending), builds its session, then lets an *attacker*
socket that never reads (a DEALER with RCVHWM 1, so that its own process buffers nothing)
send its requests. Throughout, a sampler thread reads the session manager's RSS from /proc
every 0.1 s and a well-behaved second client sends a Ping every 0.1 s and times the Pong.

Scenarios (the finding's, then the same attacker at the limits instead of past them):
- watch20k_x200 / watch20k_x1000: WatchTasks naming 20,000 ids each, never read;
- watch10k_x200 / watch10k_x1000: WatchTasks naming 10,000 ids each (limits.max_watch_task_ids);
- list1M_x6: six ListTasks of a 1,000,000-task session (60-byte inputs), never read;
- list1M_x2000: 2,000 such ListTasks;
- subscribe_x100_one_key: with CURVE, 100 connections of one key subscribe to the cluster,
  then a dashboard with another key subscribes (it must get its snapshot);
- subscribe_x100_plain: the same in plain mode, where each connection is a client: the
  global limits.max_subscribers is what bounds it (documented).

Targets: RSS under 300 MB above the scenario's baseline, every Ping answered within 1 s.

    python bench/amplification_bench.py            # every scenario, a few minutes
    python bench/amplification_bench.py --quick    # without the x1000 and x2000 ones

Prints the figures and writes bench/results/amplification.json with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import zmq
import zmq.auth

ROOT = Path(__file__).resolve().parents[1]
HEADER = b"FLM\x01"
TARGET_RSS_MB = 300.0
TARGET_PING_S = 1.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Client:
    """A well-behaved client: one request at a time, every reply read."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, curve: tuple[bytes, ...] | None = None):
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            self.sock.curve_serverkey, self.sock.curve_publickey, self.sock.curve_secretkey = curve
        self.sock.connect(endpoint)
        self.next_id = 0

    def call(self, message: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        self.next_id += 1
        self.sock.send_multipart([HEADER, msgspec.msgpack.encode({**message, "request_id": self.next_id})])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sock.poll(int(max(1, (deadline - time.monotonic()) * 1000))):
                reply: dict[str, Any] = msgspec.msgpack.decode(self.sock.recv_multipart()[1])
                if reply.get("request_id") == self.next_id:
                    return reply
        raise TimeoutError(f"no reply to {message['type']} in {timeout} s")

    def close(self) -> None:
        self.sock.close(0)


class Sampler(threading.Thread):
    """RSS of `pid` and the Ping round trip of its own client, every `interval` seconds."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, pid: int, curve: Any = None) -> None:
        super().__init__(daemon=True)
        self.client = Client(ctx, endpoint, curve)
        self.pid = pid
        self.stop = threading.Event()
        self.samples: list[tuple[float, float, float]] = []  # (t, rss MB, ping s)
        self.started = time.monotonic()

    def run(self) -> None:
        while not self.stop.is_set():
            sent = time.monotonic()
            try:
                self.client.call({"type": "Ping"}, timeout=120)
                ping = time.monotonic() - sent
            except TimeoutError:
                ping = float("inf")
            self.samples.append((round(sent - self.started, 2), round(rss_mb(self.pid), 1), round(ping, 4)))
            self.stop.wait(0.1)
        self.client.close()


class SessionManager:
    def __init__(self, workdir: Path, config: str) -> None:
        self.workdir = workdir
        self.frontend = f"ipc://{workdir}/fe"
        (workdir / "flame.toml").write_text(config)
        argv = [sys.executable, "-m", "flamed", "session-manager", "--frontend", self.frontend]
        argv += ["--backend", f"ipc://{workdir}/be", "--state-dir", str(workdir / "state")]
        argv += ["--config", str(workdir / "flame.toml"), "--log-level", "warning"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("FLAME_CONF", None)
        with open(workdir / "sm.log", "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def make_session(client: Client, session_id: str, tasks: int, size: int) -> None:
    reply = client.call({"type": "CreateSession", "session_id": session_id, "spec": {"application": "flmping"}})
    assert reply["type"] == "SessionReply", reply
    data = b"i" * size if size else None
    for start in range(0, tasks, 50_000):
        count = min(50_000, tasks - start)
        reply = client.call({"type": "CreateTasks", "session_id": session_id, "inputs": [data] * count}, 300)
        assert reply["type"] == "TasksCreated", reply


def deaf(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, curve: tuple[bytes, ...] | None = None) -> Any:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 1)
    if curve is not None:
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = curve
    sock.connect(endpoint)
    return sock


def flood(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, messages: list[dict[str, Any]]) -> Any:
    sock = deaf(ctx, endpoint)
    for i, message in enumerate(messages):
        sock.send_multipart([HEADER, msgspec.msgpack.encode({**message, "request_id": i + 1})])
    return sock


class Keys:
    """CURVE keys (server, two clients) written by `flamed keygen`, and the config lines."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "keys"
        for name in ("server", "alice", "bob"):
            subprocess.run(
                [sys.executable, "-m", "flamed", "keygen", "--out", str(self.dir), "--name", name],
                check=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                capture_output=True,
            )
        for allow, names in (("clients", ["alice", "bob"]), ("nodes", [])):
            (workdir / allow).mkdir(mode=0o700)
            for name in names:
                shutil.copy(self.dir / f"{name}.key", workdir / allow / f"{name}.key")
        self.config = (
            f'[security]\ncurve = true\nserver_secret_key = "{self.dir}/server.key_secret"\n'
            f'allow_dir_clients = "{workdir}/clients"\nallow_dir_nodes = "{workdir}/nodes"\n'
        )

    def curve(self, name: str) -> tuple[bytes, bytes, bytes]:
        server, _ = zmq.auth.load_certificate(self.dir / "server.key")
        public, secret = zmq.auth.load_certificate(self.dir / f"{name}.key_secret")
        assert secret is not None
        return server, public, secret


Attack = Callable[[zmq.Context[zmq.Socket[bytes]], str, dict[str, Any]], list[Any]]


@dataclass
class Scenario:
    name: str
    tasks: int  # in the session the attacker targets (0: no session)
    size: int  # bytes of each task's input
    attack: Attack
    curve: bool = False


def run_scenario(scenario: Scenario, observe: float) -> dict[str, Any]:
    name, tasks, size, attack = scenario.name, scenario.tasks, scenario.size, scenario.attack
    workdir = Path(tempfile.mkdtemp(prefix="flamp-", dir="/tmp"))
    keys = Keys(workdir) if scenario.curve else None
    sm = SessionManager(workdir, '[storage]\nfsync = "never"\n' + (keys.config if keys else ""))
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    own = keys.curve("bob") if keys else None
    client = Client(ctx, sm.frontend, own)
    result: dict[str, Any] = {"scenario": name}
    sockets: list[Any] = []
    try:
        client.call({"type": "Ping"}, timeout=30)
        if tasks:
            make_session(client, "big", tasks, size)
        time.sleep(1.0)  # let the setup's garbage settle before the baseline
        baseline = rss_mb(sm.proc.pid)
        sampler = Sampler(ctx, sm.frontend, sm.proc.pid, own)
        sampler.start()
        sent = time.monotonic()
        extra: dict[str, Any] = {"keys": keys}
        sockets = attack(ctx, sm.frontend, extra)
        result["attack_sent_s"] = round(time.monotonic() - sent, 2)
        time.sleep(observe)
        sampler.stop.set()
        sampler.join(130)
        stats = client.call({"type": "GetStats"})["stats"]
        samples = sampler.samples
        pings = [s[2] for s in samples]
        result.update(
            baseline_rss_mb=round(baseline, 1),
            peak_rss_mb=max(s[1] for s in samples),
            rss_above_baseline_mb=round(max(s[1] for s in samples) - baseline, 1),
            final_rss_mb=samples[-1][1],
            pings=len(pings),
            ping_max_s=max(pings),
            ping_p99_s=sorted(pings)[int(0.99 * (len(pings) - 1))],
            pings_over_1s=sum(1 for p in pings if p > TARGET_PING_S),
            stats={
                k: v
                for k, v in stats.items()
                if k.startswith(("client_", "frontend_", "watch", "subscriptions", "cluster_updates"))
            },
            samples=samples,
            **{k: v for k, v in extra.items() if k != "keys"},
        )
        result["ok"] = result["rss_above_baseline_mb"] < TARGET_RSS_MB and result["ping_max_s"] <= TARGET_PING_S
    finally:
        for sock in sockets:
            sock.close(0)
        client.close()
        sm.stop()
        ctx.term()
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def watch(count: int, ids: int) -> Attack:
    def attack(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, extra: dict[str, Any]) -> list[Any]:
        request = {"type": "WatchTasks", "session_id": "big", "task_ids": list(range(1, ids + 1))}
        return [flood(ctx, endpoint, [request] * count)]

    return attack


def list_tasks(count: int) -> Attack:
    def attack(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, extra: dict[str, Any]) -> list[Any]:
        return [flood(ctx, endpoint, [{"type": "ListTasks", "session_id": "big"}] * count)]

    return attack


def subscribe(count: int) -> Attack:
    """`count` connections of one client subscribe (and never read), then a dashboard of
    another client (with CURVE: another key) subscribes."""

    def attack(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, extra: dict[str, Any]) -> list[Any]:
        keys: Keys | None = extra["keys"]
        attacker_curve = keys.curve("alice") if keys else None
        sockets = []
        for _ in range(count):
            sock = deaf(ctx, endpoint, attacker_curve)
            sock.send_multipart([HEADER, msgspec.msgpack.encode({"type": "SubscribeCluster", "request_id": 1})])
            sockets.append(sock)
        time.sleep(2.0)  # the attacker's subscriptions are in
        dashboard = Client(ctx, endpoint, keys.curve("bob") if keys else None)
        reply = dashboard.call({"type": "SubscribeCluster"}, timeout=30)
        extra["dashboard_reply"] = reply["type"] + (f" {reply['code']}: {reply['message']}" if "code" in reply else "")
        dashboard.close()
        return sockets

    return attack


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the x1000 and x2000 scenarios")
    parser.add_argument("--observe", type=float, default=8.0, help="seconds watched after each attack (8)")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "amplification.json"))
    args = parser.parse_args()
    scenarios = [
        Scenario("watch20k_x200", 20_000, 0, watch(200, 20_000)),
        Scenario("watch20k_x1000", 20_000, 0, watch(1000, 20_000)),
        Scenario("watch10k_x200", 20_000, 0, watch(200, 10_000)),
        Scenario("watch10k_x1000", 20_000, 0, watch(1000, 10_000)),
        Scenario("list1M_x6", 1_000_000, 60, list_tasks(6)),
        Scenario("list1M_x2000", 1_000_000, 60, list_tasks(2000)),
        Scenario("subscribe_x100_one_key", 0, 0, subscribe(100), curve=True),
        Scenario("subscribe_x100_plain", 0, 0, subscribe(100)),
    ]
    if args.quick:
        scenarios = [s for s in scenarios if not s.name.endswith(("x1000", "x2000"))]
    if args.only:
        wanted = set(args.only.split(","))
        scenarios = [s for s in scenarios if s.name in wanted]
    started = time.perf_counter()
    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "targets": {"rss_above_baseline_mb": TARGET_RSS_MB, "ping_max_s": TARGET_PING_S},
        "scenarios": [],
    }
    for scenario in scenarios:
        name = scenario.name
        result = run_scenario(scenario, args.observe)
        if name == "subscribe_x100_one_key":  # another key's dashboard must get in
            result["ok"] = result["ok"] and result["dashboard_reply"] == "ClusterSnapshot"
        results["scenarios"].append(result)
        extra = f"; dashboard: {result['dashboard_reply']}" if "dashboard_reply" in result else ""
        print(
            f"{name:24} RSS {result['baseline_rss_mb']:7.1f} -> peak {result['peak_rss_mb']:7.1f} MB "
            f"(+{result['rss_above_baseline_mb']:.1f}); Ping max {result['ping_max_s']:.3f} s, "
            f"p99 {result['ping_p99_s']:.3f} s, {result['pings_over_1s']} over 1 s of {result['pings']}"
            f"{extra}; {'OK' if result['ok'] else 'MISSED'}",
            flush=True,
        )
        counters = {k: v for k, v in result["stats"].items() if v}
        print(f"{'':24} {counters}", flush=True)
    results["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out} ({results['seconds']:.0f} s)")
    return 0 if all(s["ok"] for s in results["scenarios"]) else 1


if __name__ == "__main__":
    sys.exit(main())
