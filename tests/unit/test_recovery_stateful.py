"""A Hypothesis state machine driving the pure controller through registration, heartbeats,
silence, drain expiry, re-registration (same and new incarnation), goodbye, session-manager
restart (from the state its log describes), task submission, completion (all queued, or one per
executor as with long tasks), resent completions and nodes joining while tasks are queued (so
queued tasks are recalled and shared out), checking the invariants of DESIGN 5 (I2, I4, I5, I7,
I8 and the task rules) after every step. Time is the harness's fake clock: a run takes
milliseconds.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from flamed.core import records as r
from flamed.core.controller import Controller
from flamed.core.snapshot import encode_state
from flamed.core.state import ClusterState
from protocol import backend as be
from protocol import frontend as fe
from protocol.types import ApplicationSpec, ConnectionState, ExecutorState, NodeState, TaskState
from tests.unit.core_harness import FakeNode, Harness

pytestmark = pytest.mark.timeout(120)

NAMES = ("n1", "n2", "n3")
RETRY_LIMIT = 2
TERMINAL = (TaskState.Succeed, TaskState.Failed, TaskState.Cancelled)


class Recovery(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.h = Harness(heartbeat_interval=1.0, heartbeat_liveness=3, drain_timeout=5.0, task_retry_limit=RETRY_LIMIT)
        reply = self.h.request(fe.RegisterApplication(name="flmping", spec=ApplicationSpec(command="true")))
        assert isinstance(reply, fe.ApplicationReply)
        assert isinstance(self.h.session("s1"), fe.SessionReply)
        self.incarnations = itertools.count(1)
        self.fakes: dict[str, FakeNode] = {}  # name -> the live executor manager of that name
        self.finished: dict[int, int] = {}  # task id -> recorded completions
        self.terminal: dict[int, TaskState] = {}
        self.seen_records = 0
        self.created_on_unready: list[str] = []
        self.sent: list[tuple[str, be.TaskCompleted]] = []
        self._check_placement(self.h.ctl)

    def _check_placement(self, ctl: Controller) -> None:
        test = self

        class Placement:
            """Sees every record as it is committed, before it is applied."""

            @staticmethod
            def note(record: r.AnyRecord, state: ClusterState) -> None:
                # I7: an executor is created only on a Ready node with a live link.
                if isinstance(record, r.ExecutorCreated) and not ctl.node_ready(record.node):
                    test.created_on_unready.append(record.node)
                # ... and tasks are launched only on executors of Ready nodes.
                if isinstance(record, r.TasksDispatched):
                    node = state.executors[record.executor_id].node
                    if not ctl.node_ready(node):
                        test.created_on_unready.append(f"tasks to {node}")

        ctl.observe(Placement())

    # ------------------------------------------------------------------ helpers

    def _start(self, name: str) -> FakeNode:
        """A new executor-manager process for `name` (new incarnation, nothing held)."""
        node = FakeNode(name, 2, incarnation=f"inc-{next(self.incarnations)}", auto_run=False)
        old = self.fakes.get(name)
        if old is not None:
            self.h.nodes.pop(old.peer, None)
        self.fakes[name] = node
        self.h.reregister(node)
        return node

    def _current(self, node: FakeNode) -> bool:
        link = self.h.ctl.link(node.name)
        return link is not None and link.peer == node.peer and link.epoch == node.epoch

    def _reconnect_stale(self) -> None:
        """What a real executor manager does after Error(Reregister) or a refusal: register again."""
        for node in list(self.fakes.values()):
            if node.online and not self._current(node):
                self.h.reregister(node)

    # ------------------------------------------------------------------ rules

    @rule(name=st.sampled_from(NAMES))
    def start_executor_manager(self, name: str) -> None:
        self._start(name)

    @precondition(lambda self: any(n.queued for n in self.fakes.values()))
    @rule(name=st.sampled_from(NAMES))
    def join_while_busy(self, name: str) -> None:
        """A node joins while tasks wait in queues: its executors idle long enough for the
        session manager to recall queued tasks and share them out (rebalancing)."""
        self._start(name)
        self.h.advance(1.0, step=0.25)
        self._reconnect_stale()

    @precondition(lambda self: bool(self.fakes))
    @rule(data=st.data())
    def cut_off(self, data: st.DataObject) -> None:
        node = self.fakes[data.draw(st.sampled_from(sorted(self.fakes)))]
        node.online = False

    @precondition(lambda self: any(not n.online for n in self.fakes.values()))
    @rule(data=st.data())
    def glitch_ends(self, data: st.DataObject) -> None:
        """Same process back on the network: registers again with what it holds."""
        node = self.fakes[data.draw(st.sampled_from(sorted(n for n, f in self.fakes.items() if not f.online)))]
        node.online = True
        self.h.reregister(node)

    @precondition(lambda self: any(not n.online for n in self.fakes.values()))
    @rule(data=st.data())
    def late_completions(self, data: st.DataObject) -> None:
        """A cut-off node finishes its tasks and sends them on its old epoch before registering."""
        node = self.fakes[data.draw(st.sampled_from(sorted(n for n, f in self.fakes.items() if not f.online)))]
        node.run_tasks()
        reports = node.take_reports()
        if reports is not None:
            self.h.ctl.handle_node(node.peer, reports, self.h.now())
            self.h.pump()

    @precondition(lambda self: bool(self.fakes))
    @rule(data=st.data())
    def restart_executor_manager(self, data: st.DataObject) -> None:
        self._start(data.draw(st.sampled_from(sorted(self.fakes))))

    @precondition(lambda self: any(n.online for n in self.fakes.values()))
    @rule(data=st.data())
    def goodbye(self, data: st.DataObject) -> None:
        node = self.fakes.pop(data.draw(st.sampled_from(sorted(n for n, f in self.fakes.items() if f.online))))
        link = self.h.ctl.link(node.name)
        current = self._current(node) and link is not None and link.connection is ConnectionState.Connected
        # loaded at a session-manager restart, not registered since: the goodbye is taken too
        restored = (
            link is not None
            and link.peer is None
            and (link.incarnation, link.epoch) == (node.incarnation, node.epoch)
            and link.connection is ConnectionState.Draining
        )
        node.seq += 1
        goodbye = be.Goodbye(epoch=node.epoch, seq=node.seq, incarnation=node.incarnation)
        self.h.ctl.handle_node(node.peer, goodbye, self.h.now())
        self.h.nodes.pop(node.peer, None)
        self.h.pump()
        if current or restored:  # a goodbye on a stale link is refused; the drain cleans that node up
            assert self.h.state.nodes[node.name].state is NodeState.NotReady
            assert self.h.ctl.link(node.name) is None

    @rule()
    def restart_session_manager(self) -> None:
        """Crash and restart: the new controller starts from the state the log describes
        (I8), every node Unknown with its drain timer started now (R8)."""
        durable = ClusterState()
        for record in self.h.records:
            durable.apply(record)  # type: ignore[arg-type]  # Harness.records holds the outbox's records as object
        assert encode_state(durable) == encode_state(self.h.state)  # I8
        old = self.h.ctl
        ctl = Controller(old.config, durable, new_id=old.new_id)
        self._check_placement(ctl)
        self.h.ctl = ctl
        ctl.start(self.h.now())
        self.h.pump()
        assert all(n.state is not NodeState.Ready for n in durable.nodes.values())

    @rule(count=st.integers(1, 6))
    def submit(self, count: int) -> None:
        self.h.tasks("s1", [b"x"] * count)

    @precondition(lambda self: any(n.online for n in self.fakes.values()))
    @rule(data=st.data(), each=st.sampled_from([None, 1]))
    def complete(self, data: st.DataObject, each: int | None) -> None:
        """Every queued task of a node, or the first of each executor (long tasks: the rest
        stay queued, and a sibling that idles meanwhile has them recalled)."""
        node = self.fakes[data.draw(st.sampled_from(sorted(n for n, f in self.fakes.items() if f.online)))]
        node.run_tasks(each)
        self.sent.extend((node.name, c) for c in node.outbox if isinstance(c, be.TaskCompleted))
        self.h.pump()

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def resend_completion(self, data: st.DataObject) -> None:
        """A completion sent again (its ack was lost, or after a re-registration): recorded at
        most once, whatever happened to its task since."""
        name, completion = data.draw(st.sampled_from(self.sent))
        node = self.fakes.get(name)
        if node is None or not node.online or not self._current(node):
            return
        task = self.h.state.sessions[completion.session_id].tasks[completion.task_id - 1]
        stale = task.state is not TaskState.Running or task.attempt != completion.attempt
        before = self.h.ctl.counters["stale_completions_rejected"]
        node.outbox.append(completion)
        self.h.pump()
        if stale:  # (else its first sending was refused on a stale epoch: this one may count)
            assert self.h.ctl.counters["stale_completions_rejected"] == before + 1

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.5, 4.0, 6.0]))
    def advance(self, seconds: float) -> None:
        self.h.advance(seconds)
        self._reconnect_stale()

    # ------------------------------------------------------------------ invariants

    @invariant()
    def records_are_consistent(self) -> None:
        records = self.h.records[self.seen_records :]
        self.seen_records = len(self.h.records)
        for record in records:
            if isinstance(record, r.TasksFinished):
                for finish in record.tasks:
                    self.finished[finish.task_id] = self.finished.get(finish.task_id, 0) + 1
        # I2: at most one recorded completion per task.
        assert all(count == 1 for count in self.finished.values()), self.finished
        # I7
        assert not self.created_on_unready, self.created_on_unready

    @invariant()
    def tasks(self) -> None:
        state = self.h.state
        session = state.sessions["s1"]
        counts = dict.fromkeys(TaskState, 0)
        for task in session.tasks:
            counts[task.state] += 1
            assert task.retry_count <= RETRY_LIMIT, (task.id, task.retry_count)
            if task.id in self.terminal:
                assert task.state is self.terminal[task.id], (task.id, task.state)
            elif task.state in TERMINAL:
                self.terminal[task.id] = task.state
            if task.state is TaskState.Running:
                # A Running task is on exactly one live executor of a Ready or Unknown node:
                # Bound, or Binding (a cold session's first tasks are launched with the bind).
                executor = state.executors.get(task.executor_id or "")
                assert executor is not None, task.id
                assert executor.tasks.get(task.id) == task.attempt
                assert executor.state in (ExecutorState.Bound, ExecutorState.Binding), executor.state
                holders = [e.id for e in state.executors.values() if task.id in e.tasks]
                assert holders == [executor.id]
                assert state.nodes[executor.node].state in (NodeState.Ready, NodeState.Unknown)
            if task.state is TaskState.Failed:
                assert task.message
                assert "retry limit" in task.message
        assert counts == session.counts
        assert sorted(session.pending) == [t.id for t in session.tasks if t.state is TaskState.Pending]

    @invariant()
    def nodes_follow_their_connection(self) -> None:
        state = self.h.state
        for name, node in state.nodes.items():
            link = self.h.ctl.link(name)
            expected = {
                None: NodeState.NotReady,
                ConnectionState.Connected: NodeState.Ready,
                ConnectionState.Draining: NodeState.Unknown,
            }[link.connection if link else None]
            assert node.state is expected, (name, node.state, link.connection if link else None)
            if node.state is NodeState.NotReady:
                assert not [e for e in state.executors.values() if e.node == name]
        # Executors only on nodes that registered.
        assert all(e.node in state.nodes for e in state.executors.values())

    @invariant()
    def both_sides_agree(self) -> None:
        # I5: a node with a current, live link holds exactly the executors the SM has for it.
        for node in self.fakes.values():
            if node.online and self._current(node):
                held = {e.id for e in self.h.state.executors.values() if e.node == node.name}
                assert set(node.executors) == held, (node.name, sorted(node.executors), sorted(held))


Recovery.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRecovery = Recovery.TestCase
