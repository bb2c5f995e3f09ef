"""The instance side of protocol/instance.py: serve one `FlameService` for one session.

Rules: commands are handled in order; tasks run one at a time on this thread; results are
sent in order, at once when no task is left at hand, else every `RESULT_BATCH` results or
`RESULT_DELAY` seconds after the oldest one held, so a busy instance batches (one send for many
tasks) and an idle one answers at once. After `SessionLeft` the runner returns.

The runner's routing id is the token the executor manager started it with
(`FLAME_INSTANCE_TOKEN`); the executor manager accepts nothing else from this process. An
executor manager older than the token names none, and then the executor id is the routing id.
A frame from the executor manager that does not decode is reported on stderr and skipped.

A task that waits for a task of its own session (flamed.client calls the wait hook before it
blocks on a task's result) says `TaskWaiting` once, after the results held, and waits for
`TasksWithdrawn`: the tasks this instance holds but has not started were handed back, so they
are dropped, and the one waited for cannot be stuck behind the waiting task. Only waits on
the thread that runs the task count (the socket is this thread's).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque

from flamed.client.futures import set_wait_hook
from flamed.service.types import ApplicationContext, FlameService, SessionContext, task_context
from flamed.transport import connect_dealer
from protocol import backend as be
from protocol import codec
from protocol import instance as im
from protocol.codec import FrameError

log = logging.getLogger("flamed.service")

#: Most results held back before a `TaskResults` is sent anyway.
RESULT_BATCH = 64
#: Longest a result is held back while more tasks are at hand (seconds): bounds the latency a
#: busy instance adds, and the results lost if it dies.
RESULT_DELAY = 0.002

#: Milliseconds the runner waits for `SessionLeft` to reach the executor manager at exit.
_LEAVE_LINGER_MS = 2000


def _required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(
            f"{name} is not set: a Flame service must be started by an executor manager "
            "(register it as an application and open a session), not run by hand"
        )
    return value


def run(service: FlameService) -> None:
    """Serve `service` until the executor manager says `LeaveSession`; then return.

    Raises RuntimeError if the environment does not name an executor manager."""
    endpoint = _required_env("FLAME_INSTANCE_ENDPOINT")
    executor_id = _required_env("FLAME_EXECUTOR_ID")
    token = os.environ.get("FLAME_INSTANCE_TOKEN") or executor_id
    runner = _Runner(service, endpoint, executor_id, token)
    set_wait_hook(runner.waiting_for)
    try:
        runner.serve()
    finally:
        set_wait_hook(None)


class _Runner:
    def __init__(self, service: FlameService, endpoint: str, executor_id: str, token: str) -> None:
        self.service = service
        self.executor_id = executor_id
        self.sock = connect_dealer(endpoint, token.encode())
        self.codec = codec.instance_command_codec()
        self.pending: deque[be.TaskAssignment] = deque()
        self.results: list[im.TaskOutcome] = []
        #: monotonic time when the oldest result held back was made
        self.held_since = 0.0
        self.session_id = ""
        self.leaving = False
        #: the task being run, and whether it said TaskWaiting already
        self.running: be.TaskAssignment | None = None
        self.said_waiting = False
        self.thread = threading.get_ident()
        #: commands read while waiting for TasksWithdrawn, handled after the task
        self.deferred: deque[im.InstanceCommand] = deque()

    def send(self, message: im.Message) -> None:
        # Blocking send: with IMMEDIATE set it waits for the connection, and the executor
        # manager kills us (process group, PDEATHSIG) if it goes away.
        self.sock.send_multipart(codec.encode(message))

    def serve(self) -> None:
        self.send(
            im.InstanceReady(executor_id=self.executor_id, protocol_version=codec.PROTOCOL_VERSION, pid=os.getpid())
        )
        try:
            while not self.leaving:
                if self.deferred:
                    self.command(self.deferred.popleft())
                    continue
                if not self.pending:
                    self.flush()
                    self.handle(self.sock.recv_multipart())
                    continue
                if not self.results:
                    self.held_since = time.monotonic()
                self.invoke(self.pending.popleft())
                self.running = None
                if (
                    not self.pending
                    or len(self.results) >= RESULT_BATCH
                    or time.monotonic() - self.held_since >= RESULT_DELAY
                ):
                    self.flush()
        finally:
            self.sock.close(linger=_LEAVE_LINGER_MS)

    def flush(self) -> None:
        if self.results:
            results, self.results = self.results, []
            self.send(im.TaskResults(results=results))

    def decode(self, frames: list[bytes]) -> im.InstanceCommand | None:
        try:
            return self.codec.decode(frames)
        except FrameError as exc:
            print(f"flamed.service: dropped a bad frame from the executor manager: {exc.message}", file=sys.stderr)
            return None

    def handle(self, frames: list[bytes]) -> None:
        command = self.decode(frames)
        if command is not None:
            self.command(command)

    def waiting_for(self, session_id: str) -> None:
        """The wait hook (flamed.client.futures): the running task is about to wait for a task
        of `session_id`. If that is this session, hand back the tasks held behind it first."""
        task = self.running
        if task is None or self.said_waiting or session_id != self.session_id or threading.get_ident() != self.thread:
            return
        self.said_waiting = True
        self.flush()
        self.send(im.TaskWaiting(task_id=task.task_id, attempt=task.attempt))
        while True:
            command = self.decode(self.sock.recv_multipart())
            match command:
                case im.TasksWithdrawn():
                    self.pending.clear()
                    return
                case im.InvokeTasks(tasks=tasks):
                    self.pending.extend(tasks)
                case None:
                    pass
                case _:
                    self.deferred.append(command)

    def command(self, command: im.InstanceCommand) -> None:
        match command:
            case im.EnterSession(session=session, application=app):
                self.enter(session, app)
            case im.InvokeTasks(tasks=tasks):
                self.pending.extend(tasks)
            case im.LeaveSession():
                self.leave()
            case im.TasksWithdrawn():
                pass  # only asked for by waiting_for, which reads it itself

    def enter(self, session: be.SessionContext, app: be.ApplicationContext) -> None:
        self.session_id = session.session_id
        context = SessionContext(
            session_id=session.session_id,
            application=ApplicationContext(
                name=app.name,
                image=app.image,
                command=app.command,
                working_directory=app.working_directory,
                url=app.url,
            ),
            _common_data=session.common_data,
        )
        try:
            self.service.on_session_enter(context)
        except Exception as exc:
            log.exception("on_session_enter failed")
            self.send(im.SessionEntered(ok=False, message=f"{type(exc).__name__}: {exc}"))
            return
        self.send(im.SessionEntered(ok=True))

    def invoke(self, task: be.TaskAssignment) -> None:
        context = task_context(str(task.task_id), self.session_id, task.input)
        self.running = task
        self.said_waiting = False
        try:
            answer: object = self.service.on_task_invoke(context)  # a tenant's code: any type
            output: bytes | None
            if answer is None or type(answer) is bytes:  # the usual answers, checked first
                output = answer
            elif isinstance(answer, bytes | bytearray | memoryview):
                output = bytes(answer)
            else:
                raise TypeError(f"on_task_invoke must return bytes or None, not {type(answer).__name__}")
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            self.results.append(im.TaskOutcome(task_id=task.task_id, attempt=task.attempt, ok=False, message=message))
            return
        self.results.append(im.TaskOutcome(task_id=task.task_id, attempt=task.attempt, ok=True, output=output))

    def leave(self) -> None:
        self.flush()
        try:
            self.service.on_session_leave()
        except Exception as exc:
            log.exception("on_session_leave failed")
            self.send(im.SessionLeft(ok=False, message=f"{type(exc).__name__}: {exc}"))
        else:
            self.send(im.SessionLeft(ok=True))
        self.leaving = True
