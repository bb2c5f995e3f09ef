"""Helpers for the recovery scenarios: real daemons with small recovery timeouts, a journal
of every task invocation, and views of the cluster through the frontend.

Timeouts (the `[recovery]` table written for every scenario): heartbeat 0.5 s x liveness 4,
so either side declares the other dead after 2 s of silence; drain 4 s; reconnect backoff
0.2 s doubling to 1 s with full jitter; task retry limit 2.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from flamed.client import Connection
from protocol import frontend as fe
from protocol.types import ApplicationSpec, Node, SessionSpec, Task, TaskState
from tests.support.daemons import REPO, Daemons
from tests.support.waiting import wait_for

T = TypeVar("T")

HEARTBEAT = 0.5
LIVENESS = 4
DETECTION = HEARTBEAT * LIVENESS
DRAIN = 4.0
RETRY_LIMIT = 2
SERVICE = Path(__file__).resolve().parent / "services" / "journal.py"
#: where to append the observed timings too (they are always printed: `pytest -rP` shows them)
TIMINGS = os.environ.get("FLAME_RECOVERY_TIMINGS")

CONFIG = f"""[recovery]
heartbeat_interval = {HEARTBEAT}
heartbeat_liveness = {LIVENESS}
drain_timeout = {DRAIN}
reconnect_backoff_min = 0.2
reconnect_backoff_max = 1.0
task_retry_limit = {RETRY_LIMIT}
[client]
timeout = 20.0
"""


@dataclass(frozen=True)
class Run:
    """One line of the journal: an invocation started or ended."""

    event: str
    session: str
    task: int
    pid: int
    ppid: int
    executor: str
    time: float


class Cluster:
    def __init__(self, daemons: Daemons) -> None:
        self.d = daemons
        daemons.config.write_text(CONFIG)
        self.journal = daemons.dir / "journal"
        self._conn: Connection | None = None

    # ------------------------------------------------------------------ processes

    def start_sm(self) -> None:
        """Start the session manager and connect once it answers (the SDK gives up on a
        frontend that does not answer within its connect timeout, 3 s)."""
        self.d.start_session_manager()
        self.d.wait_answering()
        self.reconnect()

    def reconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = Connection(self.d.frontend, timeout=20.0)

    def close(self) -> None:
        """Close this test's client connection (the daemons are the `daemons` fixture's)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> Connection:
        assert self._conn is not None
        return self._conn

    def start_em(self, node: str, slots: int = 1, proc: str | None = None, netns: str | None = None) -> int:
        """Start an executor manager for `node` (under the process name `proc`, inside network
        namespace `netns` if given); its pid."""
        proc = proc or node
        self.d.spawn(
            proc,
            "executor-manager",
            "--backend",
            self.d.backend,
            "--node-name",
            node,
            "--slots",
            str(slots),
            "--runtime-dir",
            str(self.d.dir / f"rt-{proc}"),
            "--config",
            str(self.d.config),
            prefix=("ip", "netns", "exec", netns) if netns else (),
        )
        return self.d.procs[proc].pid

    def pid(self, proc: str) -> int:
        return self.d.procs[proc].pid

    def signal(self, proc: str, sig: signal.Signals) -> None:
        os.kill(self.pid(proc), sig)

    def kill(self, proc: str) -> None:
        p = self.d.procs[proc]
        p.kill()
        p.wait(10)

    # ------------------------------------------------------------------ work

    def register_app(self) -> None:
        spec = ApplicationSpec(
            command=sys.executable,
            arguments=[str(SERVICE), str(self.journal)],
            environments={"PYTHONPATH": str(REPO)},
            delay_release=60.0,
        )
        self.conn.request(fe.RegisterApplication(name="journal", spec=spec), fe.ApplicationReply)

    def session(self, session_id: str = "s1") -> str:
        spec = SessionSpec(application="journal")
        self.conn.request(fe.CreateSession(session_id=session_id, spec=spec), fe.SessionReply)
        return session_id

    def submit(self, session_id: str, seconds: list[float]) -> list[int]:
        inputs: list[bytes | None] = [str(s).encode() for s in seconds]
        return self.conn.request(fe.CreateTasks(session_id=session_id, inputs=inputs), fe.TasksCreated).task_ids

    # ------------------------------------------------------------------ views

    def runs(self, event: str = "start") -> list[Run]:
        if not self.journal.exists():
            return []
        runs = []
        for line in self.journal.read_text().splitlines():
            parts = line.split()
            if len(parts) == 7 and parts[0] == event:
                runs.append(
                    Run(parts[0], parts[1], int(parts[2]), int(parts[3]), int(parts[4]), parts[5], float(parts[6]))
                )
        return runs

    def starts_of(self, task: int, session: str = "s1") -> list[Run]:
        return [r for r in self.runs() if r.task == task and r.session == session]

    def tasks(self, session_id: str = "s1") -> list[Task]:
        return self.conn.request(fe.ListTasks(session_id=session_id), fe.TasksReply).tasks

    def task(self, task_id: int, session_id: str = "s1") -> Task:
        return self.conn.request(fe.GetTask(session_id=session_id, task_id=task_id), fe.TaskReply).task

    def node(self, name: str) -> Node:
        return self.conn.request(fe.GetNode(name=name), fe.NodeReply).node

    def node_state(self, name: str) -> str:
        """The node's state, or "" while the session manager does not know it."""
        nodes = self.conn.request(fe.ListNodes(), fe.NodesReply).nodes
        return next((str(n.state) for n in nodes if n.name == name), "")

    def stats(self) -> dict[str, float]:
        return self.conn.request(fe.GetStats(), fe.StatsReply).stats

    def stat(self, key: str) -> float:
        return self.stats().get(f"{key}_total", 0.0)

    def executors_on(self, node: str) -> list[str]:
        executors = self.conn.request(fe.ListExecutors(), fe.ExecutorsReply).executors
        return [e.id for e in executors if e.node == node]

    # ------------------------------------------------------------------ waiting

    def wait(self, what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
        return wait_for(what, probe, timeout, interval=0.05)

    def wait_node(self, name: str, state: str, timeout: float = 30.0) -> float:
        """Wait until node `name` is in `state`; the monotonic time it was first seen so."""
        self.wait(f"node {name} {state}", lambda: self.node_state(name) == state, timeout)
        return time.monotonic()

    def wait_started(self, count: int, timeout: float = 30.0) -> list[Run]:
        """Wait until `count` invocations have started; all the starts so far."""

        def started() -> list[Run] | None:
            runs = self.runs()
            return runs if len(runs) >= count else None

        return self.wait(f"{count} task starts", started, timeout)

    def wait_gone(self, what: str, pid: int, timeout: float = 30.0) -> None:
        """Wait until process `pid` is gone (exited and reaped, or a zombie)."""
        self.wait(what, lambda: not alive(pid), timeout)

    def wait_start(self, what: str, task_id: int, nth: int, session_id: str = "s1", timeout: float = 30.0) -> Run:
        """Wait until task `task_id` has started `nth` times (1: the first run); that start."""

        def started() -> Run | None:
            starts = self.starts_of(task_id, session_id)
            return starts[nth - 1] if len(starts) >= nth else None

        return self.wait(what, started, timeout)

    def wait_tasks(self, state: TaskState, session_id: str = "s1", timeout: float = 40.0) -> list[Task]:
        def done() -> list[Task] | None:
            tasks = self.tasks(session_id)
            return tasks if tasks and all(t.state is state for t in tasks) else None

        return self.wait(f"every task {state}", done, timeout)

    def record(self, scenario: str, **timings: float) -> None:
        """Print the timings observed (seconds); append them to $FLAME_RECOVERY_TIMINGS if set."""
        text = ", ".join(f"{k}={v:.2f}s" for k, v in timings.items())
        line = f"{scenario}: {text}"
        print(line)
        if TIMINGS:
            with Path(TIMINGS).open("a") as f:
                f.write(line + "\n")


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.split(") ", 1)[-1][:1] != "Z"


def since(t0: float) -> float:
    return time.monotonic() - t0
