"""Which fault made each task run again, whether that was to be expected, and how fast the
cluster reacted to each fault. Pure functions of an `Evidence`.

A task that starts k times (per the journals) ran again k - 1 times. Each extra run is one
re-execution:
- a **stale start** is a start on an executor the session manager had already removed (it
  took the task back and gave it elsewhere; the executor manager started it anyway). Always
  unexpected: issue 16 hole 2.
- any other extra run was made possible when the session manager gave the previous run up:
  its "Task was retried: <reason>" event between the two starts (or, failing that, the last
  one before the new start; with none, the new start itself) is the moment of abandonment.
  The cause is the fault active then, or the last one healed at most `window` seconds before
  (the effects of a fault, such as a drain timer started at a session-manager restart, reach
  past its heal by at most detection + drain).

Expected (issue 16's rule): the cause is a kill of the executor manager that held the
previous run, or an outage of that node (frozen, cut off) longer than detection + drain, or
one whose drain ran out while the node was still away (its last heartbeat came up to one
interval before the fault). A session-manager outage, however long, never excuses a rerun:
its restart (or resume) gives every node a fresh drain, so a live node that loses its work
then is hole 1. The issue's words alone ("an outage longer than detection + drain") would
excuse those too; `literal` says what they would give. Everything else is unexpected,
matched to the issue's holes where the evidence fits: 1 = a live node cleaned up after a
session-manager outage; 2 = stale start; 3 = a node back before its drain expired and
cleaned up all the same.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass

from tests.chaos.evidence import Evidence, FaultRun, Run
from tests.chaos.observer import SeenEvent
from tests.chaos.plan import SESSION_MANAGER, FaultKind

RETRY_PREFIX = "Task was retried: "
NO_RETRY = "no retry recorded (the task was recalled or handed back, then run again)"


@dataclass(frozen=True)
class Rerun:
    session: str
    task_id: int
    seq: int
    #: the run given up (None for a stale start: it is the extra run itself)
    previous: Run | None
    start: Run
    abandoned_at: float
    #: the moment whose fault is blamed (the start of the drain that ran out, for a cleanup)
    blamed_at: float
    reason: str
    stale: bool
    fault: int | None
    #: seconds from the fault's heal to the abandonment (negative: while it was active)
    lag: float | None
    expected: bool
    #: expected by the issue's words alone ("an executor-manager kill or an outage longer than
    #: detection + drain"), which would also excuse a session manager away that long
    literal: bool
    why: str
    hole: str


@dataclass(frozen=True)
class NodeEvents:
    """Node states from the session manager's events: (time, state, message) per node,
    plus executor removals (executor id -> time)."""

    states: dict[str, list[tuple[float, str, str]]]
    removed: dict[str, float]
    created: list[tuple[float, str, str]]

    def first(self, node: str, state: str, after: float, before: float = float("inf")) -> float | None:
        for when, seen, _ in self.states.get(node, []):
            if seen == state and after <= when <= before:
                return when
        return None


def node_events(events: list[SeenEvent]) -> NodeEvents:
    states: dict[str, list[tuple[float, str, str]]] = {}
    removed: dict[str, float] = {}
    created: list[tuple[float, str, str]] = []
    for event in sorted(events, key=lambda e: e.time):
        if event.kind == "node":
            state = node_state_of(event.message)
            if state:
                states.setdefault(event.subject, []).append((event.time, state, event.message))
        elif event.kind == "executor":
            if event.message == "removed":
                removed.setdefault(event.subject, event.time)
            elif event.message.startswith("created on node "):
                node = event.message[len("created on node ") :].split(":", 1)[0]
                created.append((event.time, event.subject, node))
    return NodeEvents(states, removed, created)


_STATE_PREFIXES = (("registered (", "Ready"), ("silent: Unknown", "Unknown"), ("cleaned_up: NotReady", "NotReady"))


def node_state_of(message: str) -> str:
    """The node state a node event leads to ("" for events that change none, e.g. drained)."""
    for prefix, state in _STATE_PREFIXES:
        if message.startswith(prefix):
            return state
    return ""


def retries_of(evidence: Evidence) -> dict[tuple[str, int], list[tuple[float, str]]]:
    """(session, task) -> [(time, reason)] of its retries, from the final task events."""
    found: dict[tuple[str, int], list[tuple[float, str]]] = {}
    for session, tasks in evidence.tasks.items():
        for task in tasks:
            retries = [
                (e.creation_time / 1000, (e.message or "")[len(RETRY_PREFIX) :])
                for e in task.events
                if (e.message or "").startswith(RETRY_PREFIX)
            ]
            if retries:
                found[(session, task.id)] = sorted(retries)
    return found


@dataclass(frozen=True)
class _Context:
    evidence: Evidence
    nodes: NodeEvents
    faults: list[FaultRun]
    window: float


def attribute(evidence: Evidence, window: float) -> list[Rerun]:
    nodes = node_events(evidence.events)
    retries = retries_of(evidence)
    faults = sorted(evidence.faults, key=lambda f: f.start)
    context = _Context(evidence, nodes, faults, window)
    by_task: dict[tuple[str, int], list[Run]] = {}
    for run in evidence.starts():
        by_task.setdefault((run.session, run.task_id), []).append(run)
    reruns: list[Rerun] = []
    for key, runs in sorted(by_task.items()):
        if len(runs) < 2:
            continue
        runs.sort(key=lambda r: r.time)
        stale = [r for r in runs if r.executor in nodes.removed and nodes.removed[r.executor] < r.time]
        legit = [r for r in runs if r not in stale]
        if not legit:  # only stale starts: the first one stands for the original run
            legit, stale = stale[:1], stale[1:]
        task_retries = retries.get(key, [])
        for run in stale:
            when, reason = _last_before(task_retries, run.time) or (nodes.removed[run.executor], "executor removed")
            reruns.append(_classify(context, run, previous=None, when=when, reason=reason, stale=True))
        for previous, run in itertools.pairwise(legit):
            between = [(t, why) for t, why in task_retries if previous.time <= t <= run.time]
            when, reason = between[0] if between else (_last_before(task_retries, run.time) or (run.time, NO_RETRY))
            reruns.append(_classify(context, run, previous=previous, when=when, reason=reason, stale=False))
    return reruns


def drain_start(nodes: NodeEvents, reason: str, when: float, drain: float) -> float:
    """The moment to blame for a retry at `when`: for a node cleaned up, the start of the
    drain that ran out (its last Unknown before), which may lie in an earlier fault than the
    cleanup itself (a session manager restarted at the end of one fault cleans up its late
    nodes during the next); else `when`."""
    if not reason.startswith("node ") or "cleaned up" not in reason:
        return when
    node = reason.split()[1]
    unknown = [t for t, state, _ in nodes.states.get(node, []) if state == "Unknown" and t <= when]
    return unknown[-1] if unknown and when - unknown[-1] <= drain + 1.0 else when


def _last_before(retries: list[tuple[float, str]], when: float) -> tuple[float, str] | None:
    before = [r for r in retries if r[0] <= when]
    return before[-1] if before else None


def cause_of(faults: list[FaultRun], when: float, window: float) -> FaultRun | None:
    """The fault active at `when`, else the last one healed at most `window` before it."""
    starts = [f.start for f in faults]
    index = bisect.bisect_right(starts, when) - 1
    candidates = [f for f in faults[: index + 1] if f.start <= when <= f.heal + window]
    return candidates[-1] if candidates else None


def _classify(context: _Context, run: Run, *, previous: Run | None, when: float, reason: str, stale: bool) -> Rerun:
    nodes, window = context.nodes, context.window
    timing = context.evidence.plan.settings.timing
    blamed = drain_start(nodes, reason, when, timing.drain)
    fault = cause_of(context.faults, blamed, window)
    where = previous.node if previous is not None else run.node
    expected, why, hole = False, "", "other"
    literal = fault is not None and (
        (fault.fault.kind is FaultKind.em_kill and fault.fault.target == where)
        or (fault.duration > timing.detection_drain and fault.fault.target in (where, SESSION_MANAGER))
    )
    if stale:
        why, hole = "stale start: started after the session manager had removed its executor", "2"
    elif fault is None:
        why = "no fault active or recently healed"
    else:
        kind = fault.fault.kind
        cleaned_up = "cleaned up" in reason
        not_ready = nodes.first(where, "NotReady", fault.start, fault.heal + window)
        if kind.on_node and fault.fault.target != where:
            why = f"fault on another node ({fault.fault.target}); the run was on {where}"
        elif kind is FaultKind.em_kill:
            expected, why, hole = True, "executor-manager kill", ""
        elif kind.on_node and fault.duration > timing.detection_drain:
            expected, why, hole = True, "outage longer than detection + drain", ""
        elif kind.on_node and not_ready is not None and not_ready <= fault.heal:
            expected, why, hole = True, "drain expired while the node was still cut off", ""
        elif not kind.on_node and cleaned_up:  # its restart or resume gives every node a fresh drain
            why, hole = f"live node cleaned up after a session-manager outage of {fault.duration:.2f}s", "1"
        elif kind.on_node and cleaned_up and not_ready is not None:
            why, hole = f"node back {not_ready - fault.heal:.2f}s before its drain expired, cleaned up anyway", "3"
        else:
            why = f"{kind} of {fault.duration:.2f}s, shorter than detection + drain"
    return Rerun(
        session=run.session,
        task_id=run.task_id,
        seq=run.seq,
        previous=previous,
        start=run,
        abandoned_at=when,
        blamed_at=blamed,
        reason=reason,
        stale=stale,
        fault=fault.fault.index if fault else None,
        lag=(when - fault.heal) if fault else None,
        expected=expected,
        literal=literal,
        why=why,
        hole="" if expected else hole,
    )


# ---------------------------------------------------------------------- recovery timings


def recovery_timings(evidence: Evidence, reruns: list[Rerun], window: float) -> dict[int, dict[str, float | None]]:
    """Per fault index: fault -> Unknown, -> NotReady (the end of the drain that Unknown
    started), -> first rerun blamed on it; heal -> Ready. For a session-manager fault, the
    slowest node, and Ready also from the restarted session manager being ready. A node's
    events count for a fault until the next fault that touches the node (one on it, or on the
    session manager) starts."""
    nodes = node_events(evidence.events)
    drain = evidence.plan.settings.drain
    first_rerun: dict[int, float] = {}
    for rerun in reruns:
        if rerun.fault is not None:
            first_rerun[rerun.fault] = min(first_rerun.get(rerun.fault, float("inf")), rerun.start.time)
    timings: dict[int, dict[str, float | None]] = {}
    names = evidence.plan.settings.node_names
    for fault in evidence.faults:
        index, kind = fault.fault.index, fault.fault.kind
        unknown, not_ready, ready = [], [], []
        for node in [fault.fault.target] if kind.on_node else names:
            touched = [
                f.start for f in evidence.faults if f.start > fault.start and f.fault.target in (node, SESSION_MANAGER)
            ]
            end = min([evidence.stopped_at, *touched])
            went = nodes.first(node, "Unknown", fault.start, min(fault.heal + window, end))
            unknown.append(went)
            not_ready.append(nodes.first(node, "NotReady", went, went + drain + 1.0) if went is not None else None)
            ready.append(nodes.first(node, "Ready", fault.heal, min(fault.heal + 60, end)))
        row: dict[str, float | None] = {
            "to_unknown": _latest(unknown, fault.start),
            "to_not_ready": _latest(not_ready, fault.start),
            "to_rerun": first_rerun[index] - fault.start if index in first_rerun else None,
            "heal_to_ready": _latest(ready, fault.heal),
        }
        if not kind.on_node:
            boot = [t for t in evidence.sm_ready if fault.start <= t <= fault.heal + window]
            origin = boot[0] if kind is FaultKind.sm_kill and boot else fault.heal
            row["sm_ready_to_ready"] = _latest(ready, origin)
        timings[index] = row
    return timings


def _latest(times: list[float | None], origin: float) -> float | None:
    seen = [t for t in times if t is not None]
    return max(seen) - origin if seen else None
