"""Executor-manager links: registration, reconciliation, heartbeats, fencing, cleanup (DESIGN 5).

One `NodeLink` per node name holds the volatile side of a connection: routing id, epoch,
sequence numbers, liveness and drain deadlines. Its state follows the connection table
(Connected / Draining / Closed; Closed links are discarded) and drives the node table
(Ready / Unknown / NotReady), which is durable.

Rules that keep a stale peer from corrupting state:
- every registration gets a new epoch; a message whose epoch is not the link's current one, or
  that leaves a gap in the sequence, is refused with `Error(Reregister)`;
- a second live executor manager with a name already Connected is refused (`DuplicateNode`);
- at registration the reply is the full snapshot of executors the node should hold. Executors
  the node did not report are lost whatever their state (their running tasks are retried);
  executors it reported but should not hold are left out of the snapshot, so it kills them;
- a completion is recorded only if the task is Running in that attempt on that executor.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flamed.core import records as r
from flamed.core.machines.connection import CONNECTION, ConnectionTrigger
from flamed.core.machines.executor import ExecutorTrigger
from flamed.core.state import SESSION_BIND_FAILED, SESSION_RETRY_LIMIT_REACHED, ExecutorEntry
from flamed.core.validation import check_name
from protocol import backend as be
from protocol.codec import PROTOCOL_VERSION
from protocol.errors import ErrorCode
from protocol.types import (
    ConnectionState,
    Event,
    ExecutorState,
    Node,
    NodeState,
    ResourceRequirement,
    TaskState,
)

if TYPE_CHECKING:
    from flamed.core.controller import Controller, Now

log = logging.getLogger("flamed.session_manager")


class NodeLink:
    __slots__ = (
        "ack",
        "commands",
        "connection",
        "drain_deadline",
        "epoch",
        "incarnation",
        "last_seen",
        "last_sent",
        "name",
        "peer",
        "recv_seq",
        "send_seq",
        "stopping",
    )

    def __init__(self, name: str, peer: bytes | None, incarnation: str, epoch: int, now: float) -> None:
        self.name = name
        self.peer = peer
        self.incarnation = incarnation
        self.epoch = epoch
        self.connection = ConnectionState.Connected
        self.last_seen = now
        self.last_sent = now
        self.send_seq = 0
        self.recv_seq = 0
        self.ack = 0
        self.drain_deadline: float | None = None
        self.commands: list[be.ExecutorCommand] = []
        #: the executor manager said it is draining to stop: no new executors, binds or tasks
        self.stopping = False


#: Recovery counters, in `GetStats` as `<name>_total` from the start (zero until they move).
RECOVERY_COUNTERS = (
    "registrations",
    "reregistrations",
    "nodes_silent",
    "node_cleanups",
    "tasks_retried",
    "tasks_failed_retry_limit",
    "stale_completions_rejected",
    "stale_node_messages",
    "duplicate_nodes_refused",
    "orphan_executors_released",
)


class NodeLinks:
    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.links: dict[str, NodeLink] = {}
        self.by_peer: dict[bytes, NodeLink] = {}
        for name in RECOVERY_COUNTERS:
            ctl.counters.setdefault(name, 0)

    @property
    def _silence_limit(self) -> float:
        return self.ctl.config.heartbeat_interval * self.ctl.config.heartbeat_liveness

    # ------------------------------------------------------------------ start-up

    def restore(self, now: Now) -> None:
        """After a restart: every node not cleaned up is Unknown with its drain timer started
        now (R8), so a node that never returns is cleaned up and its tasks retried."""
        for node in self.ctl.state.nodes.values():
            if node.state is NodeState.NotReady:
                continue
            if node.state is NodeState.Ready:
                self.ctl.commit(r.NodeChanged(time=now.wall, name=node.name, trigger="silent", reason="restart"))
            link = NodeLink(node.name, None, node.incarnation, node.epoch, now.mono)
            link.connection = ConnectionState.Draining
            link.drain_deadline = now.mono + self.ctl.config.drain_timeout
            self.links[node.name] = link
            log.info("node %s: Unknown after restart; drain timer %.1fs", node.name, self.ctl.config.drain_timeout)

    # ------------------------------------------------------------------ messages

    def handle(self, peer: bytes, message: be.NodeMessage, now: Now) -> None:
        if isinstance(message, be.RegisterNode):
            self._register(peer, message, now)
            return
        link = self.by_peer.get(peer)
        if link is None or message.epoch != link.epoch or link.connection is not ConnectionState.Connected:
            self.ctl.counters["stale_node_messages"] += 1
            self._refuse(peer, ErrorCode.Reregister, f"registration epoch {message.epoch} is not current")
            return
        if message.seq != link.recv_seq + 1:
            self.ctl.counters["node_message_gaps"] += 1
            self._refuse(peer, ErrorCode.Reregister, f"expected seq {link.recv_seq + 1}, got {message.seq}")
            return
        link.recv_seq = message.seq
        link.last_seen = now.mono
        self.ctl.counters["heartbeats" if isinstance(message, be.Heartbeat) else "node_messages"] += 1
        if isinstance(message, be.Reports):
            self._reports(link, message.reports, now)
            link.ack = message.seq
        elif isinstance(message, be.Heartbeat) and message.stopping and not link.stopping:
            link.stopping = True
            log.info("node %s: stopping (its executor manager is draining): no new executors or tasks", link.name)
            self.ctl.dispatcher.schedule_soon()  # its idle executors go, binds go elsewhere
        elif isinstance(message, be.Goodbye):
            log.info("node %s: goodbye (executor manager stopping)", link.name)
            self._close(link, ConnectionTrigger.goodbye, "executor manager stopped", now)

    def _refuse(self, peer: bytes, code: ErrorCode, message: str) -> None:
        self.ctl.outbox.node_messages.append((peer, be.Error(code=code, message=message)))

    def _register(self, peer: bytes, message: be.RegisterNode, now: Now) -> None:
        name = message.node.name
        if message.protocol_version != PROTOCOL_VERSION:
            self._refuse(peer, ErrorCode.VersionMismatch, f"session manager speaks protocol {PROTOCOL_VERSION}")
            return
        if bad := check_name("node", name):
            self._refuse(peer, ErrorCode.BadMessage, bad)
            return
        link = self.links.get(name)
        live = link is not None and link.connection is ConnectionState.Connected
        if live and link and link.incarnation != message.incarnation:
            quiet = now.mono - link.last_seen
            if quiet < 2 * self.ctl.config.heartbeat_interval:
                self.ctl.counters["duplicate_nodes_refused"] += 1
                log.warning("node %s: refused a second executor manager (incarnation %s)", name, message.incarnation)
                self._refuse(
                    peer,
                    ErrorCode.DuplicateNode,
                    f"node name {name!r} is held by a live executor manager (last heard {quiet:.1f}s ago); "
                    "start this one with another --node-name",
                )
                return
        epoch = self.ctl.state.max_epoch + 1
        if name in self.ctl.state.nodes:
            self.ctl.counters["reregistrations"] += 1
        self.ctl.commit(
            r.NodeRegistered(time=now.wall, info=message.node, incarnation=message.incarnation, epoch=epoch)
        )
        kept = self._reconcile(name, set(message.executors), now)
        if link is not None:
            if link.peer is not None:
                self.by_peer.pop(link.peer, None)
            if link.connection is not ConnectionState.Closed:
                link.connection = CONNECTION.next(link.connection, ConnectionTrigger.register)
        link = NodeLink(name, peer, message.incarnation, epoch, now.mono)
        self.links[name] = link
        self.by_peer[peer] = link
        self.ctl.counters["registrations"] += 1
        log.info("node %s: Ready (epoch %d, %d executors kept)", name, epoch, len(kept))
        self.ctl.outbox.node_messages.append(
            (
                peer,
                be.Registered(
                    epoch=epoch,
                    executors=[self.assignment(e) for e in kept],
                    heartbeat_interval=self.ctl.config.heartbeat_interval,
                    heartbeat_liveness=self.ctl.config.heartbeat_liveness,
                ),
            )
        )
        self.ctl.dispatcher.schedule_soon()
        for executor in kept:  # Ready again: its Bound executors can take work again
            if executor.session_id is not None:
                self.ctl.dispatcher.dirty.add(executor.session_id)

    def _reconcile(self, name: str, reported: set[str], now: Now) -> list[ExecutorEntry]:
        kept = []
        for executor in [e for e in self.ctl.state.executors.values() if e.node == name]:
            if executor.id in reported:
                kept.append(executor)
            else:
                self.lose_executor(executor, "not reported by its node at registration", now)
        orphans = reported - {e.id for e in kept}
        if orphans:
            self.ctl.counters["orphan_executors_released"] += len(orphans)
            log.info("node %s: releasing %d executors it should not hold", name, len(orphans))
        return kept

    def assignment(self, executor: ExecutorEntry) -> be.ExecutorAssignment:
        session_ctx = app_ctx = None
        tasks: list[be.TaskAssignment] = []
        if executor.session_id is not None:
            session = self.ctl.state.sessions[executor.session_id]
            session_ctx, app_ctx = self.ctl.dispatcher.contexts(session)
            tasks = [
                be.TaskAssignment(task_id=t, attempt=a, input=session.tasks[t - 1].input)
                for t, a in executor.tasks.items()
            ]
        return be.ExecutorAssignment(
            executor_id=executor.id,
            state=str(executor.state),
            resreq=executor.resreq,
            session=session_ctx,
            application=app_ctx,
            tasks=tasks,
        )

    # ------------------------------------------------------------------ reports

    def _reports(self, link: NodeLink, reports: list[be.ExecutorReport], now: Now) -> None:
        finished: dict[str, list[r.TaskFinish]] = {}
        seen: set[tuple[str, int]] = set()
        for report in reports:
            if isinstance(report, be.TaskCompleted):
                self._completed(link, report, finished, seen)
                continue
            self._flush_finished(finished, now)
            executor = self.ctl.state.executors.get(report.executor_id)
            if executor is None or executor.node != link.name:
                self.ctl.counters["stale_reports"] += 1
                continue
            self._executor_report(executor, report, now)
        self._flush_finished(finished, now)

    def _completed(
        self,
        link: NodeLink,
        report: be.TaskCompleted,
        finished: dict[str, list[r.TaskFinish]],
        seen: set[tuple[str, int]],
    ) -> None:
        key = (report.session_id, report.task_id)
        executor = self.ctl.state.executors.get(report.executor_id)
        session = self.ctl.state.sessions.get(report.session_id)
        task = session.task(report.task_id) if session else None
        current = (
            key not in seen
            and executor is not None
            and executor.node == link.name
            and executor.tasks.get(report.task_id) == report.attempt
            and task is not None
            and task.state is TaskState.Running
            and task.attempt == report.attempt
            and task.executor_id == executor.id
            and report.state in (TaskState.Succeed, TaskState.Failed)
        )
        if not current:
            self.ctl.counters["stale_completions_rejected"] += 1
            log.info(
                "rejected stale completion of task %s/%d attempt %d from executor %s",
                report.session_id,
                report.task_id,
                report.attempt,
                report.executor_id,
            )
            return
        seen.add(key)
        batch = finished.setdefault(report.session_id, [])
        output, state, message = report.output, report.state, report.message
        limit = self.ctl.config.max_task_output_size
        if output is not None and len(output) > limit:
            self.ctl.counters["outputs_too_large"] += 1
            message = f"output of {len(output)} bytes is over limits.max_task_output_size ({limit})"
            output, state = None, TaskState.Failed
        batch.append(r.TaskFinish(report.task_id, state, output, message))

    def _flush_finished(self, finished: dict[str, list[r.TaskFinish]], now: Now) -> None:
        for session_id, tasks in finished.items():
            self.ctl.commit(r.TasksFinished(time=now.wall, session_id=session_id, tasks=tasks))
            self.ctl.counters["tasks_completed"] += len(tasks)
            self.ctl.dispatcher.tasks_finished(session_id, now)
        finished.clear()

    def _executor_report(self, executor: ExecutorEntry, report: be.ExecutorReport, now: Now) -> None:
        ctl = self.ctl
        state = executor.state
        match report:
            case be.ExecutorCreated() if state is ExecutorState.Void:
                self._change(executor, ExecutorTrigger.created, now)
                ctl.dispatcher.schedule_soon()
            case be.ExecutorBound() if state is ExecutorState.Binding and executor.session_id == report.session_id:
                self._change(executor, ExecutorTrigger.bound, now)
                ctl.dispatcher.executor_bound(executor, now)
            case be.ExecutorBindFailed() if state is ExecutorState.Binding:
                self._change(executor, ExecutorTrigger.bind_failed, now)
                self._bind_failed(executor, report, now)
            case be.ExecutorUnbound() if state in (
                ExecutorState.Bound,
                ExecutorState.Binding,
                ExecutorState.Unbinding,
            ):
                self._unbound(executor, report, now)
            case be.ExecutorReleased() if state is ExecutorState.Releasing:
                self._change(executor, ExecutorTrigger.released, now)
                ctl.commit(r.ExecutorRemoved(time=now.wall, executor_id=executor.id))
            case _:
                ctl.counters["stale_reports"] += 1

    def _change(self, executor: ExecutorEntry, trigger: ExecutorTrigger, now: Now, session: str | None = None) -> None:
        before = executor.state
        self.ctl.commit(r.ExecutorChanged(time=now.wall, executor_id=executor.id, trigger=trigger, session_id=session))
        log.debug("executor %s on %s: %s -> %s (%s)", executor.id, executor.node, before, executor.state, trigger)

    def _bind_failed(self, executor: ExecutorEntry, report: be.ExecutorBindFailed, now: Now) -> None:
        session = self.ctl.state.sessions.get(report.session_id)
        if session is None:
            return
        message = (
            f"Executor {executor.id} on node {executor.node} failed to bind session with "
            f"return_code {report.code}: {report.message}"
        )
        log.warning("session %s: %s", session.id, message)
        event = Event(code=SESSION_BIND_FAILED, message=message, creation_time=now.wall)
        self.ctl.commit(r.SessionEventRecorded(time=now.wall, session_id=session.id, event=event))
        limit = self.ctl.config.session_bind_retry_limit
        if session.bind_failures == limit:
            text = (
                f"Session retry limit reached after {session.bind_failures}/{limit} failed attempts; "
                "new executor assignment is paused"
            )
            event = Event(code=SESSION_RETRY_LIMIT_REACHED, message=text, creation_time=now.wall)
            self.ctl.commit(r.SessionEventRecorded(time=now.wall, session_id=session.id, event=event))

    def _unbound(self, executor: ExecutorEntry, report: be.ExecutorUnbound, now: Now) -> None:
        dispatcher = self.ctl.dispatcher
        if executor.session_id is not None and executor.tasks:
            unstarted = [k.task_id for k in report.unstarted if executor.tasks.get(k.task_id) == k.attempt]
            if unstarted:
                dispatcher.requeue(executor.session_id, unstarted, False, "returned unstarted", now)
            lost = list(executor.tasks)
            if lost:
                reason = f"executor {executor.id} lost its instance ({report.reason or 'unbound'})"
                dispatcher.requeue(executor.session_id, lost, True, reason, now)
        if executor.state is ExecutorState.Bound:
            self._change(executor, ExecutorTrigger.lost, now)
        elif executor.state is ExecutorState.Binding:
            self._change(executor, ExecutorTrigger.unbind, now)
        self._change(executor, ExecutorTrigger.unbound, now)
        dispatcher.executor_unbound(executor)

    def lose_executor(self, executor: ExecutorEntry, reason: str, now: Now) -> None:
        """The executor is gone with its node: retry its tasks, forget it (one transaction)."""
        if executor.session_id is not None and executor.tasks:
            self.ctl.dispatcher.requeue(executor.session_id, list(executor.tasks), True, reason, now)
        if executor.state is not ExecutorState.Released:
            self._change(executor, ExecutorTrigger.node_lost, now)
        self.ctl.commit(r.ExecutorRemoved(time=now.wall, executor_id=executor.id))
        self.ctl.dispatcher.executor_unbound(executor)
        log.info("executor %s on %s: released (%s)", executor.id, executor.node, reason)

    # ------------------------------------------------------------------ commands

    def send(self, node: str, command: be.ExecutorCommand) -> None:
        """Queue a command for the node's next `Commands` frame; dropped if it is not
        Connected (the snapshot at its next registration carries the desired state)."""
        link = self.links.get(node)
        if link is not None and link.connection is ConnectionState.Connected:
            link.commands.append(command)

    def flush(self, now: Now) -> None:
        interval = self.ctl.config.heartbeat_interval
        for link in self.links.values():
            if link.connection is not ConnectionState.Connected or link.peer is None:
                link.commands.clear()
                continue
            message: be.Message
            if link.commands:
                link.send_seq += 1
                message = be.Commands(epoch=link.epoch, seq=link.send_seq, ack=link.ack, commands=link.commands)
                link.commands = []
            elif now.mono - link.last_sent >= interval:
                link.send_seq += 1
                message = be.Heartbeat(epoch=link.epoch, seq=link.send_seq, ack=link.ack)
            else:
                continue
            link.last_sent = now.mono
            self.ctl.outbox.node_messages.append((link.peer, message))

    # ------------------------------------------------------------------ timers

    def tick(self, now: Now) -> None:
        for link in list(self.links.values()):
            if link.connection is ConnectionState.Connected and now.mono - link.last_seen > self._silence_limit:
                link.connection = CONNECTION.next(link.connection, ConnectionTrigger.silence)
                link.drain_deadline = now.mono + self.ctl.config.drain_timeout
                self.ctl.counters["nodes_silent"] += 1
                reason = f"no message for {now.mono - link.last_seen:.1f}s"
                self.ctl.commit(r.NodeChanged(time=now.wall, name=link.name, trigger="silent", reason=reason))
                log.warning(
                    "node %s: Unknown (%s); cleanup in %.1fs",
                    link.name,
                    reason,
                    self.ctl.config.drain_timeout,
                )
            elif (
                link.connection is ConnectionState.Draining
                and link.drain_deadline is not None
                and now.mono >= link.drain_deadline
            ):
                self._close(link, ConnectionTrigger.drain_expired, "drain timeout expired", now)

    def _close(self, link: NodeLink, trigger: ConnectionTrigger, reason: str, now: Now) -> None:
        link.connection = CONNECTION.next(link.connection, trigger)
        del self.links[link.name]
        if link.peer is not None:
            self.by_peer.pop(link.peer, None)
        self.ctl.counters["node_cleanups"] += 1
        for executor in [e for e in self.ctl.state.executors.values() if e.node == link.name]:
            self.lose_executor(executor, f"node {link.name} cleaned up: {reason}", now)
        node = self.ctl.state.nodes.get(link.name)
        if node is not None and node.state is not NodeState.NotReady:
            self.ctl.commit(r.NodeChanged(time=now.wall, name=link.name, trigger="cleaned_up", reason=reason))
        # A goodbye is an orderly stop; a drain that ran out is a node lost.
        level = logging.INFO if trigger is ConnectionTrigger.goodbye else logging.WARNING
        log.log(level, "node %s: NotReady (%s); its executors released", link.name, reason)
        self.ctl.dispatcher.schedule_soon()

    def next_deadline(self) -> float:
        deadlines = [float("inf")]
        interval = self.ctl.config.heartbeat_interval
        for link in self.links.values():
            if link.connection is ConnectionState.Connected:
                deadlines.append(link.last_seen + self._silence_limit + 0.001)
                deadlines.append(link.last_sent + interval)
            elif link.drain_deadline is not None:
                deadlines.append(link.drain_deadline)
        return min(deadlines)

    # ------------------------------------------------------------------ views

    def is_stopping(self, node: str) -> bool:
        link = self.links.get(node)
        return link is not None and link.stopping

    def is_ready(self, node: str) -> bool:
        link = self.links.get(node)
        entry = self.ctl.state.nodes.get(node)
        return (
            link is not None
            and link.connection is ConnectionState.Connected
            and entry is not None
            and entry.state is NodeState.Ready
        )

    def node_view(self, name: str, now: float) -> Node | None:
        node = self.ctl.state.nodes.get(name)
        if node is None:
            return None
        link = self.links.get(name)
        counts: dict[str, int] = {}
        used = [0, 0, 0]
        for executor in self.ctl.state.executors.values():
            if executor.node == name:
                counts[executor.state] = counts.get(executor.state, 0) + 1
                used[0] += executor.resreq.cpu
                used[1] += executor.resreq.memory
                used[2] += executor.resreq.gpu
        capacity = node.info.capacity
        return Node(
            name=name,
            hostname=node.info.hostname,
            state=node.state,
            connection=link.connection if link else None,
            capacity=capacity,
            allocatable=ResourceRequirement(
                cpu=max(0, capacity.cpu - used[0]),
                memory=max(0, capacity.memory - used[1]),
                gpu=max(0, capacity.gpu - used[2]),
            ),
            max_executors=node.info.max_executors,
            arch=node.info.arch,
            os=node.info.os,
            incarnation=node.incarnation,
            epoch=node.epoch,
            drained=node.drained,
            stopping=bool(link and link.stopping),
            last_heartbeat_age=(now - link.last_seen) if link and link.peer is not None else None,
            executors=counts,
        )

    def node_views(self, now: float) -> list[Node]:
        views = [self.node_view(name, now) for name in sorted(self.ctl.state.nodes)]
        return [v for v in views if v is not None]
