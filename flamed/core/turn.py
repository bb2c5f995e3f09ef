"""The turn: what every part of the core needs while it handles one input.

The controller owns the state and the parts (node links, dispatcher, request groups,
subscriptions, watches, clients). For every input it is handed (a client request, a read of
node messages, a timer, the end of a loop turn) it builds a `Turn` and passes it to the part
that decides. The turn carries the state, the config and the time of the input, and the few
things a part may do beyond its own bookkeeping:

- `commit(record)`: the only way state changes. The observers (cluster subscriptions, watches,
  the count of tasks held) note the record first, while the state still shows what it
  changes; then it is applied and queued for the log;
- `send(node, command)`: a command for a node's next `Commands` frame (the node links decide
  whether the node may get it); `push_node(peer, message)`: a frame for a backend peer now
  (`Registered`, `Error`); `reply(peer, message)`: a message for a frontend peer;
- `count(name)`: the counters `GetStats` shows;
- the dispatcher's notes: a session changed, schedule soon, tasks finished, an executor
  bound, unbound, or answered a recall. They update the dispatcher's indexes at once; the
  dispatching itself happens at the end of the loop turn.

Rules: a part gets the turn as an argument and never keeps it past the call; parts reach each
other only through it, never through the controller, and no part imports the controller. What
the turn produces accumulates in the controller's `Outbox` until the end of the loop turn.
`Now` is the time an input arrived: the core never reads a clock (STYLE 3).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from flamed.core import records as r
from flamed.core.config import CoreConfig
from flamed.core.state import ClusterState, ExecutorEntry
from protocol import backend as be
from protocol import frontend as fe


@dataclass(frozen=True)
class Now:
    """The time of an event: monotonic seconds for timers, Unix ms for timestamps."""

    mono: float
    wall: int


@dataclass
class Outbox:
    """What a loop turn produced, for the daemon: records to make durable first, then replies
    and node messages to send; peers whose queued messages it must drop."""

    records: list[r.AnyRecord] = field(default_factory=list)
    replies: list[tuple[bytes, fe.Message]] = field(default_factory=list)
    node_messages: list[tuple[bytes, be.Message]] = field(default_factory=list)
    #: peers forgotten after client_ttl of silence: drop what is still queued for them
    forgotten: list[bytes] = field(default_factory=list)


class RecordObserver(Protocol):
    """A part that keeps something derived from the records (`commit` tells it first)."""

    def note(self, record: r.AnyRecord, state: ClusterState) -> None: ...


class DispatchNotes(Protocol):
    """What the other parts tell the dispatcher (its indexes; see `dispatch`)."""

    def session_changed(self, session_id: str) -> None: ...

    def schedule_soon(self) -> None: ...

    def tasks_finished(self, session_id: str, executors: Mapping[str, ExecutorEntry], now: float) -> None: ...

    def executor_bound(self, executor: ExecutorEntry, now: float) -> None: ...

    def executor_unbound(self, executor: ExecutorEntry) -> None: ...

    def recall_answered(self, executor: ExecutorEntry, *, returned: list[int], now: float) -> None: ...

    def executor_waiting(self, executor: ExecutorEntry) -> None: ...


class NodeCommands(Protocol):
    """Where commands for nodes go (the node links)."""

    def send(self, node: str, command: be.ExecutorCommand) -> None: ...


class Turn:
    """One input's view of the core (see the module rules)."""

    __slots__ = ("_counters", "_dispatch", "_nodes", "_observers", "_outbox", "config", "now", "state")

    def __init__(
        self,
        *,
        state: ClusterState,
        config: CoreConfig,
        now: Now,
        outbox: Outbox,
        counters: collections.Counter[str],
        observers: Sequence[RecordObserver],
        dispatch: DispatchNotes,
        nodes: NodeCommands,
    ) -> None:
        self.state = state
        self.config = config
        self.now = now
        self._outbox = outbox
        self._counters = counters
        self._observers = observers
        self._dispatch = dispatch
        self._nodes = nodes

    # ------------------------------------------------------------------ effects

    def commit(self, record: r.AnyRecord) -> None:
        """Change the state: the observers note `record`, it is applied, it goes to the log."""
        state = self.state
        for observer in self._observers:
            observer.note(record, state)
        state.apply(record)
        self._outbox.records.append(record)

    def send(self, node: str, command: be.ExecutorCommand) -> None:
        """Queue `command` for `node` (dropped unless its link is Connected: node links)."""
        self._nodes.send(node, command)

    def push_node(self, peer: bytes, message: be.Message) -> None:
        """A frame for backend peer `peer`, sent at the end of the loop turn."""
        self._outbox.node_messages.append((peer, message))

    def reply(self, peer: bytes, message: fe.Message) -> None:
        """A message for frontend peer `peer`, sent at the end of the loop turn."""
        self._outbox.replies.append((peer, message))

    def count(self, name: str, amount: int = 1) -> None:
        self._counters[name] += amount

    # ------------------------------------------------------------------ the dispatcher's notes

    def session_changed(self, session_id: str) -> None:
        """The session's tasks or executors changed: dispatch it, and schedule soon."""
        self._dispatch.session_changed(session_id)

    def schedule_soon(self) -> None:
        """Nodes or executors changed: run the scheduler at the end of this loop turn."""
        self._dispatch.schedule_soon()

    def tasks_finished(self, session_id: str) -> None:
        """Tasks of the session finished: its executors may take more (or are idle now)."""
        self._dispatch.tasks_finished(session_id, self.state.executors, self.now.mono)

    def executor_bound(self, executor: ExecutorEntry) -> None:
        self._dispatch.executor_bound(executor, self.now.mono)

    def executor_unbound(self, executor: ExecutorEntry) -> None:
        """The executor is no longer bound (unbound, lost, released)."""
        self._dispatch.executor_unbound(executor)

    def recall_answered(self, executor: ExecutorEntry, *, returned: list[int]) -> None:
        """The executor answered a recall; `returned`: the ids of the tasks it handed back."""
        self._dispatch.recall_answered(executor, returned=returned, now=self.now.mono)

    def executor_waiting(self, executor: ExecutorEntry) -> None:
        """The executor's running task waits for a task of its own session: feed it no more
        until it holds no task."""
        self._dispatch.executor_waiting(executor)
