"""Executor-manager links: the connection table, heartbeats, fencing, cleanup (DESIGN 5).

One `NodeLink` per node name holds the volatile side of a connection: routing id, epoch,
sequence numbers, liveness and drain deadlines. Its state follows the connection table
(Connected / Draining / Closed; Closed links are discarded) and drives the node table
(Ready / Unknown / NotReady), which is durable. `NodeLinks` routes node messages: a
registration is decided in `registration`, the reports of a current link are applied in
`executor_reports`; this module keeps the link table, the outgoing frames and the timers.

Rules that keep a stale peer from corrupting state:
- every registration gets a new epoch; a message whose epoch is not the link's current one, or
  that leaves a gap in the sequence, is refused with `Error(Reregister)`;
- a node silent for `heartbeat_interval * heartbeat_liveness` goes Unknown and its drain timer
  starts; when it runs out the node is cleaned up and its executors are lost (tasks retried);
- nobody is judged right after the session manager itself did not run: ticks come at least
  every heartbeat interval, so a longer gap means it was paused (or one turn was very long),
  and what the nodes sent meanwhile waits unread, perhaps not even taken from the kernel yet.
  It then listens for as long as a node may be silent before judging silence or drains (once:
  the tick that ends the listening judges even if it is late too, so an overloaded session
  manager still finds dead nodes);
- commands for a node that is not Connected are dropped: the snapshot at its next
  registration carries the desired state;
- who may speak for a node is decided in `identity` (its executor manager's secret, its CURVE
  key): a message refused there is answered `Error(Unauthorized)` and counted, and changes
  nothing; a link whose key is revoked goes silent at once (node Unknown, drain started).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from flamed.core import identity, registration
from flamed.core import records as r
from flamed.core.executor_reports import apply_reports, lose_executor
from flamed.core.machines.connection import CONNECTION, ConnectionTrigger
from protocol import backend as be
from protocol.errors import ErrorCode
from protocol.types import ConnectionState, Node, NodeState, ResourceRequirement

if TYPE_CHECKING:
    from flamed.core.controller import Controller
    from flamed.core.turn import Now

log = logging.getLogger("flamed.session_manager")


class NodeLink:
    __slots__ = (
        "ack",
        "commands",
        "connection",
        "drain_deadline",
        "epoch",
        "features",
        "incarnation",
        "key",
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
        #: optional commands its executor manager understands (`RegisterNode.features`)
        self.features: frozenset[str] = frozenset()
        #: CURVE: the key (Z85) that registered it; every message of the link must carry it
        self.key = ""


#: Seconds between two log lines about one kind of identity refusal (each one is counted).
REFUSAL_LOG_INTERVAL = 1.0

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
    "session_manager_stalls",
    "registrations_superseded",
    "node_impersonations_refused",
    "node_key_mismatches",
    "unauthorized_node_messages",
)


class NodeLinks:
    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.links: dict[str, NodeLink] = {}
        self.by_peer: dict[bytes, NodeLink] = {}
        for name in RECOVERY_COUNTERS:
            ctl.counters.setdefault(name, 0)
        self._last_tick: float | None = None
        #: after a stall: no judging until then (see the module rules)
        self._listen_until: float | None = None
        #: identity refusals: when each counter may be logged again, and how many were not
        self._refusal_log_at: dict[str, float] = {}
        self._refusals_unlogged: dict[str, int] = {}

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

    def handle(self, peer: bytes, message: be.NodeMessage, now: Now, sender: identity.Sender = identity.PLAIN) -> None:
        """Apply one message from `peer`; `sender` is who the transport proved it to be."""
        if isinstance(message, be.RegisterNode):
            self._register(peer, message, now, sender)
            return
        link = self.by_peer.get(peer)
        if link is not None and (mismatch := identity.link_key_refusal(link.name, link.key, sender)):
            why = f"refused {type(message).__name__}: {mismatch}"
            self._refuse_identity(peer, "node_key_mismatches", why, now)
            return
        if link is None or message.epoch != link.epoch or link.connection is not ConnectionState.Connected:
            if isinstance(message, be.Goodbye) and self._restored_goodbye(peer, message, sender, now):
                return
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
            apply_reports(self.ctl, link, message.reports, now)
            link.ack = message.seq
        elif isinstance(message, be.Heartbeat) and message.stopping and not link.stopping:
            link.stopping = True
            log.info("node %s: stopping (its executor manager is draining): no new executors or tasks", link.name)
            self.ctl.dispatcher.schedule_soon()  # its idle executors go, binds go elsewhere
        elif isinstance(message, be.Goodbye):
            log.info("node %s: goodbye (executor manager stopping)", link.name)
            self._close(link, ConnectionTrigger.goodbye, "executor manager stopped", now)

    def _restored_goodbye(self, peer: bytes, goodbye: be.Goodbye, sender: identity.Sender, now: Now) -> bool:
        """Take a goodbye for a link loaded at a restart and not registered since (such a node
        would otherwise wait for its drain to expire): same incarnation (random, per process)
        and epoch, from that very process (its secret, and with CURVE the node's key). True if
        the goodbye was handled (taken, or refused as a forgery)."""
        if not goodbye.incarnation:
            return False
        restored = next(
            (
                link
                for link in self.links.values()
                if link.peer is None
                and link.incarnation == goodbye.incarnation
                and link.epoch == goodbye.epoch
                and link.connection is ConnectionState.Draining
            ),
            None,
        )
        if restored is None:
            return False
        node = self.ctl.state.nodes.get(restored.name)
        mismatch = identity.key_refusal(restored.name, sender)
        if mismatch or not identity.same_process(node, goodbye.incarnation, goodbye.secret):
            counter = "node_key_mismatches" if mismatch else "node_impersonations_refused"
            why = mismatch or "it does not carry that executor manager's secret"
            self._refuse_identity(peer, counter, f"refused a goodbye for node {restored.name!r}: {why}", now)
            return True
        log.info("node %s: goodbye after a restart (executor manager stopping)", restored.name)
        self._close(restored, ConnectionTrigger.goodbye, "executor manager stopped", now)
        return True

    def _refuse(self, peer: bytes, code: ErrorCode, message: str) -> None:
        self.ctl.outbox.node_messages.append((peer, be.Error(code=code, message=message)))

    def _refuse_identity(self, peer: bytes, counter: str, message: str, now: Now) -> None:
        """A message that may not speak for the node it names: answered and counted, each one;
        logged at most once per `REFUSAL_LOG_INTERVAL` for each counter (a flood of forgeries
        must not fill the disk), with how many went unlogged since."""
        self.ctl.counters[counter] += 1
        self._refuse(peer, ErrorCode.Unauthorized, message)
        if now.mono < self._refusal_log_at.get(counter, float("-inf")):
            self._refusals_unlogged[counter] = self._refusals_unlogged.get(counter, 0) + 1
            return
        unlogged = self._refusals_unlogged.pop(counter, 0)
        more = f" ({unlogged} more refused since the last such line)" if unlogged else ""
        log.warning("backend: peer %r: %s%s", peer[:32], message, more)
        self._refusal_log_at[counter] = now.mono + REFUSAL_LOG_INTERVAL

    def _register(self, peer: bytes, message: be.RegisterNode, now: Now, sender: identity.Sender) -> None:
        name = message.node.name
        link = self.links.get(name)
        current = self.by_peer.get(peer)
        if current is not None and current.name != name:
            why = f"refused RegisterNode for node {name!r}: this connection is registered as node {current.name!r}"
            self._refuse_identity(peer, "node_impersonations_refused", why, now)
            return
        if refused := registration.refusal(self.ctl, message, link, sender, now):
            if refused.identity_counter:
                self._refuse_identity(peer, refused.identity_counter, refused.message, now)
            else:
                self._refuse(peer, refused.code, refused.message)
            return
        # Only the executor manager that holds the node keeps its executors (identity.py).
        same = identity.same_process(self.ctl.state.nodes.get(name), message.incarnation, message.secret)
        if message.executors and not same:
            log.info("node %s: a new executor manager (incarnation %s) keeps nothing", name, message.incarnation)
        epoch = self.ctl.state.max_epoch + 1
        if name in self.ctl.state.nodes:
            self.ctl.counters["reregistrations"] += 1
        self.ctl.commit(
            r.NodeRegistered(
                time=now.wall,
                info=message.node,
                incarnation=message.incarnation,
                epoch=epoch,
                secret_hash=identity.secret_hash(message.secret),
            )
        )
        kept = registration.reconcile(self.ctl, name, set(message.executors) if same else set(), now)
        if link is not None:
            if link.peer is not None:
                self.by_peer.pop(link.peer, None)
            if link.connection is not ConnectionState.Closed:
                link.connection = CONNECTION.next(link.connection, ConnectionTrigger.register)
        link = NodeLink(name, peer, message.incarnation, epoch, now.mono)
        link.stopping = message.stopping
        link.features = frozenset(message.features)
        link.key = sender.key
        self.links[name] = link
        self.by_peer[peer] = link
        self.ctl.counters["registrations"] += 1
        log.info("node %s: Ready (epoch %d, %d executors kept)", name, epoch, len(kept))
        self.ctl.outbox.node_messages.append((peer, registration.registered(self.ctl, epoch, kept)))
        self.ctl.dispatcher.schedule_soon()
        for executor in kept:  # Ready again: its Bound executors can take work again
            if executor.session_id is not None:
                self.ctl.dispatcher.dirty.add(executor.session_id)

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
        stalled = 0.0 if self._last_tick is None else now.mono - self._last_tick
        self._last_tick = now.mono
        if self._listen_until is not None:
            if now.mono < self._listen_until:
                return
            self._listen_until = None  # listened: judge now, even if this tick was late too
        elif stalled > self._stall_limit:
            self._listen(stalled, now.mono)
            return
        for link in list(self.links.values()):
            if link.connection is ConnectionState.Connected and now.mono - link.last_seen > self._silence_limit:
                self._silence(link, f"no message for {now.mono - link.last_seen:.1f}s", now)
            elif (
                link.connection is ConnectionState.Draining
                and link.drain_deadline is not None
                and now.mono >= link.drain_deadline
            ):
                self._close(link, ConnectionTrigger.drain_expired, "drain timeout expired", now)

    def _silence(self, link: NodeLink, reason: str, now: Now) -> None:
        """The node is no longer heard (or may no longer be): Unknown, its drain timer started."""
        link.connection = CONNECTION.next(link.connection, ConnectionTrigger.silence)
        link.drain_deadline = now.mono + self.ctl.config.drain_timeout
        self.ctl.counters["nodes_silent"] += 1
        self.ctl.commit(r.NodeChanged(time=now.wall, name=link.name, trigger="silent", reason=reason))
        log.warning("node %s: Unknown (%s); cleanup in %.1fs", link.name, reason, self.ctl.config.drain_timeout)

    def revoke_keys(self, allowed: Callable[[str, str], bool], now: Now) -> None:
        """The allow-list changed: every Connected link whose key `allowed(key, node)` no longer
        admits goes silent now (no more commands to it; cleaned up when its drain runs out, or
        kept if it registers again within it with an allowed key)."""
        for link in list(self.links.values()):
            if link.key and link.connection is ConnectionState.Connected and not allowed(link.key, link.name):
                self._silence(link, "its key was revoked", now)

    @property
    def _stall_limit(self) -> float:
        # Ticks come at least every heartbeat interval while there are links (heartbeats fall
        # due); twice that, and at least a second, is a gap no busy turn explains.
        return max(1.0, 2 * self.ctl.config.heartbeat_interval)

    def _listen(self, stalled: float, now: float) -> None:
        """This process did not run for `stalled` seconds: hear the nodes out before judging."""
        self.ctl.counters["session_manager_stalls"] += 1
        self._listen_until = now + self._silence_limit  # as long as any node may be silent
        log.warning(
            "session manager: no turn for %.1fs (paused or overloaded); listening %.1fs before judging any node",
            stalled,
            self._silence_limit,
        )

    def _close(self, link: NodeLink, trigger: ConnectionTrigger, reason: str, now: Now) -> None:
        link.connection = CONNECTION.next(link.connection, trigger)
        del self.links[link.name]
        if link.peer is not None:
            self.by_peer.pop(link.peer, None)
        self.ctl.counters["node_cleanups"] += 1
        for executor in [e for e in self.ctl.state.executors.values() if e.node == link.name]:
            lose_executor(self.ctl, executor, f"node {link.name} cleaned up: {reason}", now)
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
        if self.links and self._last_tick is not None:
            deadlines.append(self._last_tick + interval)  # the tick rhythm a stall is told by
        if self._listen_until is not None:
            deadlines.append(self._listen_until)
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

    def supports(self, node: str, feature: str) -> bool:
        link = self.links.get(node)
        return link is not None and feature in link.features

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
