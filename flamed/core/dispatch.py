"""Task dispatch and the execution of scheduling plans.

Dispatch is the hot path: once per loop turn, for every session whose pending tasks or bound
executors changed, pending tasks are handed to its Bound executors in batches (one
`TasksDispatched` record and one `LaunchTasks` command per executor). An executor is given up
to its share of the session's work, at most `dispatch_depth + 1` tasks in flight, so it always
has its next task at hand when it finishes one (no idle round trip), while a handful of long
tasks still spread over all executors.

Scheduling (`scheduler.plan`) runs every `schedule_interval` and whenever sessions, nodes or
executors changed; its decisions become records and executor commands here. A cold start
takes no round trip it can do without, on nodes whose executor manager lists `early-bind` in
its features: an executor created for a session is bound in the same turn (its node creates
it, then binds it), and a session with no executor of its own yet gets its first tasks with the
bind (the node queues them until the instance entered the session). A node that never said it
created an executor gets no session data for it otherwise.

The dispatcher keeps indexes of its own (which sessions to dispatch, which executors are bound
to which session, since when they idle, which are reclaimed or being created, when each may be
recalled again). The other parts update them through the turn's notes (`DispatchNotes`), at
once; `run` does the work once per loop turn, on that turn, reading which nodes may get work
through a narrow `NodeReadiness` the controller hands it. The indexes are rebuilt from the
state when a turn is rolled back (a new `Dispatcher`).

Rebalancing, on the same passes: what is dispatched stays on its executor, so an executor
bound to a session after its tasks were shared out (a node that joined) would idle while its
siblings work through their queues, and an executor reclaimed for another session would first
work through its own. So the tasks an executor has not started are recalled (`RecallTasks`;
the executor manager hands back what its instance has not been given, `TasksReturned`, and
they are Pending again without a retry counted): from a reclaimed executor all of them, and in
a session with nothing pending and an executor idle for `rebalance_after`, what each executor
holds beyond an even share. One recall per executor at a time; after an answer with nothing
returned, not again before `rebalance_after`.

A task that waits for another task of its own session (a recursive service) must not have
that task queued behind it: its executor manager hands back what it holds behind the waiting
task (`TasksReturned{waiting}`), and the executor is fed no more (`waiting`) until it holds no
task; the pending task then goes to a sibling, or to a new executor the scheduler adds for it
(demand counts running and pending tasks).

Recalls only where they pay (hysteresis): each one puts tasks back to Pending and bumps their
attempt, and tasks that bounce between executors cost a round trip each time and gain
nothing. So in the session pass an executor keeps the tasks it was last given for at least
`rebalance_after` (its queue is not taken back the moment a sibling idles: the sibling may get
new work first), and a task recalled in the last `RECALL_MEMORY` x `rebalance_after` seconds is
not recalled again (the executor manager hands back the last queued first, so the recall is cut
at the first such task from the end). A reclaimed executor still hands back everything.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Protocol

from flamed.core import records as r
from flamed.core import scheduler
from flamed.core.config import CoreConfig
from flamed.core.machines.executor import ExecutorTrigger
from flamed.core.state import ClusterState, ExecutorEntry, SessionEntry
from flamed.core.turn import Turn
from flamed.core.views import session_contexts
from protocol import backend as be
from protocol.types import ExecutorState, SessionState, Shim, TaskState

log = logging.getLogger("flamed.session_manager")


_STARTING = frozenset({ExecutorState.Void, ExecutorState.Idle, ExecutorState.Binding})
#: A recalled task is not recalled again for this many `rebalance_after` periods.
RECALL_MEMORY = 10
#: The executor-manager feature (RegisterNode.features) of taking a bind in the commands that
#: create the executor, and tasks for an executor still binding (queued until it is bound).
EARLY_BIND = "early-bind"


class NodeReadiness(Protocol):
    """Which nodes may get new work (the node links answer)."""

    def is_ready(self, node: str) -> bool:
        """Ready, with a Connected link."""
        ...

    def is_stopping(self, node: str) -> bool:
        """Its executor manager is draining to stop."""
        ...

    def supports(self, node: str, feature: str) -> bool:
        """Its executor manager understands the optional command `feature`."""
        ...


class Dispatcher:
    def __init__(self, config: CoreConfig, state: ClusterState, new_id: Callable[[], str]) -> None:
        self.config = config
        self.new_id = new_id
        self.dirty: set[str] = set()
        self.schedule_requested = True
        self.next_schedule = 0.0
        self.idle_since: dict[str, float] = {}
        self.bound_since: dict[str, float] = {}
        self.bound: dict[str, set[str]] = {}  # session id -> ids of its Bound executors
        #: executor id -> the session it is in `bound` under (so that an unbind touches one set
        #: and a session's entry goes with its last executor: `bound` follows what is bound,
        #: not every session that ever was)
        self._bound_to: dict[str, str] = {}
        self.reclaiming: set[str] = set()  # fed no more: unbound once their tasks are done
        self.coming: dict[str, int] = {}  # session id -> executors being created or bound for it
        #: the last plan left a session waiting for executors (scheduler.Plan.waiting)
        self.capacity_short = False
        #: executor id -> monotonic time before which no new recall goes to it
        self.recall_after: dict[str, float] = {}
        #: executor id -> monotonic time of the last tasks launched to it
        self.launched_at: dict[str, float] = {}
        #: (session id, task id) -> monotonic time it was last recalled (pruned after the memory)
        self.recalled_at: dict[tuple[str, int], float] = {}
        #: executors whose running task waits for its own session: fed no more while they hold tasks
        self.waiting: set[str] = set()
        self._rebuild(state)

    def _rebuild(self, state: ClusterState) -> None:
        """Derive the indexes from state (at start, after recovery or a rolled-back turn)."""
        self.bound.clear()
        self._bound_to.clear()
        for executor in state.executors.values():
            if executor.state is ExecutorState.Bound and executor.session_id is not None:
                self._bind(executor.id, executor.session_id)
        self.dirty.update(self.bound)

    # ------------------------------------------------------------------ notifications

    def session_changed(self, session_id: str) -> None:
        self.dirty.add(session_id)
        self.schedule_requested = True

    def schedule_soon(self) -> None:
        self.schedule_requested = True

    def tasks_finished(self, session_id: str, executors: Mapping[str, ExecutorEntry], now: float) -> None:
        self.dirty.add(session_id)
        for executor_id in self.bound.get(session_id, ()):
            executor = executors[executor_id]
            if not executor.tasks and executor_id not in self.idle_since:
                self.idle_since[executor_id] = now
                # Sessions wait for executors: plan now, so that this one goes to one of them
                # as soon as its session has no work for it (not up to an interval later).
                self.schedule_requested |= self.capacity_short

    def executor_bound(self, executor: ExecutorEntry, now: float) -> None:
        assert executor.session_id is not None
        self._bind(executor.id, executor.session_id)
        if not executor.tasks:  # else launched with its bind (a cold start): working already
            self.idle_since[executor.id] = now
        self.bound_since[executor.id] = now
        self.dirty.add(executor.session_id)
        if self.coming.get(executor.session_id):
            self.coming[executor.session_id] -= 1

    def executor_waiting(self, executor: ExecutorEntry) -> None:
        self.waiting.add(executor.id)
        if executor.session_id is not None:
            self.dirty.add(executor.session_id)
        self.schedule_requested = True  # its pending tasks may need another executor

    def executor_unbound(self, executor: ExecutorEntry) -> None:
        self.waiting.discard(executor.id)
        self.idle_since.pop(executor.id, None)
        self.bound_since.pop(executor.id, None)
        self.recall_after.pop(executor.id, None)
        self.launched_at.pop(executor.id, None)
        session_id = self._bound_to.pop(executor.id, None)
        if session_id is not None:
            executors = self.bound[session_id]
            executors.discard(executor.id)
            if not executors:
                del self.bound[session_id]
        self.schedule_requested = True

    def _bind(self, executor_id: str, session_id: str) -> None:
        previous = self._bound_to.get(executor_id)
        if previous is not None and previous != session_id:  # bound again without an unbind
            self.bound[previous].discard(executor_id)
            if not self.bound[previous]:
                del self.bound[previous]
        self._bound_to[executor_id] = session_id
        self.bound.setdefault(session_id, set()).add(executor_id)

    def recall_answered(self, executor: ExecutorEntry, *, returned: list[int], now: float) -> None:
        """The executor answered a recall: after an answer with nothing returned, no new
        recall before `rebalance_after`; the tasks returned are remembered (not recalled again
        for a while)."""
        self.recall_after[executor.id] = now + (0.0 if returned else self.config.rebalance_after)
        if executor.session_id is not None:
            for task_id in returned:
                self.recalled_at[(executor.session_id, task_id)] = now

    # ------------------------------------------------------------------ timers

    def tick(self, now: float) -> None:
        if now >= self.next_schedule:
            self.schedule_requested = True

    def next_deadline(self) -> float:
        return self.next_schedule

    def run(self, turn: Turn, nodes: NodeReadiness) -> None:
        """End of a loop turn: dispatch the sessions that changed, and schedule when due."""
        if self.dirty:
            self._dispatch(turn, nodes)
        if self.schedule_requested:
            self.schedule_requested = False
            self.next_schedule = turn.now.mono + self.config.schedule_interval
            if turn.state.executors or any(s.state is SessionState.Open for s in turn.state.sessions.values()):
                self._schedule(turn, nodes)
                self._rebalance(turn, nodes)
            # else nothing to plan (no executor to release, no session to serve): an idle
            # cluster's planning was a view of every node ten times a second.

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, turn: Turn, nodes: NodeReadiness) -> None:
        dirty, self.dirty = self.dirty, set()
        depth = self.config.dispatch_depth + 1
        state = turn.state
        for session_id in dirty:
            session = state.sessions.get(session_id)
            executor_ids = self.bound.get(session_id)
            if session is None or not executor_ids or not session.pending or session.state is not SessionState.Open:
                continue
            # Only executors on Ready nodes get new work: a launch to a node that is Unknown
            # is not sent (its link is not Connected), so the task would wait for the node or
            # its drain and be retried for a launch the node never saw. When the node registers
            # again its sessions are marked dirty, and it gets work again.
            # Nor do executors on a node whose executor manager is stopping: it would only hold
            # the tasks back and hand them over unstarted when its running task is done.
            executors = self._feedable(state.executors, executor_ids, nodes)
            if not executors:
                continue
            in_flight = sum(len(e.tasks) for e in executors)
            # Executors still being created or bound count too, so that the first one bound
            # does not take the whole queue while its siblings are starting.
            sharing = len(executors) + self.coming.get(session_id, 0)
            share = min(depth, max(1, math.ceil((len(session.pending) + in_flight) / sharing)))
            for executor in sorted(executors, key=lambda e: len(e.tasks)):
                room = min(share - len(executor.tasks), len(session.pending))
                if room > 0:
                    self._launch(turn, session, executor, room)

    def _feedable(
        self, executors: Mapping[str, ExecutorEntry], executor_ids: set[str], nodes: NodeReadiness
    ) -> list[ExecutorEntry]:
        """The executors that may get new tasks: on a Ready node whose executor manager is not
        stopping, not reclaimed for another session, and not waiting on a task of their own
        session (a waiting executor that holds no task any more is fed again)."""
        ready, stopping = nodes.is_ready, nodes.is_stopping
        found = [executors[e] for e in sorted(executor_ids)]
        if self.waiting:
            for e in found:
                if e.id in self.waiting and not e.tasks:
                    self.waiting.discard(e.id)
        return [
            e
            for e in found
            if ready(e.node) and not stopping(e.node) and e.id not in self.reclaiming and e.id not in self.waiting
        ]

    def _launch(self, turn: Turn, session: SessionEntry, executor: ExecutorEntry, count: int) -> None:
        pending = session.pending
        task_ids = [pending[i] for i in range(count)]
        turn.commit(
            r.TasksDispatched(time=turn.now.wall, session_id=session.id, executor_id=executor.id, task_ids=task_ids)
        )
        sent = session.tasks.attempt_and_input  # no task value built per launch
        assignments = []
        for task_id in task_ids:
            attempt, task_input = sent(task_id)
            assignments.append(be.TaskAssignment(task_id=task_id, attempt=attempt, input=task_input))
        turn.send(executor.node, be.LaunchTasks(executor_id=executor.id, session_id=session.id, tasks=assignments))
        self.idle_since.pop(executor.id, None)
        self.launched_at[executor.id] = turn.now.mono

    # ------------------------------------------------------------------ scheduling

    def _view(self, state: ClusterState, nodes: NodeReadiness) -> scheduler.ClusterView:
        limit = self.config.session_bind_retry_limit
        sessions = []
        for s in state.sessions.values():
            if s.state is not SessionState.Open:
                continue
            app = state.applications.get(s.spec.application)
            caps = [m for m in (s.spec.max_instances, app.spec.max_instances if app else None) if m is not None]
            assert s.spec.resreq is not None
            sessions.append(
                scheduler.SessionView(
                    id=s.id,
                    priority=s.spec.priority,
                    creation_time=s.creation_time,
                    resreq=s.spec.resreq,
                    pending=s.counts[TaskState.Pending],
                    running=s.counts[TaskState.Running],
                    min_instances=s.spec.min_instances,
                    max_instances=min(caps) if caps else None,
                    delay_release=app.spec.delay_release if app else 0.0,
                    # Every executor here is a Host one: a Wasm application waits, as in Flame.
                    schedulable=app is not None
                    and app.spec.shim is Shim.Host
                    and s.bind_failures < limit
                    and not s.bind_paused,
                )
            )
        coming: dict[str, int] = {}
        for e in state.executors.values():
            owner = e.session_id if e.state is ExecutorState.Binding else e.reserved_for
            if owner is not None and e.state in _STARTING:
                coming[owner] = coming.get(owner, 0) + 1
        for session_id, count in self.coming.items():
            if coming.get(session_id, 0) < count:
                self.dirty.add(session_id)  # fewer to share with: the rest may take more
        self.coming = coming
        executors = [
            scheduler.ExecutorView(
                id=e.id,
                node=e.node,
                state=e.state,
                resreq=e.resreq,
                session_id=e.session_id,
                reserved_for=e.reserved_for,
                in_flight=len(e.tasks),
                idle_since=self.idle_since.get(e.id),
                bound_since=self.bound_since.get(e.id),
            )
            for e in state.executors.values()
        ]
        node_views = [
            scheduler.NodeView(
                name=n.name,
                capacity=n.info.capacity,
                max_executors=n.info.max_executors,
                ready=nodes.is_ready(n.name),
                drained=n.drained or nodes.is_stopping(n.name),  # no new executors either way
            )
            for n in state.nodes.values()
        ]
        return scheduler.ClusterView(sessions=sessions, executors=executors, nodes=node_views)

    def _schedule(self, turn: Turn, nodes: NodeReadiness) -> None:
        state, now = turn.state, turn.now
        plan = scheduler.plan(self._view(state, nodes), now.mono, self.config.policies)
        self.reclaiming = set(plan.reclaim)
        self.capacity_short = plan.waiting
        for _, session_id in (*plan.create, *plan.bind):
            self.coming[session_id] = self.coming.get(session_id, 0) + 1
        if not plan:
            return
        for executor_id in plan.unbind:
            executor = state.executors[executor_id]
            self._change(turn, executor, ExecutorTrigger.unbind)
            self.executor_unbound(executor)
            turn.send(executor.node, be.UnbindExecutor(executor_id=executor_id))
        for executor_id in plan.release:
            executor = state.executors[executor_id]
            self._change(turn, executor, ExecutorTrigger.release)
            turn.send(executor.node, be.ReleaseExecutor(executor_id=executor_id))
        binding = [state.executors[executor_id] for executor_id, _ in plan.bind]
        for executor, (_, session_id) in zip(binding, plan.bind, strict=True):
            self._change(turn, executor, ExecutorTrigger.bind, session_id)
        for node, session_id in plan.create:
            resreq = state.sessions[session_id].spec.resreq
            assert resreq is not None
            executor_id = self.new_id()
            turn.commit(
                r.ExecutorCreated(
                    time=now.wall, executor_id=executor_id, node=node, resreq=resreq, session_id=session_id
                )
            )
            turn.send(node, be.CreateExecutor(executor_id=executor_id, resreq=resreq))
            log.info("executor %s: created on %s for session %s", executor_id, node, session_id)
            if nodes.supports(node, EARLY_BIND):
                # Bound in the same turn, not after the node's ExecutorCreated: one round trip
                # less before a new session's instance starts (it creates, then binds, in order).
                executor = state.executors[executor_id]
                self._change(turn, executor, ExecutorTrigger.bind, session_id)
                binding.append(executor)
        for executor in binding:
            self._send_bind(turn, executor, early=nodes.supports(executor.node, EARLY_BIND))

    def _send_bind(self, turn: Turn, executor: ExecutorEntry, *, early: bool) -> None:
        """Send the bind; with `early` (the node supports it), a session with no executor of its
        own yet (a cold start) gets its first tasks with it: the node queues them until the
        instance entered the session, so they start without waiting for ExecutorBound to come
        back and a launch to go out. Sessions that have executors already feed a new one once
        it is bound (its start could be slower than their siblings' work)."""
        state = turn.state
        assert executor.session_id is not None
        session = state.sessions[executor.session_id]
        session_ctx, app_ctx = session_contexts(state, session)
        turn.send(executor.node, be.BindExecutor(executor_id=executor.id, session=session_ctx, application=app_ctx))
        if not early or self.bound.get(session.id) or not session.pending or session.state is not SessionState.Open:
            return
        sharing = max(1, self.coming.get(session.id, 0))
        share = min(self.config.dispatch_depth + 1, math.ceil(len(session.pending) / sharing))
        self._launch(turn, session, executor, min(share, len(session.pending)))

    # ------------------------------------------------------------------ rebalancing

    def _rebalance(self, turn: Turn, nodes: NodeReadiness) -> None:
        after = self.config.rebalance_after
        if after <= 0:
            return
        state, now = turn.state, turn.now.mono
        executors = state.executors
        memory = RECALL_MEMORY * after
        if self.recalled_at:
            self.recalled_at = {key: at for key, at in self.recalled_at.items() if now - at < memory}
        for executor_id in self.reclaiming:
            executor = executors.get(executor_id)
            if executor is not None and len(executor.tasks) > 1:
                self._recall(turn, executor, len(executor.tasks) - 1, nodes)
        for session_id, executor_ids in self.bound.items():
            session = state.sessions.get(session_id)
            if session is None or session.pending or session.state is not SessionState.Open or len(executor_ids) < 2:
                continue
            feedable = self._feedable(executors, executor_ids, nodes)
            idle = [self.idle_since.get(e.id) for e in feedable if not e.tasks]
            if not any(since is not None and now - since >= after for since in idle):
                continue
            share = max(1, math.ceil(sum(len(e.tasks) for e in feedable) / len(feedable)))
            for executor in feedable:
                if len(executor.tasks) <= share or now - self.launched_at.get(executor.id, -math.inf) < after:
                    continue
                count = self._recallable(session_id, list(executor.tasks), len(executor.tasks) - share)
                if count:
                    self._recall(turn, executor, count, nodes)

    def _recallable(self, session_id: str, task_ids: list[int], surplus: int) -> int:
        """How many of the last `surplus` tasks (those a recall takes back, last queued
        first) may be recalled: up to the first recalled recently, counting from the end."""
        count = 0
        for task_id in reversed(task_ids[-surplus:]):
            if (session_id, task_id) in self.recalled_at:
                break
            count += 1
        return count

    def _recall(self, turn: Turn, executor: ExecutorEntry, count: int, nodes: NodeReadiness) -> None:
        now = turn.now.mono
        if now < self.recall_after.get(executor.id, 0.0) or executor.session_id is None:
            return
        if not nodes.is_ready(executor.node):
            return  # not sent to a node that is not Connected; its snapshot settles its tasks
        if not nodes.supports(executor.node, "recall"):
            return  # an older executor manager (during an upgrade) would drop the whole frame
        # Until the answer; if it is lost with the link, try again after a while.
        self.recall_after[executor.id] = now + max(5.0, self.config.rebalance_after)
        command = be.RecallTasks(executor_id=executor.id, session_id=executor.session_id, count=count)
        turn.send(executor.node, command)
        turn.count("task_recalls")
        log.debug("executor %s on %s: recalling %d tasks not started", executor.id, executor.node, count)

    @staticmethod
    def _change(turn: Turn, executor: ExecutorEntry, trigger: ExecutorTrigger, session: str | None = None) -> None:
        turn.commit(r.ExecutorChanged(time=turn.now.wall, executor_id=executor.id, trigger=trigger, session_id=session))
        log.debug("executor %s on %s: -> %s (%s)", executor.id, executor.node, executor.state, trigger)
