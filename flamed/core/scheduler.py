"""Executor placement: which sessions get executors, on which nodes (DESIGN 7, FLAME.md 2.5).

A pure function: `plan(view, now)` reads a snapshot and returns decisions; the dispatcher
(dispatch.py) turns them into records and commands. Flame's three actions, in their intended order:

- Dispatch/Allocate (one step here): sessions are served in order of higher priority first,
  then lower dominant share (DRF), then age. A session below its demand first gets a free Idle
  executor with an identical resource request (bind), else a new executor on the Ready, not
  drained node with the most room that fits (create). Serving is progressive filling: each
  grant goes to the session that is now first in order, so a busy cluster is shared fairly and
  a free one is filled in one pass (not one executor per session per cycle).
- Shuffle: a Bound executor with nothing in flight is unbound when its session is closed, or has
  had no pending task for the application's `delay_release`, or holds more than its fair share
  while a session of the same or higher priority waits for capacity (no task is ever killed:
  only executors with nothing in flight are unbound; one still working is not taken before it
  was bound `MIN_HOLD`, so a binding pays for its instance's start). Idle executors no session
  takes are released. A plan says whether a session still waits (`Plan.waiting`): the
  dispatcher then plans again as soon as an executor runs out of work.

Demand of a session = pending + running tasks, at least `min_instances`, at most
`max_instances` (session and application). Only Ready, not drained nodes get new executors,
within their capacity (cpu, memory, gpu) and executor limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from protocol.types import ExecutorState, ResourceRequirement


@dataclass
class SessionView:
    id: str
    priority: int
    creation_time: int
    resreq: ResourceRequirement
    pending: int
    running: int
    min_instances: int
    max_instances: int | None
    delay_release: float
    open: bool = True
    schedulable: bool = True  # False once bind failures reached the limit


@dataclass
class ExecutorView:
    id: str
    node: str
    state: ExecutorState
    resreq: ResourceRequirement
    session_id: str | None
    reserved_for: str | None
    in_flight: int
    idle_since: float | None = None  # Bound with nothing in flight since (monotonic)
    bound_since: float | None = None  # Bound since (monotonic); None: long enough (unknown)


@dataclass
class NodeView:
    name: str
    capacity: ResourceRequirement
    max_executors: int
    ready: bool
    drained: bool = False


@dataclass
class ClusterView:
    sessions: list[SessionView]
    executors: list[ExecutorView]
    nodes: list[NodeView]


@dataclass
class Plan:
    bind: list[tuple[str, str]] = field(default_factory=list)  # (executor id, session id)
    create: list[tuple[str, str]] = field(default_factory=list)  # (node, session id)
    unbind: list[str] = field(default_factory=list)
    release: list[str] = field(default_factory=list)
    # Bound executors over their session's fair share that still have tasks in flight: they get
    # no new tasks, and are unbound once what they hold is done (no task is ever killed).
    reclaim: list[str] = field(default_factory=list)
    # Some session wants executors it could not get (no room): an executor that runs out of
    # work is worth a new plan at once, not at the next interval (the dispatcher asks for one).
    waiting: bool = False

    def __bool__(self) -> bool:
        return bool(self.bind or self.create or self.unbind or self.release)


_HOLDING = frozenset({ExecutorState.Binding, ExecutorState.Bound})


def demand(session: SessionView) -> int:
    if not session.open or not session.schedulable:
        return 0
    want = max(session.pending + session.running, session.min_instances)
    if session.max_instances is not None:
        want = min(want, session.max_instances)
    return want


class _Room:
    """Free capacity of the schedulable nodes, updated as executors are granted."""

    def __init__(self, nodes: list[NodeView], executors: list[ExecutorView]) -> None:
        self.free: dict[str, list[int]] = {}
        self.slots: dict[str, int] = {}
        usable = {n.name: n for n in nodes if n.ready and not n.drained}
        for node in usable.values():
            self.free[node.name] = [node.capacity.cpu, node.capacity.memory, node.capacity.gpu]
            self.slots[node.name] = node.max_executors
        for executor in executors:
            if executor.node in self.free and executor.state is not ExecutorState.Released:
                self.take(executor.node, executor.resreq)
        self.total = [0, 0, 0]
        for node in nodes:
            if node.ready:
                self.total[0] += node.capacity.cpu
                self.total[1] += node.capacity.memory
                self.total[2] += node.capacity.gpu

    def take(self, node: str, resreq: ResourceRequirement) -> None:
        free = self.free[node]
        free[0] -= resreq.cpu
        free[1] -= resreq.memory
        free[2] -= resreq.gpu
        self.slots[node] -= 1

    def best_node(self, resreq: ResourceRequirement) -> str | None:
        """The node with the most free cpu that fits `resreq` (spreads load across nodes)."""
        best, best_cpu = None, -1
        for name, free in self.free.items():
            fits = (
                self.slots[name] > 0
                and free[0] >= resreq.cpu
                and free[1] >= resreq.memory
                and (resreq.gpu == 0 or free[2] >= resreq.gpu)
            )
            if fits and free[0] > best_cpu:
                best, best_cpu = name, free[0]
        return best

    def share(self, resreq: ResourceRequirement, count: int) -> float:
        """Dominant share of `count` executors of `resreq` (Flame: GPU use with no GPUs = inf)."""
        shares = []
        for used, total in zip((resreq.cpu, resreq.memory, resreq.gpu), self.total, strict=True):
            if used and not total:
                return math.inf
            shares.append(used * count / total if total else 0.0)
        return max(shares)


#: Seconds a binding keeps an executor that is working before it may be reclaimed for another
#: session's fair share: an instance's start costs its slot 15-25 ms forked by the zygote and
#: 0.1-0.2 s by exec, which a binding reclaimed at once would waste (a binding that runs out of
#: work gives its executor up at once all the same).
MIN_HOLD = 0.5


def plan(
    view: ClusterView, now: float, policies: tuple[str, ...] = ("priority", "drf"), min_hold: float = MIN_HOLD
) -> Plan:
    """`policies` (config `cluster.policies`): `priority` serves higher priorities first and
    lets them take executors from lower ones; `drf` orders equals by dominant share. Without
    either, sessions are served by age. `min_hold`: see MIN_HOLD."""
    if "priority" not in policies:  # every session is equal; fair share alone decides
        view = ClusterView([replace(s, priority=0) for s in view.sessions], view.executors, view.nodes)
    decisions = Plan()
    room = _Room(view.nodes, view.executors)
    sessions = {s.id: s for s in view.sessions}
    held: dict[str, int] = dict.fromkeys(sessions, 0)
    for executor in view.executors:
        owner = executor.session_id if executor.state in _HOLDING else executor.reserved_for
        if owner in held and executor.state is not ExecutorState.Released:
            held[owner] += 1
    usable = {n.name for n in view.nodes if n.ready and not n.drained}
    reachable = {n.name for n in view.nodes if n.ready}
    idle = [e for e in view.executors if e.state is ExecutorState.Idle and e.node in reachable]
    free_idle = [e for e in idle if e.reserved_for not in sessions or e.node not in usable]
    reserved_idle = [e for e in idle if e.reserved_for in sessions and e.node in usable]
    want = {s.id: demand(s) for s in view.sessions}
    blocked: set[str] = set()

    for executor in reserved_idle:
        assert executor.reserved_for is not None
        decisions.bind.append((executor.id, executor.reserved_for))

    use_drf = "drf" in policies

    def order(s: SessionView) -> tuple[int, float, int]:
        return (-s.priority, room.share(s.resreq, held[s.id]) if use_drf else 0.0, s.creation_time)

    while True:
        candidates = [s for s in view.sessions if held[s.id] < want[s.id] and s.id not in blocked]
        if not candidates:
            break
        session = min(candidates, key=order)
        spare = next((e for e in free_idle if e.resreq == session.resreq and e.node in usable), None)
        if spare is not None:
            free_idle.remove(spare)
            decisions.bind.append((spare.id, session.id))
        else:
            node = room.best_node(session.resreq)
            if node is None:
                blocked.add(session.id)
                continue
            room.take(node, session.resreq)
            decisions.create.append((node, session.id))
        held[session.id] += 1

    decisions.release.extend(e.id for e in free_idle)
    decisions.waiting = bool(blocked)
    ready_view = ClusterView(view.sessions, [e for e in view.executors if e.node in reachable], view.nodes)
    _shuffle(
        ready_view,
        now,
        sessions=sessions,
        held=held,
        want=want,
        blocked=blocked,
        decisions=decisions,
        min_hold=min_hold,
    )
    return decisions


def _shuffle(
    view: ClusterView,
    now: float,
    *,
    sessions: dict[str, SessionView],
    held: dict[str, int],
    want: dict[str, int],
    blocked: set[str],
    decisions: Plan,
    min_hold: float,
) -> None:
    """Unbind Bound executors that their session no longer needs, or that a waiting session of
    the same or higher priority needs more (fair share). An executor with tasks in flight is
    only reclaimed (fed no more, unbound when empty), and not before it was bound `min_hold`
    seconds; the emptiest go first."""
    fair = _fair_shares(view, want, sessions) if blocked else {}
    for executor in sorted(view.executors, key=lambda e: e.in_flight):
        if executor.state is not ExecutorState.Bound:
            continue
        session = sessions.get(executor.session_id or "")
        if session is None or not session.open:
            if not executor.in_flight:
                decisions.unbind.append(executor.id)
            continue
        idle_for = now - executor.idle_since if executor.idle_since is not None else 0.0
        surplus = held[session.id] > want[session.id]
        if not executor.in_flight and session.pending == 0 and surplus and idle_for >= session.delay_release:
            decisions.unbind.append(executor.id)
            held[session.id] -= 1
            continue
        # A session never gives an executor up to itself: with executors on a node that is
        # not Ready (Unknown, drained) it may hold more than its fair share of the Ready
        # nodes while blocked, and unbinding to bind again would loop forever (I6).
        others_waiting = any(b != session.id and sessions[b].priority >= session.priority for b in blocked)
        if others_waiting and held[session.id] > fair.get(session.id, 0):
            if executor.in_flight and executor.bound_since is not None and now - executor.bound_since < min_hold:
                continue  # it has not paid for its start yet
            (decisions.reclaim if executor.in_flight else decisions.unbind).append(executor.id)
            held[session.id] -= 1


def _fair_shares(view: ClusterView, want: dict[str, int], sessions: dict[str, SessionView]) -> dict[str, int]:
    """Executor counts: higher priorities take what they want first; within a priority the
    executors left are water-filled among the sessions by demand."""
    remaining = sum(max(0, n.max_executors) for n in view.nodes if n.ready and not n.drained)
    share: dict[str, int] = {}
    for priority in sorted({sessions[s].priority for s in want}, reverse=True):
        active = {s: w for s, w in want.items() if w > 0 and sessions[s].priority == priority}
        for session_id in active:
            share[session_id] = 0
        while remaining > 0 and active:
            each = max(1, remaining // len(active))
            for session_id in list(active):
                grant = min(each, active[session_id] - share[session_id], remaining)
                share[session_id] += grant
                remaining -= grant
                if share[session_id] >= active[session_id]:
                    del active[session_id]
                if remaining == 0:
                    break
    return share
