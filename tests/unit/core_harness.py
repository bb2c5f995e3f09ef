"""A harness that drives the pure `Controller` with fake clients and fake executor managers.

No sockets, no processes, no clock: time moves only when a test calls `advance()`. Fake nodes
answer commands the way a real executor manager would (create, bind, run tasks by echoing the
input, unbind, release), so whole scenarios run in milliseconds.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from flamed.core.config import CoreConfig
from flamed.core.controller import Controller
from flamed.core.node_link import LinkView
from flamed.core.state import ClusterState
from flamed.core.turn import Now, Outbox
from protocol import backend as be
from protocol import frontend as fe
from protocol.codec import PROTOCOL_VERSION
from protocol.types import Node, NodeInfo, NodeState, ResourceRequirement, SessionSpec, TaskState

WALL0 = 1_760_000_000_000


@dataclass
class FakeNode:
    name: str
    slots: int = 4
    incarnation: str = "inc-1"
    peer: bytes = b""
    epoch: int = 0
    seq: int = 0
    recv_seq: int = 0
    online: bool = True  # False: messages to it are lost and it sends nothing
    auto_run: bool = True  # complete launched tasks at once
    executors: dict[str, str | None] = field(default_factory=dict)  # id -> bound session
    queued: dict[str, list[be.TaskAssignment]] = field(default_factory=dict)
    outbox: list[be.ExecutorReport] = field(default_factory=list)
    errors: list[be.Error] = field(default_factory=list)
    registered: list[be.Registered] = field(default_factory=list)
    fail_inputs: set[bytes] = field(default_factory=set)
    stopping: bool = False  # its heartbeats say it is draining to stop
    commands: list[be.ExecutorCommand] = field(default_factory=list)  # every command received
    features: list[str] = field(default_factory=lambda: list(be.FEATURES))  # [] = an older version
    bind_error: str | None = None  # set: every bind fails with this message (an instance that cannot start)

    def __post_init__(self) -> None:
        self.peer = f"{self.name}/{self.incarnation}".encode()

    def info(self) -> NodeInfo:
        return NodeInfo(
            name=self.name,
            hostname=self.name,
            capacity=ResourceRequirement(cpu=self.slots, memory=self.slots << 30),
            max_executors=self.slots,
        )

    def register_message(self) -> be.RegisterNode:
        return be.RegisterNode(
            protocol_version=PROTOCOL_VERSION,
            node=self.info(),
            incarnation=self.incarnation,
            executors=sorted(self.executors),
            features=self.features,
        )

    def receive(self, message: be.Message) -> None:
        match message:
            case be.Registered():
                self.epoch, self.recv_seq, self.seq = message.epoch, 0, 0
                self.registered.append(message)
                self._reconcile(message.executors)
            case be.Error():
                self.errors.append(message)
            case be.Heartbeat() | be.Commands():
                assert message.epoch == self.epoch, message
                assert message.seq == self.recv_seq + 1, message
                self.recv_seq = message.seq
                if isinstance(message, be.Commands):
                    for command in message.commands:
                        self._command(command)

    def _reconcile(self, wanted: list[be.ExecutorAssignment]) -> None:
        listed = {a.executor_id: a for a in wanted}
        for executor_id in list(self.executors):
            if executor_id not in listed:
                del self.executors[executor_id]
                self.queued.pop(executor_id, None)
        for a in wanted:
            if a.state == "Void":
                self.executors[a.executor_id] = None
                self.outbox.append(be.ExecutorCreated(executor_id=a.executor_id))
            elif a.state == "Binding" and a.session is not None:
                self.executors[a.executor_id] = a.session.session_id
                self.outbox.append(be.ExecutorBound(executor_id=a.executor_id, session_id=a.session.session_id))
                # tasks launched with the bind (a cold start), as the executor manager queues them
                have = {t.task_id for t in self.queued.get(a.executor_id, [])}
                self.queued.setdefault(a.executor_id, []).extend(t for t in a.tasks if t.task_id not in have)
            elif a.state == "Bound":
                have = {t.task_id for t in self.queued.get(a.executor_id, [])}
                self.queued.setdefault(a.executor_id, []).extend(t for t in a.tasks if t.task_id not in have)

    def _command(self, command: be.ExecutorCommand) -> None:
        self.commands.append(command)
        match command:
            case be.CreateExecutor():
                self.executors[command.executor_id] = None
                self.outbox.append(be.ExecutorCreated(executor_id=command.executor_id))
            case be.BindExecutor() if self.bind_error is not None:
                session_id = command.session.session_id
                self.outbox.append(
                    be.ExecutorBindFailed(
                        executor_id=command.executor_id, session_id=session_id, code=11, message=self.bind_error
                    )
                )
                self.outbox.append(be.ExecutorUnbound(executor_id=command.executor_id, session_id=session_id))
            case be.BindExecutor():
                self.executors[command.executor_id] = command.session.session_id
                self.outbox.append(
                    be.ExecutorBound(executor_id=command.executor_id, session_id=command.session.session_id)
                )
            case be.LaunchTasks():
                self.queued.setdefault(command.executor_id, []).extend(command.tasks)
            case be.UnbindExecutor():
                session = self.executors.get(command.executor_id)
                unstarted = [
                    be.TaskKey(task_id=t.task_id, attempt=t.attempt) for t in self.queued.pop(command.executor_id, [])
                ]
                self.executors[command.executor_id] = None
                self.outbox.append(
                    be.ExecutorUnbound(executor_id=command.executor_id, session_id=session, unstarted=unstarted)
                )
            case be.ReleaseExecutor():
                self.executors.pop(command.executor_id, None)
                self.outbox.append(be.ExecutorReleased(executor_id=command.executor_id))
            case be.RecallTasks():
                queue = self.queued.get(command.executor_id, [])
                keep = max(1, len(queue) - command.count)  # the first one is running
                taken, queue[keep:] = queue[keep:], []
                keys = [be.TaskKey(task_id=t.task_id, attempt=t.attempt) for t in reversed(taken)]
                self.outbox.append(
                    be.TasksReturned(executor_id=command.executor_id, session_id=command.session_id, unstarted=keys)
                )

    def run_tasks(self, each: int | None = None) -> None:
        """Complete the queued tasks of every executor (only the first `each` of each: long
        tasks, the rest stay queued)."""
        for executor_id, queue in self.queued.items():
            session = self.executors.get(executor_id)
            tasks = queue[:each]
            for task in tasks:
                failed = task.input in self.fail_inputs
                self.outbox.append(
                    be.TaskCompleted(
                        executor_id=executor_id,
                        session_id=session or "",
                        task_id=task.task_id,
                        attempt=task.attempt,
                        state=TaskState.Failed if failed else TaskState.Succeed,
                        output=None if failed else task.input,
                        message="ValueError: boom" if failed else None,
                    )
                )
            del queue[: len(tasks)]

    def take_reports(self) -> be.Reports | None:
        if not self.outbox:
            return None
        self.seq += 1
        reports, self.outbox = self.outbox, []
        return be.Reports(epoch=self.epoch, seq=self.seq, reports=reports)


class Harness:
    def __init__(self, **config: object) -> None:
        ids = itertools.count(1)
        self.config = CoreConfig(**config)  # type: ignore[arg-type]  # the tests' config keywords, passed on untyped
        self.ctl = Controller(self.config, new_id=lambda: f"e{next(ids)}")
        self.t = 0.0
        self.nodes: dict[bytes, FakeNode] = {}
        self.replies: dict[bytes, list[fe.Message]] = {}
        self.request_ids = itertools.count(1)
        self.records: list[object] = []

    @property
    def state(self) -> ClusterState:
        return self.ctl.state

    def link(self, name: str) -> LinkView:
        """Node `name`'s current link (it must have one)."""
        link = self.ctl.link(name)
        assert link is not None, f"node {name} has no link"
        return link

    def view(self, name: str) -> Node:
        """Node `name` as clients see it now (it must exist)."""
        node = self.ctl.node_view(name, self.t)
        assert node is not None, f"no node {name}"
        return node

    def node_state(self, name: str) -> NodeState:
        """Node `name`'s state now (a call, so a type checker does not carry an earlier check over)."""
        return self.state.nodes[name].state

    def task_state(self, session_id: str, task_id: int) -> TaskState:
        """Task `task_id`'s state now (a call, so a type checker does not carry an earlier check over)."""
        return self.state.sessions[session_id].tasks[task_id - 1].state

    def now(self) -> Now:
        return Now(mono=self.t, wall=WALL0 + int(self.t * 1000))

    def add_node(self, name: str, slots: int = 4, **kwargs: object) -> FakeNode:
        node = FakeNode(name, slots, **kwargs)  # type: ignore[arg-type]  # the tests' FakeNode keywords, passed on untyped
        self.nodes[node.peer] = node
        self.ctl.handle_node(node.peer, node.register_message(), self.now())
        self.pump()
        return node

    def reregister(self, node: FakeNode) -> None:
        self.nodes[node.peer] = node
        self.ctl.handle_node(node.peer, node.register_message(), self.now())
        self.pump()

    def request(self, request: fe.Message, peer: bytes = b"client") -> fe.Message:
        request.request_id = next(self.request_ids)
        self.ctl.handle_client(peer, request, self.now())  # type: ignore[arg-type]  # any frontend message, also ones the daemon's decoder would refuse
        self.pump()
        for reply in self.replies.get(peer, []):
            if reply.request_id == request.request_id:
                return reply
        raise AssertionError(f"no reply to {request!r}")

    def deliver(self, outbox: Outbox) -> bool:
        self.records.extend(outbox.records)
        for peer, reply in outbox.replies:
            self.replies.setdefault(peer, []).append(reply)
        moved = False
        for peer, message in outbox.node_messages:
            node = self.nodes.get(peer)
            if node is not None and node.online:
                node.receive(message)
                moved = True
        return moved or bool(outbox.records)

    def pump(self, rounds: int = 100) -> None:
        """Flush and deliver both ways until nothing moves."""
        for _ in range(rounds):
            moved = self.deliver(self.ctl.flush(self.now()))
            for node in list(self.nodes.values()):
                if not node.online:
                    continue
                if node.auto_run:
                    node.run_tasks()
                reports = node.take_reports()
                if reports is not None:
                    self.ctl.handle_node(node.peer, reports, self.now())
                    moved = True
            if not moved:
                return
        raise AssertionError("the controller did not settle")

    def advance(
        self, seconds: float, step: float | None = None, heartbeat: Callable[[FakeNode], bool] | None = None
    ) -> None:
        """Move time forward, ticking the controller; online nodes heartbeat each step."""
        step = step or self.config.heartbeat_interval / 2
        end = self.t + seconds
        while self.t < end - 1e-9:
            self.t = min(end, self.t + step)
            for node in self.nodes.values():
                if node.online and (heartbeat is None or heartbeat(node)):
                    node.seq += 1
                    beat = be.Heartbeat(epoch=node.epoch, seq=node.seq, stopping=node.stopping)
                    self.ctl.handle_node(node.peer, beat, self.now())
            self.ctl.tick(self.now())
            self.pump()

    def session(self, session_id: str = "s1", application: str = "flmping", **spec: object) -> fe.Message:
        spec_ = SessionSpec(application=application, **spec)  # type: ignore[arg-type]  # the tests' keywords, untyped
        return self.request(fe.CreateSession(session_id=session_id, spec=spec_))

    def tasks(self, session_id: str, inputs: Sequence[bytes | None]) -> list[int]:
        reply = self.request(fe.CreateTasks(session_id=session_id, inputs=list(inputs)))
        assert isinstance(reply, fe.TasksCreated), reply
        return reply.task_ids
