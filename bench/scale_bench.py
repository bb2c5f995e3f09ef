"""Scale benchmark: one real session manager, many executor managers, a task workload.

The executor managers are simulated (one DEALER each, speaking the backend protocol as a real
one does: register, heartbeat every interval, answer every command, complete launched tasks at
once) by simulator processes of about 1,000 nodes each (`--sim-procs`). A simulator waits on
its sockets' descriptors with epoll and wakes at most every `SIM_TURN` seconds, so a turn costs
the nodes that have something to do, not the fleet (a `zmq.Poller` over 1,000 sockets woken by
each of the session manager's heartbeats took a core per simulator: ten of them starved the
session manager they measure, and at 10,000 nodes heartbeats went out seconds late). Measured:

- session-manager CPU (from /proc) while idle with all nodes and under the task workload;
- frontend round trip (Ping) p50/p99 under load: how responsive the loop stays;
- heartbeat age p99/max as the session manager reports it (`last_heartbeat_age` per node);
- false Unknown transitions: nodes that heartbeat on time but were marked Unknown (must be 0);
- scheduling ramp-up: seconds until every node holds an executor of the session.

With `--tasks 0` only the idle part runs (registration, then `--idle` seconds of heartbeats).

Usage: python bench/scale_bench.py [--nodes 200] [--slots 2] [--tasks 100000] [--idle 10] [--sim-procs N] [--quick]
Writes bench/results/scale.json (`--out` for another file).
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import random
import resource
import select
import shutil
import signal
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

from protocol import backend as be  # noqa: E402
from protocol.codec import HEADER, PROTOCOL_VERSION, manager_message_codec  # noqa: E402
from protocol.types import NodeInfo, ResourceRequirement, TaskState  # noqa: E402

HEARTBEAT = 1.0
#: Seconds a simulator's turn lasts at least: what arrives meanwhile is read in one wake-up.
SIM_TURN = 0.005
#: Seconds between a simulator's reads of every socket, the safety net of its epoll wake-ups.
SIM_SWEEP = 1.0


class FakeNode:
    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        endpoint: str,
        name: str,
        slots: int,
        sent: set[FakeNode] | None = None,
    ) -> None:
        self.name = name
        self.slots = slots
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, f"{name}/{os.getpid()}".encode())
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        #: the descriptor that wakes the simulator when this socket may have something to read
        self.fd = int(self.sock.getsockopt(zmq.FD))
        #: nodes that sent since their socket was last read (a send may take the wake-up of
        #: the socket's descriptor, so they are read after every send); a caller that polls
        #: the sockets themselves (bench/soak.py) has no use for it
        self._sent: set[FakeNode] = sent if sent is not None else set()
        self.epoch = 0
        self.seq = 0
        self.executors: dict[str, str | None] = {}
        self.next_beat = 0.0
        self.registered = False
        self.reports: list[be.ExecutorReport] = []
        self.late = 0.0  # worst delay of a heartbeat behind its schedule (this process was busy)

    def send(self, message: msgspec.Struct) -> None:
        self.sock.send_multipart([HEADER, msgspec.msgpack.encode(message)], zmq.DONTWAIT)
        self._sent.add(self)

    def drain(self, decode: Any, now: float) -> None:
        """Read and handle everything waiting on the socket."""
        sock = self.sock
        while True:
            try:
                frames = sock.recv_multipart(zmq.DONTWAIT)
            except zmq.Again:
                return
            self.handle(decode(frames), now)

    def register(self) -> None:
        info = NodeInfo(
            name=self.name,
            hostname=self.name,
            capacity=ResourceRequirement(cpu=self.slots, memory=self.slots << 30),
            max_executors=self.slots,
        )
        self.send(
            be.RegisterNode(
                protocol_version=PROTOCOL_VERSION, node=info, incarnation="bench", executors=sorted(self.executors)
            )
        )

    def beat(self, now: float) -> None:
        if self.registered and now >= self.next_beat:
            self.late = max(self.late, now - self.next_beat)
            self.seq += 1
            self.send(be.Heartbeat(epoch=self.epoch, seq=self.seq))
            self.next_beat = now + HEARTBEAT

    def handle(self, message: be.ManagerMessage, now: float) -> None:
        match message:
            case be.Registered():
                self.epoch, self.seq, self.registered = message.epoch, 0, True
                self.next_beat = now + random.uniform(0, HEARTBEAT)
                listed = {a.executor_id for a in message.executors}
                self.executors = {e: s for e, s in self.executors.items() if e in listed}
            case be.Error():
                self.registered = False
                self.register()
            case be.Commands():
                for command in message.commands:
                    self.command(command)
        if self.reports:
            self.seq += 1
            self.send(be.Reports(epoch=self.epoch, seq=self.seq, reports=self.reports))
            self.reports = []
            self.next_beat = now + HEARTBEAT

    def command(self, command: be.ExecutorCommand) -> None:
        eid = command.executor_id
        match command:
            case be.CreateExecutor():
                self.executors[eid] = None
                self.reports.append(be.ExecutorCreated(executor_id=eid))
            case be.BindExecutor():
                self.executors[eid] = command.session.session_id
                self.reports.append(be.ExecutorBound(executor_id=eid, session_id=command.session.session_id))
            case be.LaunchTasks():
                for task in command.tasks:
                    self.reports.append(
                        be.TaskCompleted(
                            executor_id=eid,
                            session_id=command.session_id,
                            task_id=task.task_id,
                            attempt=task.attempt,
                            state=TaskState.Succeed,
                        )
                    )
            case be.UnbindExecutor():
                self.reports.append(be.ExecutorUnbound(executor_id=eid, session_id=self.executors.get(eid)))
                self.executors[eid] = None
            case be.ReleaseExecutor():
                self.executors.pop(eid, None)
                self.reports.append(be.ExecutorReleased(executor_id=eid))


class Client:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.next_id = 1

    def call(self, message: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        request_id = self.next_id
        self.next_id += 1
        self.sock.send_multipart([HEADER, msgspec.msgpack.encode({**message, "request_id": request_id})])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sock.poll(100):
                reply: dict[str, Any] = msgspec.msgpack.decode(self.sock.recv_multipart()[1])
                if reply.get("request_id") == request_id:
                    return reply
        raise TimeoutError(f"no reply to {message['type']}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wakeups(pid: int) -> int:
    """How many times the main thread of `pid` went to sleep and woke (voluntary switches)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    return 0


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of `pid` by thread name (ZeroMQ's I/O thread is "ZMQbg/IO/0")."""
    found: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        found[name] = found.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def simulate(backend: str, first: int, count: int, slots: int) -> None:
    """A simulator process: `count` nodes that register, heartbeat and answer until SIGTERM,
    then one JSON line on stdout: the worst lateness of a heartbeat behind its schedule."""
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, count + 64)
    decode = manager_message_codec().decode
    sent: set[FakeNode] = set()
    fleet = [FakeNode(ctx, backend, f"node-{first + i:05d}", slots, sent) for i in range(count)]
    by_fd = {n.fd: n for n in fleet}
    wakeups = select.epoll()
    for n in fleet:
        wakeups.register(n.fd, select.EPOLLIN)
        n.register()
    # When each node is next looked at for a heartbeat, soonest first: a round costs the beats
    # that are due, not the fleet.
    due = [(0.0, i) for i in range(count)]
    next_sweep = time.monotonic() + SIM_SWEEP
    while not stop:
        started = time.monotonic()
        ready = wakeups.poll(max(0.0, min(due[0][0] - started, 0.05)))
        now = time.monotonic()
        for fd, _ in ready:
            by_fd[fd].drain(decode, now)
        while due[0][0] <= now:
            _, i = heapq.heappop(due)
            node = fleet[i]
            node.beat(now)
            # Not registered yet (or again): look again next round.
            heapq.heappush(due, (node.next_beat if node.registered else now + 0.02, i))
        if now >= next_sweep:
            next_sweep = now + SIM_SWEEP
            sent.update(fleet)
        while sent:
            touched = list(sent)
            sent.clear()
            for node in touched:
                node.drain(decode, now)
        rest = SIM_TURN - (time.monotonic() - started)
        if rest > 0:
            time.sleep(rest)
    print(json.dumps({"late_max": max((n.late for n in fleet), default=0.0)}), flush=True)
    wakeups.close()
    ctx.destroy(0)


