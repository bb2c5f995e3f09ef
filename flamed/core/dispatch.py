"""Task dispatch and the execution of scheduling plans.

Dispatch is the hot path: once per loop turn, for every session whose pending tasks or bound
executors changed, pending tasks are handed to its Bound executors in batches (one
`TasksDispatched` record and one `LaunchTasks` command per executor). An executor is given up
to its share of the session's work, at most `dispatch_depth + 1` tasks in flight, so it always
has its next task at hand when it finishes one (no idle round trip), while a handful of long
tasks still spread over all executors.

Scheduling (`scheduler.plan`) runs every `schedule_interval` and whenever sessions, nodes or
executors changed; its decisions become records and executor commands here.

Rebalancing, on the same passes: what is dispatched stays on its executor, so an executor
bound to a session after its tasks were shared out (a node that joined) would idle while its
siblings work through their queues, and an executor reclaimed for another session would first
work through its own. So the tasks an executor has not started are recalled (`RecallTasks`;
the executor manager hands back what its instance has not been given, `TasksReturned`, and
they are Pending again without a retry counted): from a reclaimed executor all of them, and in
a session with nothing pending and an executor idle for `rebalance_after`, what each executor
holds beyond an even share. One recall per executor at a time; after an answer with nothing
returned, not again before `rebalance_after`.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from flamed.core import records as r
from flamed.core import scheduler
from flamed.core.machines.executor import ExecutorTrigger
from flamed.core.state import ExecutorEntry, SessionEntry
from protocol import backend as be
from protocol.types import ExecutorState, SessionState, Shim, TaskState

if TYPE_CHECKING:
    from flamed.core.controller import Controller
    from flamed.core.turn import Now

log = logging.getLogger("flamed.session_manager")


_STARTING = frozenset({ExecutorState.Void, ExecutorState.Idle, ExecutorState.Binding})


class Dispatcher:
    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.dirty: set[str] = set()
        self.schedule_requested = True
        self.next_schedule = 0.0
        self.idle_since: dict[str, float] = {}
        self.bound: dict[str, set[str]] = {}  # session id -> ids of its Bound executors
        self.reclaiming: set[str] = set()  # fed no more: unbound once their tasks are done
        self.coming: dict[str, int] = {}  # session id -> executors being created or bound for it
        #: executor id -> monotonic time before which no new recall goes to it
        self.recall_after: dict[str, float] = {}
        self.rebuild()

    def rebuild(self) -> None:
        """Derive the indexes from state (after recovery)."""
        self.bound.clear()
        for executor in self.ctl.state.executors.values():
            if executor.state is ExecutorState.Bound and executor.session_id is not None:
                self.bound.setdefault(executor.session_id, set()).add(executor.id)
        self.dirty.update(self.bound)

    # ------------------------------------------------------------------ notifications

    def session_changed(self, session_id: str) -> None:
        self.dirty.add(session_id)
        self.schedule_requested = True

    def schedule_soon(self) -> None:
        self.schedule_requested = True

    def tasks_finished(self, session_id: str, now: Now) -> None:
        self.dirty.add(session_id)
        for executor_id in self.bound.get(session_id, ()):
            executor = self.ctl.state.executors[executor_id]
            if not executor.tasks and executor_id not in self.idle_since:
                self.idle_since[executor_id] = now.mono

    def executor_bound(self, executor: ExecutorEntry, now: Now) -> None:
        assert executor.session_id is not None
        self.bound.setdefault(executor.session_id, set()).add(executor.id)
        self.idle_since[executor.id] = now.mono
        self.dirty.add(executor.session_id)
        if self.coming.get(executor.session_id):
            self.coming[executor.session_id] -= 1

    def executor_unbound(self, executor: ExecutorEntry) -> None:
        self.idle_since.pop(executor.id, None)
        self.recall_after.pop(executor.id, None)
        for executors in self.bound.values():
            executors.discard(executor.id)
        self.schedule_requested = True

    # ------------------------------------------------------------------ timers

    def tick(self, now: Now) -> None:
        if now.mono >= self.next_schedule:
            self.schedule_requested = True

    def next_deadline(self) -> float:
        return self.next_schedule

    def run(self, now: Now) -> None:
        if self.dirty:
            self._dispatch(now)
        if self.schedule_requested:
            self.schedule_requested = False
            self.next_schedule = now.mono + self.ctl.config.schedule_interval
            self._schedule(now)
            self._rebalance(now)

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, now: Now) -> None:
        dirty, self.dirty = self.dirty, set()
        depth = self.ctl.config.dispatch_depth + 1
        for session_id in dirty:
            session = self.ctl.state.sessions.get(session_id)
            executor_ids = self.bound.get(session_id)
            if session is None or not executor_ids or not session.pending or session.state is not SessionState.Open:
                continue
            # Only executors on Ready nodes get new work: a launch to a node that is Unknown
            # is not sent (its link is not Connected), so the task would wait for the node or
            # its drain and be retried for a launch the node never saw. When the node registers
            # again its sessions are marked dirty, and it gets work again.
            # Nor do executors on a node whose executor manager is stopping: it would only hold
            # the tasks back and hand them over unstarted when its running task is done.
            executors = self._feedable(executor_ids)
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
                    self._launch(session, executor, room, now)

    def _feedable(self, executor_ids: set[str]) -> list[ExecutorEntry]:
        """The executors that may get new tasks: on a Ready node whose executor manager is not
        stopping, and not reclaimed for another session."""
        ready, stopping = self.ctl.links.is_ready, self.ctl.links.is_stopping
        executors = [self.ctl.state.executors[e] for e in sorted(executor_ids)]
        return [e for e in executors if ready(e.node) and not stopping(e.node) and e.id not in self.reclaiming]

    def _launch(self, session: SessionEntry, executor: ExecutorEntry, count: int, now: Now) -> None:
        pending = session.pending
        task_ids = [pending[i] for i in range(count)]
        self.ctl.commit(
            r.TasksDispatched(time=now.wall, session_id=session.id, executor_id=executor.id, task_ids=task_ids)
        )
        tasks = session.tasks
        assignments = [
            be.TaskAssignment(task_id=t, attempt=tasks[t - 1].attempt, input=tasks[t - 1].input) for t in task_ids
        ]
        self.ctl.links.send(
            executor.node, be.LaunchTasks(executor_id=executor.id, session_id=session.id, tasks=assignments)
        )
        self.idle_since.pop(executor.id, None)

    def requeue(self, session_id: str, task_ids: list[int], count_retry: bool, reason: str, now: Now) -> None:
        """Running tasks back to Pending (only those still Running: R9); with `count_retry`,
        a task whose retries would pass `task_retry_limit` fails instead."""
        session = self.ctl.state.sessions[session_id]
        limit = self.ctl.config.task_retry_limit
        again: list[int] = []
        failed: list[r.TaskFinish] = []
        for task_id in task_ids:
            task = session.tasks[task_id - 1]
            if task.state is not TaskState.Running:
                continue
            if count_retry and task.retry_count + 1 > limit:
                message = f"retry limit exceeded ({task.retry_count} retries, limit {limit}); last loss: {reason}"
                failed.append(r.TaskFinish(task_id, TaskState.Failed, None, message))
            else:
                again.append(task_id)
        if failed:
            self.ctl.commit(r.TasksFinished(time=now.wall, session_id=session_id, tasks=failed))
            self.ctl.counters["tasks_failed_retry_limit"] += len(failed)
        if again:
            record = r.TasksRequeued(
                time=now.wall, session_id=session_id, task_ids=again, count_retry=count_retry, reason=reason
            )
            self.ctl.commit(record)
            self.ctl.counters["tasks_retried" if count_retry else "tasks_returned"] += len(again)
            log.info("session %s: %d tasks back to Pending (%s)", session_id, len(again), reason)
        self.session_changed(session_id)

    def contexts(self, session: SessionEntry) -> tuple[be.SessionContext, be.ApplicationContext]:
        spec = session.spec
        app = self.ctl.state.applications.get(spec.application)
        session_ctx = be.SessionContext(
            session_id=session.id, application=spec.application, common_data=spec.common_data
        )
        if app is None:
            return session_ctx, be.ApplicationContext(name=spec.application)
        a = app.spec
        return session_ctx, be.ApplicationContext(
            name=app.name,
            shim=a.shim,
            command=a.command,
            arguments=a.arguments,
            environments=a.environments,
            working_directory=a.working_directory,
            image=a.image,
            url=a.url,
            installer=a.installer,
        )

    # ------------------------------------------------------------------ scheduling

    def _view(self) -> scheduler.ClusterView:
        state = self.ctl.state
        limit = self.ctl.config.session_bind_retry_limit
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
            )
            for e in state.executors.values()
        ]
        nodes = [
            scheduler.NodeView(
                name=n.name,
                capacity=n.info.capacity,
                max_executors=n.info.max_executors,
                ready=self.ctl.links.is_ready(n.name),
                drained=n.drained or self.ctl.links.is_stopping(n.name),  # no new executors either way
            )
            for n in state.nodes.values()
        ]
        return scheduler.ClusterView(sessions=sessions, executors=executors, nodes=nodes)

    def _schedule(self, now: Now) -> None:
        plan = scheduler.plan(self._view(), now.mono, self.ctl.config.policies)
        self.reclaiming = set(plan.reclaim)
        for _, session_id in (*plan.create, *plan.bind):
            self.coming[session_id] = self.coming.get(session_id, 0) + 1
        if not plan:
            return
        state, links = self.ctl.state, self.ctl.links
        for executor_id in plan.unbind:
            executor = state.executors[executor_id]
            self._change(executor, ExecutorTrigger.unbind, now)
            self.executor_unbound(executor)
            links.send(executor.node, be.UnbindExecutor(executor_id=executor_id))
        for executor_id in plan.release:
            executor = state.executors[executor_id]
            self._change(executor, ExecutorTrigger.release, now)
            links.send(executor.node, be.ReleaseExecutor(executor_id=executor_id))
        for executor_id, session_id in plan.bind:
            executor = state.executors[executor_id]
            session = state.sessions[session_id]
            self._change(executor, ExecutorTrigger.bind, now, session_id)
            session_ctx, app_ctx = self.contexts(session)
            links.send(
                executor.node,
                be.BindExecutor(executor_id=executor_id, session=session_ctx, application=app_ctx),
            )
        for node, session_id in plan.create:
            resreq = state.sessions[session_id].spec.resreq
            assert resreq is not None
            executor_id = self.ctl.new_id()
            self.ctl.commit(
                r.ExecutorCreated(
                    time=now.wall, executor_id=executor_id, node=node, resreq=resreq, session_id=session_id
                )
            )
            links.send(node, be.CreateExecutor(executor_id=executor_id, resreq=resreq))
            log.info("executor %s: created on %s for session %s", executor_id, node, session_id)

    # ------------------------------------------------------------------ rebalancing

    def _rebalance(self, now: Now) -> None:
        after = self.ctl.config.rebalance_after
        if after <= 0:
            return
        executors = self.ctl.state.executors
        for executor_id in self.reclaiming:
            executor = executors.get(executor_id)
            if executor is not None and len(executor.tasks) > 1:
                self._recall(executor, len(executor.tasks) - 1, now)
        for session_id, executor_ids in self.bound.items():
            session = self.ctl.state.sessions.get(session_id)
            if session is None or session.pending or session.state is not SessionState.Open or len(executor_ids) < 2:
                continue
            feedable = self._feedable(executor_ids)
            idle = [self.idle_since.get(e.id) for e in feedable if not e.tasks]
            if not any(since is not None and now.mono - since >= after for since in idle):
                continue
            share = max(1, math.ceil(sum(len(e.tasks) for e in feedable) / len(feedable)))
            for executor in feedable:
                if len(executor.tasks) > share:
                    self._recall(executor, len(executor.tasks) - share, now)

    def _recall(self, executor: ExecutorEntry, count: int, now: Now) -> None:
        if now.mono < self.recall_after.get(executor.id, 0.0) or executor.session_id is None:
            return
        if not self.ctl.links.is_ready(executor.node):
            return  # not sent to a node that is not Connected; its snapshot settles its tasks
        if not self.ctl.links.supports(executor.node, "recall"):
            return  # an older executor manager (during an upgrade) would drop the whole frame
        # Until the answer; if it is lost with the link, try again after a while.
        self.recall_after[executor.id] = now.mono + max(5.0, self.ctl.config.rebalance_after)
        command = be.RecallTasks(executor_id=executor.id, session_id=executor.session_id, count=count)
        self.ctl.links.send(executor.node, command)
        self.ctl.counters["task_recalls"] += 1
        log.debug("executor %s on %s: recalling %d tasks not started", executor.id, executor.node, count)

    def tasks_returned(self, executor: ExecutorEntry, task_ids: list[int], now: Now) -> None:
        """The answer to a recall: `task_ids` (those still on the executor) are Pending again."""
        wait = 0.0 if task_ids else self.ctl.config.rebalance_after
        self.recall_after[executor.id] = now.mono + wait
        if task_ids and executor.session_id is not None:
            self.requeue(executor.session_id, task_ids, False, "recalled to share the session's work", now)

    def _change(self, executor: ExecutorEntry, trigger: ExecutorTrigger, now: Now, session: str | None = None) -> None:
        self.ctl.commit(r.ExecutorChanged(time=now.wall, executor_id=executor.id, trigger=trigger, session_id=session))
        log.debug("executor %s on %s: -> %s (%s)", executor.id, executor.node, executor.state, trigger)
