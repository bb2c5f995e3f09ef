"""The client side of a chaos run, through the SDK as a user would: one connection per
session, tasks submitted with `Session.run_many`, each result taken from its future.

Records, per task: when it was submitted, when its future completed and with what (output or
error text). Per blocking call (register, create session, list tasks...): how long it took, so
that a call that outlived the client timeout (a hung client) is seen. Done-callbacks run in
the SDK's I/O thread, so they only store what they got.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from flamed.client import ApplicationAttributes, Connection, FlameError, Session
from flamed.client.session import iter_wire_tasks
from protocol.types import Task
from tests.chaos.cluster import APPLICATION, SERVICE
from tests.chaos.plan import Plan, Submission
from tests.support.daemons import REPO

T = TypeVar("T")


@dataclass
class TaskRecord:
    seq: int
    session: int
    submitted: float
    done: float | None = None
    output: bytes | None = None
    error: str | None = None


@dataclass(frozen=True)
class CallRecord:
    name: str
    started: float
    seconds: float
    error: str | None


def session_id(index: int) -> str:
    return f"chaos-{index}"


class Workload:
    def __init__(self, plan: Plan, frontend: str, config: Path) -> None:
        self.plan = plan
        self.frontend = frontend
        self.config = config
        self.timeout = plan.settings.client_timeout
        self.lock = threading.Lock()
        self.records: dict[int, TaskRecord] = {}
        self.calls: list[CallRecord] = []
        self.connections: list[Connection] = []
        self.sessions: list[Session] = []
        self._futures: list[Future[bytes | None]] = []

    def timed(self, name: str, call: Callable[[], T]) -> T:
        """Run a blocking SDK call and record how long it took (and its error, re-raised)."""
        started = time.time()
        t0 = time.monotonic()
        try:
            result = call()
        except FlameError as exc:
            self.calls.append(CallRecord(name, started, time.monotonic() - t0, str(exc)))
            raise
        self.calls.append(CallRecord(name, started, time.monotonic() - t0, None))
        return result

    def _connect(self) -> Connection:
        conn = self.timed("connect", lambda: Connection(self.frontend, self.timeout, config_path=str(self.config)))
        self.connections.append(conn)
        return conn

    def open(self) -> None:
        """Register the application and create the sessions (one connection each)."""
        first = self._connect()
        attrs = ApplicationAttributes(
            command=sys.executable,
            arguments=[str(SERVICE)],
            environments={"PYTHONPATH": str(REPO)},
            delay_release=30.0,
        )
        self.timed("register_application", lambda: first.register_application(APPLICATION, attrs))
        for index in range(self.plan.settings.sessions):
            conn = self._connect() if index else first
            sid = session_id(index)
            create = functools.partial(conn.create_session, APPLICATION, session_id=sid)
            self.sessions.append(self.timed("create_session", create))

    def submit(self, submission: Submission) -> None:
        tasks = self.plan.tasks
        inputs = [tasks[seq].encode() for seq in submission.seqs]
        now = time.time()
        with self.lock:
            for seq in submission.seqs:
                self.records[seq] = TaskRecord(seq, submission.session, now)
        futures = self.sessions[submission.session].run_many(inputs)
        for seq, future in zip(submission.seqs, futures, strict=True):
            future.add_done_callback(functools.partial(self._done, seq))
        self._futures.extend(futures)

    def _done(self, seq: int, future: Future[bytes | None]) -> None:
        record = self.records[seq]
        error = future.exception()
        with self.lock:
            record.done = time.time()
            if error is None:
                record.output = future.result()
            else:
                record.error = str(error)

    def unfinished(self) -> int:
        return sum(1 for f in self._futures if not f.done())

    def list_tasks(self, index: int) -> list[Task]:
        """Every task of session `index` with its events, from the session manager (a page at
        a time; the whole walk is timed as one call)."""
        conn = self.connections[0]
        return self.timed("list_tasks", lambda: list(iter_wire_tasks(conn, session_id(index))))

    def close(self) -> None:
        for conn in self.connections:
            conn.close()
