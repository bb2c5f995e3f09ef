"""A fake session manager for executor-manager tests: a ROUTER speaking protocol/backend.py,
driven by the test (register a node, send commands, wait for reports)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flamed.transport import bind_router, close
from protocol import backend as be
from protocol import codec
from tests.support.waiting import wait_for

M = TypeVar("M", bound=be.NodeMessage)


class FakeSessionManager:
    """The session manager's side of one node link, bound at `endpoint`; it keeps every
    `ExecutorReport` in `reports` and every other message but heartbeats in `other`."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.sock = bind_router(endpoint)
        self.codec = codec.node_message_codec()
        self.peer = b""
        self.epoch = 0
        self.seq = 0
        self.recv_seq = 0
        self.reports: list[be.ExecutorReport] = []
        self.other: list[be.NodeMessage] = []

    def close(self) -> None:
        close(self.sock)

    def recv(self, timeout: float) -> be.NodeMessage | None:
        if not self.sock.poll(int(timeout * 1000)):
            return None
        frames = self.sock.recv_multipart()
        self.peer = frames[0]
        message = self.codec.decode(frames[1:])
        if isinstance(message, be.Reports):
            self.reports.extend(message.reports)
            self.recv_seq = message.seq
        elif not isinstance(message, be.Heartbeat):
            self.other.append(message)
        return message

    def send(self, message: be.Message) -> None:
        self.sock.send_multipart([self.peer, *codec.encode(message)])

    def register(self, executors: list[be.ExecutorAssignment] | None = None, timeout: float = 20.0) -> be.RegisterNode:
        """Wait for a RegisterNode and accept it with a snapshot."""

        def registering() -> be.RegisterNode | None:
            message = self.recv(0.1)
            return message if isinstance(message, be.RegisterNode) else None

        try:
            message = wait_for("a RegisterNode", registering, timeout, interval=0)
        except AssertionError:
            raise AssertionError("no RegisterNode arrived") from None
        self.epoch += 1
        self.seq = 0
        self.send(
            be.Registered(epoch=self.epoch, executors=executors or [], heartbeat_interval=0.5, heartbeat_liveness=40)
        )
        return message

    def command(self, *commands: be.ExecutorCommand) -> None:
        self.seq += 1
        self.send(be.Commands(epoch=self.epoch, seq=self.seq, ack=self.recv_seq, commands=list(commands)))

    def wait_reports(
        self, what: str, condition: Callable[[list[be.ExecutorReport]], Any], timeout: float = 20.0
    ) -> Any:
        """Receive until `condition(self.reports)` holds and return its value (Any: conditions
        return lists of one report type or another, which a type variable would join to object)."""

        def holds() -> Any:
            value = condition(self.reports)
            if not value:
                self.recv(0.05)
            return value

        try:
            return wait_for(what, holds, timeout, interval=0)
        except AssertionError:
            raise AssertionError(f"timed out waiting for {what}; reports: {self.reports[-10:]}") from None

    def wait_message(self, kind: type[M], timeout: float = 20.0) -> M:
        """Receive until a message of `kind` has arrived and return the latest one."""

        def arrived() -> M | None:
            found = [m for m in self.other if isinstance(m, kind)]
            if not found:
                self.recv(0.05)
            return found[-1] if found else None

        return wait_for(kind.__name__, arrived, timeout, interval=0)