def probe_until(seconds: float, done: Any) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end and not done():
        time.sleep(0.05)


def run(nodes: int, slots: int, tasks: int, idle_seconds: float, sim_procs: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="flscale-", dir="/tmp"))
    frontend, backend = f"ipc://{workdir}/fe", f"ipc://{workdir}/be"
    config = workdir / "flame.toml"
    config.write_text(f"[recovery]\nheartbeat_interval = {HEARTBEAT}\nheartbeat_liveness = 3\n")
    # One descriptor per node connection in the session manager and in the simulators.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, nodes + 1024)), hard))
    argv = [sys.executable, "-m", "flamed", "session-manager", "--frontend", frontend, "--backend", backend]
    argv += ["--state-dir", str(workdir / "state"), "--config", str(config), "--log-level", "warning"]
    sm = subprocess.Popen(argv, cwd=ROOT)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    client = Client(ctx, frontend)
    results: dict[str, Any] = {"nodes": nodes, "slots": slots, "tasks": tasks, "simulator_processes": sim_procs}
    simulators: list[subprocess.Popen[str]] = []

    try:
        client.call({"type": "Hello", "protocol_version": PROTOCOL_VERSION})
        started = time.monotonic()
        share = -(-nodes // sim_procs)
        for first in range(0, nodes, share):
            cmd = [sys.executable, __file__, "--simulate", backend, str(first), str(min(share, nodes - first))]
            simulators.append(subprocess.Popen([*cmd, "--slots", str(slots)], stdout=subprocess.PIPE, text=True))

        # Counted from GetStats every half second: a ListNodes of 10,000 nodes every 50 ms (a
        # megabyte each) was most of the session manager's loop while they registered.
        def ready() -> bool:
            time.sleep(0.45)
            return int(client.call({"type": "GetStats"})["stats"].get("nodes_ready", 0)) == nodes

        probe_until(120, ready)
        results["register_all_s"] = round(time.monotonic() - started, 3)
        registered = client.call({"type": "GetStats"})["stats"]
        results["nodes_ready_after_register"] = int(registered.get("nodes_ready", 0))
        results["sm_cpu_s_until_registered"] = round(cpu_seconds(sm.pid), 2)

        sim_pids = [s.pid for s in simulators]
        cpu0, sims0, t0 = cpu_seconds(sm.pid), sum(map(cpu_seconds, sim_pids)), time.monotonic()
        threads0, wakeups0 = thread_cpu_seconds(sm.pid), wakeups(sm.pid)
        time.sleep(idle_seconds)
        idle_s = time.monotonic() - t0
        results["sm_cpu_idle_percent"] = round(100 * (cpu_seconds(sm.pid) - cpu0) / idle_s, 1)
        threads = thread_cpu_seconds(sm.pid)
        results["sm_loop_wakeups_per_s"] = round((wakeups(sm.pid) - wakeups0) / idle_s)
        results["sm_cpu_idle_percent_by_thread"] = {
            name: round(100 * (spent - threads0.get(name, 0.0)) / idle_s, 1) for name, spent in sorted(threads.items())
        }
        results["simulators_cpu_idle_percent"] = round(100 * (sum(map(cpu_seconds, sim_pids)) - sims0) / idle_s, 1)
        idle_stats = client.call({"type": "GetStats"})["stats"]
        results["false_unknown_idle"] = int(idle_stats.get("nodes_silent_total", 0))
        results["nodes_ready_idle"] = int(idle_stats.get("nodes_ready", 0))
        results["registrations_idle"] = int(idle_stats.get("registrations_total", 0))
        idle_ages = [n.get("last_heartbeat_age") or 0.0 for n in client.call({"type": "ListNodes"})["nodes"]]
        results["idle_heartbeat_age_s_p99"] = round(percentile(idle_ages, 99), 3)
        results["idle_heartbeat_age_s_max"] = round(max(idle_ages, default=0.0), 3)
        if tasks:
            workload(results, client=client, ctx=ctx, frontend=frontend, sm_pid=sm.pid, nodes=nodes, tasks=tasks)
    finally:
        late = 0.0
        for simulator in simulators:
            simulator.terminate()
        for simulator in simulators:
            out, _ = simulator.communicate(timeout=30)
            for line in out.splitlines():
                late = max(late, json.loads(line)["late_max"])
        # A node the session manager saw silent although it sent on time is a false Unknown;
        # a heartbeat a simulator sent late (it hosts many nodes) is the simulation's fault.
        results["simulated_heartbeat_late_s_max"] = round(late, 3)
        sm.terminate()
        sm.wait(30)
        ctx.destroy(0)
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def workload(
    results: dict[str, Any],
    *,
    client: Client,
    ctx: zmq.Context[zmq.Socket[bytes]],
    frontend: str,
    sm_pid: int,
    nodes: int,
    tasks: int,
) -> None:
    """`tasks` no-op tasks through the registered nodes, with the loop's responsiveness probed."""

    client.call({"type": "CreateSession", "session_id": "scale", "spec": {"application": "flmping"}})
    created = client.call({"type": "CreateTasks", "session_id": "scale", "inputs": [None] * tasks})
    assert created["type"] == "TasksCreated", created
    cpu0, t0 = cpu_seconds(sm_pid), time.monotonic()
    pings: list[float] = []
    ages: list[float] = []
    spread_at: list[float] = []
    probe = Client(ctx, frontend)
    last_probe = 0.0

    def finished() -> bool:
        nonlocal last_probe
        now = time.monotonic()
        if now - last_probe < 0.25:
            return False
        last_probe = now
        sent = time.perf_counter()
        probe.call({"type": "Ping"})
        pings.append((time.perf_counter() - sent) * 1000)
        listed = probe.call({"type": "ListNodes"})["nodes"]
        ages.extend(n.get("last_heartbeat_age") or 0.0 for n in listed)
        if not spread_at:
            holding = {e["node"] for e in probe.call({"type": "ListExecutors"})["executors"]}
            if len(holding) == nodes:
                spread_at.append(now - t0)
        session = probe.call({"type": "GetSession", "session_id": "scale"})["session"]
        return bool(session.get("succeed", 0) == tasks)

    probe_until(600, finished)
    elapsed = time.monotonic() - t0
    results["workload_s"] = round(elapsed, 3)
    results["tasks_per_s"] = round(tasks / elapsed)
    results["sm_cpu_load_percent"] = round(100 * (cpu_seconds(sm_pid) - cpu0) / elapsed, 1)
    results["ping_ms_p50"] = round(statistics.median(pings), 2) if pings else None
    results["ping_ms_p99"] = round(percentile(pings, 99), 2)
    results["heartbeat_age_s_p99"] = round(percentile(ages, 99), 3)
    results["heartbeat_age_s_max"] = round(max(ages, default=0.0), 3)
    results["every_node_used_after_s"] = round(spread_at[0], 3) if spread_at else None
    stats = client.call({"type": "GetStats"})["stats"]
    results["false_unknown"] = int(stats.get("nodes_silent_total", 0))
    results["nodes_not_ready"] = int(stats.get("nodes_notready", 0))
    results["registrations"] = int(stats.get("registrations_total", 0))
    results["node_message_gaps"] = int(stats.get("node_message_gaps_total", 0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle measurement")
    parser.add_argument("--sim-procs", type=int, default=0, help="simulator processes (default: 1 per 1,000 nodes)")
    parser.add_argument("--quick", action="store_true", help="50 nodes, 10,000 tasks, 3 s idle")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.json", help="result file")
    parser.add_argument("--simulate", nargs=3, metavar=("BACKEND", "FIRST", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.simulate:
        simulate(args.simulate[0], int(args.simulate[1]), int(args.simulate[2]), args.slots)
        return 0
    if args.quick:
        args.nodes, args.tasks, args.idle = 50, 10_000, 3.0
    sim_procs = args.sim_procs or max(1, -(-args.nodes // 1000))
    load_before = os.getloadavg()[0]
    results = run(args.nodes, args.slots, args.tasks, args.idle, sim_procs)
    # A shared machine's load moves every figure here (the simulators share its cores too).
    results["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    results["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    for key, value in results.items():
        print(f"{key:28} {value}")
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
