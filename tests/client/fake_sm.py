"""A fake session manager for SDK tests: a ROUTER on an ipc:// endpoint in a thread.

It decodes requests with `client_request_codec()` and answers with handlers that return the
replies (and pushes) to send; tests replace handlers to script failures or silence.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import zmq

from protocol import frontend as fe
from protocol.codec import PROTOCOL_VERSION, client_request_codec, encode
from protocol.types import Session, SessionSpec, SessionState, Task, TaskState

Handler = Callable[[Any], list[fe.Message]]


class FakeSessionManager:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.received: list[fe.Message] = []
        self.next_task_id: dict[str, int] = {}
        self.failures: dict[bytes | None, str] = {}  # input -> failure message
        self.handlers: dict[type, Handler] = {
            fe.Hello: lambda r: [fe.Welcome(protocol_version=PROTOCOL_VERSION, server_version="fake")],
            fe.Ping: lambda r: [fe.Pong()],
            fe.CreateSession: self.create_session,
            fe.CloseSession: self.close_session,
            fe.CreateTasks: self.create_tasks,
            fe.WatchTasks: self.watch_tasks,
        }
        self.inputs: dict[tuple[str, int], bytes | None] = {}
        #: what a `CreateTasks{watch}` gets after `TasksCreated` (tests replace it to script results)
        self.results: Callable[[str, list[int]], list[fe.Message]] = self.finished
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(5)

    # ------------------------------------------------------------ default behaviour

    def create_session(self, request: fe.CreateSession) -> list[fe.Message]:
        return [fe.SessionReply(session=_session(request.session_id, request.spec, SessionState.Open))]

    def close_session(self, request: fe.CloseSession) -> list[fe.Message]:
        spec = SessionSpec(application="app")
        return [fe.SessionReply(session=_session(request.session_id, spec, SessionState.Closed))]

    def create_tasks(self, request: fe.CreateTasks) -> list[fe.Message]:
        first = self.next_task_id.get(request.session_id, 1)
        ids = list(range(first, first + len(request.inputs)))
        self.next_task_id[request.session_id] = first + len(ids)
        for task_id, data in zip(ids, request.inputs, strict=True):
            self.inputs[(request.session_id, task_id)] = data
        created: list[fe.Message] = [fe.TasksCreated(session_id=request.session_id, task_ids=ids)]
        return created + self.results(request.session_id, ids) if request.watch else created

    def watch_tasks(self, request: fe.WatchTasks) -> list[fe.Message]:
        """First push: every task Running; second: each finished."""
        sid = request.session_id
        running = [Task(id=i, session_id=sid, state=TaskState.Running) for i in request.task_ids]
        return [fe.TaskUpdates(tasks=running), *self.finished(sid, request.task_ids)]

    def finished(self, sid: str, task_ids: list[int]) -> list[fe.Message]:
        """One push with each task finished: output = input reversed, or Failed for inputs in
        `failures`."""
        done = []
        for task_id in task_ids:
            data = self.inputs.get((sid, task_id))
            if data in self.failures:
                done.append(Task(id=task_id, session_id=sid, state=TaskState.Failed, message=self.failures[data]))
            else:
                output = data[::-1] if data is not None else None
                done.append(Task(id=task_id, session_id=sid, state=TaskState.Succeed, output=output))
        return [fe.TaskUpdates(tasks=done)]

    def of_type(self, kind: type) -> list[Any]:
        with self._lock:
            return [m for m in self.received if isinstance(m, kind)]

    # ------------------------------------------------------------ loop

    def _run(self) -> None:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(self.endpoint)
        self._ready.set()
        codec = client_request_codec()
        try:
            while not self._stop.is_set():
                if not sock.poll(20):
                    continue
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    peer, request = frames[0], codec.decode(frames[1:])
                    with self._lock:
                        self.received.append(request)
                    handler = self.handlers.get(type(request))
                    for reply in handler(request) if handler else []:
                        reply.request_id = request.request_id
                        sock.send_multipart([peer, *encode(reply)])
        finally:
            sock.close(0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _session(session_id: str, spec: SessionSpec, state: SessionState) -> Session:
    return Session(id=session_id, spec=spec, state=state, creation_time=1_700_000_000_000)
