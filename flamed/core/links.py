"""Executor-manager links: the connection table, heartbeats, fencing, cleanup (DESIGN 5).

One `NodeLink` (node_link.py) per node name holds the volatile side of a connection: routing
id, epoch, sequence numbers, liveness and drain deadlines. Its state follows the connection
table (Connected / Draining / Closed; Closed links are discarded) and drives the node table
(Ready / Unknown / NotReady), which is durable. `NodeLinks` owns the link table and routes node
messages: a registration is decided in `registration`, the reports of a current link are
applied in `executor_reports`; this module keeps the link table, the outgoing frames and the
timers. Every entry point takes the turn of the input it serves; outside a turn the links are
read through narrow views (`readiness`, `node_view`, `link`, `registered_as`).

Rules that keep a stale peer from corrupting state:
- every registration gets a new epoch; a message whose epoch is not the link's current one, or
  that leaves a gap in the sequence, is refused with `Error(Reregister)`;
- a node silent for `heartbeat_interval * heartbeat_liveness` goes Unknown and its drain timer
  starts; when it runs out the node is cleaned up and its executors are lost (tasks retried);
- nobody is judged right after the session manager itself did not run (stalls.py): it first
  listens for as long as a node may be silent;
- commands for a node that is not Connected are dropped: the snapshot at its next
  registration carries the desired state;
- who may speak for a node is decided in `identity` (its executor manager's secret, its CURVE
  key): a message refused there is answered `Error(Unauthorized)` and counted, and changes
  nothing; a link whose key is revoked goes silent at once (node Unknown, drain started);
- a link's connection changes only through the connection table (`NodeLink.move`); a turn
  that is rolled back (its records could not be made durable) puts back the link objects of
  the last durable turn (`checkpoint` / `restore`): the rollback is not a move of the
  connection (the node did nothing), it is the core forgetting a turn that never happened.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import assert_never

from flamed.core import identity, registration, views
from flamed.core import records as r
from flamed.core.config import CoreConfig
from flamed.core.executor_reports import apply_reports, lose_executor
from flamed.core.machines.connection import ConnectionTrigger
from flamed.core.node_link import DrainOrder, LinkOrder, LinksCheckpoint, LinkView, NodeLink, Readiness
from flamed.core.refusals import RefusalLog
from flamed.core.stalls import Stalls
from flamed.core.state import ClusterState
from flamed.core.turn import Turn
from protocol import backend as be
from protocol.errors import ErrorCode
from protocol.types import ConnectionState, Node, NodeState

log = logging.getLogger("flamed.session_manager")

#: Messages on a registered link (everything a node sends but its registration).
LinkMessage = be.Heartbeat | be.Reports | be.Goodbye

#: Recovery counters, in `GetStats` as `<name>_total` from the start (zero until they move).
# Links are judged and sent heartbeats this many times per heartbeat interval (see NodeLinks).
SCANS_PER_INTERVAL = 10

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
    def __init__(self, config: CoreConfig) -> None:
        self.config = config
        self._links: dict[str, NodeLink] = {}
        self._by_peer: dict[bytes, NodeLink] = {}
        # The links as they were at the last checkpoint, kept when they first change after it
        # (None: there was no link of that name). See `checkpoint`.
        self._undo: dict[str, tuple[NodeLink, NodeLink] | None] = {}
        # Links are judged (silence, drains) and sent heartbeats in a scan every
        # heartbeat_interval / SCANS_PER_INTERVAL; between scans a turn touches only the links
        # that have commands to send (`_due`), so a turn costs what it does, not the cluster's size.
        # A scan reads only the links it may act on: the Connected ones oldest heard first
        # (`_heard`) or oldest sent to first (`_quiet`), up to the first that is recent enough,
        # and the Draining ones whose drain ran out (`_draining`, by deadline).
        self._next_scan = 0.0
        self._next_judgement = 0.0
        self._due: set[str] = set()
        self._heard = LinkOrder()
        self._quiet = LinkOrder()
        self._draining = DrainOrder()
        # When the daemon last read every node message waiting (`heard_all`): silence is judged
        # as of then, so that a heartbeat still waiting in the socket behind a long backlog
        # (10,000 nodes registering at once) never makes its node Unknown.
        self._heard_all = -math.inf
        self._stalls = Stalls(config.heartbeat_interval, self._silence_limit)
        self._refusals = RefusalLog()

    @property
    def _silence_limit(self) -> float:
        return self.config.heartbeat_interval * self.config.heartbeat_liveness

    @property
    def restart_drain(self) -> float:
        """The drain a node loaded at a restart gets: `drain_timeout`, or more if a live executor
        manager may take longer to be back: it notices the silence (detection), then retries its
        connection and registration at most `reconnect_backoff_max` apart. A shorter drain would
        write off a node that did nothing wrong and run its tasks twice."""
        return max(self.config.drain_timeout, self.config.reconnect_backoff_max + self._silence_limit)

    @property
    def _restart_drain_why(self) -> str:
        if self.restart_drain <= self.config.drain_timeout:
            return ""
        return (
            f" (drain_timeout {self.config.drain_timeout:.1f}s raised to cover a reconnect: backoff at most "
            f"{self.config.reconnect_backoff_max:.1f}s after {self._silence_limit:.1f}s of detection)"
        )

    # ------------------------------------------------------------------ start-up and rollback

    def after_restart(self, turn: Turn) -> None:
        """After a restart: every node not cleaned up is Unknown with its drain timer started
        now (R8), so a node that never returns is cleaned up and its tasks retried."""
        now, drain = turn.now, self.restart_drain
        for node in turn.state.nodes.values():
            if node.state is NodeState.NotReady:
                continue
            if node.state is NodeState.Ready:
                turn.commit(r.NodeChanged(time=now.wall, name=node.name, trigger="silent", reason="restart"))
            self._keep(node.name)
            link = NodeLink(node.name, None, node.incarnation, node.epoch, now.mono)
            link.move(ConnectionTrigger.silence)  # not heard since the restart
            link.drain_deadline = now.mono + drain
            self._links[node.name] = link
            self._draining.add(link)
            log.info("node %s: Unknown after restart; drain timer %.1fs%s", node.name, drain, self._restart_drain_why)

    def checkpoint(self) -> LinksCheckpoint:
        """The link table as it is now (call after every durable turn). Taken after every turn,
        it copies nothing: from now on each link is copied the first time it changes (`_keep`),
        so a turn costs what it touches, not the size of the cluster (a copy of every link per
        turn was 38% of an idle session manager's CPU with 1,000 nodes heartbeating)."""
        self._undo = {}
        return LinksCheckpoint(self._undo)

    def _keep(self, name: str) -> None:
        """Before the link of `name` changes, appears or goes: keep it as at the checkpoint.
        Fields that `restore` takes from the live link anyway need no keeping (`flush`)."""
        if name not in self._undo:
            link = self._links.get(name)
            self._undo[name] = None if link is None else (link, link.copy())

    def restore(self, checkpoint: LinksCheckpoint) -> None:
        """Forget the links' part of a turn that did not become durable: links made during it
        go, links closed during it come back, and each link is again the object it was at
        `checkpoint` (its connection, drain deadline, routing id, receive sequence and ack), so
        the executor manager's next message shows a gap and it registers again. What stays true
        whatever the disk says is kept from the live link: when its node was last heard, what
        was sent or queued for it (send sequence and time, commands), and whether its executor
        manager said it is stopping. A link that was only sent heartbeats in the turn is not
        kept at all (a heartbeat changes nothing durable): its receive sequence stays as the
        heartbeat left it. A checkpoint is restored at most once."""
        assert checkpoint.undo is self._undo, "only the latest checkpoint can be restored"
        for name, before in checkpoint.undo.items():
            self._links.pop(name, None)
            if before is None:
                continue
            live, link = before
            link.last_seen = live.last_seen
            link.send_seq = live.send_seq
            link.last_sent = live.last_sent
            link.commands = live.commands
            link.stopping = live.stopping
            self._links[name] = link
        self._by_peer = {link.peer: link for link in self._links.values() if link.peer is not None}
        self._undo = {}
        connected = [link for link in self._links.values() if link.connection is ConnectionState.Connected]
        self._heard = LinkOrder(
            (link.name, link.last_seen) for link in sorted(connected, key=lambda link: link.last_seen)
        )
        with_peer = [link for link in connected if link.peer is not None]
        self._quiet = LinkOrder(
            (link.name, link.last_sent) for link in sorted(with_peer, key=lambda link: link.last_sent)
        )
        draining = (link for link in self._links.values() if link.connection is ConnectionState.Draining)
        self._draining = DrainOrder(draining)

    # ------------------------------------------------------------------ messages

    def handle(self, turn: Turn, peer: bytes, message: be.NodeMessage, sender: identity.Sender) -> None:
        """Apply one message from `peer`; `sender` is who the transport proved it to be."""
        match message:
            case be.RegisterNode():
                self._register(turn, peer, message, sender)
            case be.Heartbeat() | be.Reports() | be.Goodbye():
                link = self._accepted(turn, peer, message, sender)
                if link is not None:
                    self._on_link(turn, link, message)
            case _:
                assert_never(message)

    def _accepted(self, turn: Turn, peer: bytes, message: LinkMessage, sender: identity.Sender) -> NodeLink | None:
        """The current link `message` came on, once it passed the link's checks (key, epoch,
        sequence); None when it was refused (answered and counted) or taken as the goodbye of
        a link loaded at a restart."""
        link = self._by_peer.get(peer)
        if link is not None and (mismatch := identity.link_key_refusal(link.name, link.key, sender)):
            why = f"refused {type(message).__name__}: {mismatch}"
            self._refuse_identity(turn, peer, "node_key_mismatches", why)
            return None
        if link is None or message.epoch != link.epoch or link.connection is not ConnectionState.Connected:
            if isinstance(message, be.Goodbye) and self._restored_goodbye(turn, peer, message, sender):
                return None
            turn.count("stale_node_messages")
            self._refuse(turn, peer, ErrorCode.Reregister, f"registration epoch {message.epoch} is not current")
            return None
        if message.seq != link.recv_seq + 1:
            turn.count("node_message_gaps")
            self._refuse(turn, peer, ErrorCode.Reregister, f"expected seq {link.recv_seq + 1}, got {message.seq}")
            return None
        if not isinstance(message, be.Heartbeat):  # see `restore`: a heartbeat needs no undo
            self._keep(link.name)  # for its receive sequence, and its ack in _on_link
        link.recv_seq = message.seq
        link.last_seen = turn.now.mono
        self._heard.touch(link.name, link.last_seen)
        return link

    def _on_link(self, turn: Turn, link: NodeLink, message: LinkMessage) -> None:
        match message:
            case be.Heartbeat():
                turn.count("heartbeats")
                if message.stopping and not link.stopping:
                    link.stopping = True
                    log.info(
                        "node %s: stopping (its executor manager is draining): no new executors or tasks", link.name
                    )
                    turn.schedule_soon()  # its idle executors go, binds go elsewhere
            case be.Reports():
                turn.count("node_messages")
                apply_reports(turn, link.name, message.reports)
                link.ack = message.seq
            case be.Goodbye():
                turn.count("node_messages")
                log.info("node %s: goodbye (executor manager stopping)", link.name)
                self._close(turn, link, ConnectionTrigger.goodbye, "executor manager stopped")
            case _:
                assert_never(message)

    def _restored_goodbye(self, turn: Turn, peer: bytes, goodbye: be.Goodbye, sender: identity.Sender) -> bool:
        """Take a goodbye for a link loaded at a restart and not registered since (such a node
        would otherwise wait for its drain to expire): same incarnation (random, per process)
        and epoch, from that very process (its secret, and with CURVE the node's key). True if
        the goodbye was handled (taken, or refused as a forgery)."""
        if not goodbye.incarnation:
            return False
        restored = next(
            (
                link
                for link in self._links.values()
                if link.peer is None
                and link.incarnation == goodbye.incarnation
                and link.epoch == goodbye.epoch
                and link.connection is ConnectionState.Draining
            ),
            None,
        )
        if restored is None:
            return False
        node = turn.state.nodes.get(restored.name)
        mismatch = identity.key_refusal(restored.name, sender)
        if mismatch or not identity.same_process(node, goodbye.incarnation, goodbye.secret):
            counter = "node_key_mismatches" if mismatch else "node_impersonations_refused"
            why = mismatch or "it does not carry that executor manager's secret"
            self._refuse_identity(turn, peer, counter, f"refused a goodbye for node {restored.name!r}: {why}")
            return True
        log.info("node %s: goodbye after a restart (executor manager stopping)", restored.name)
        self._close(turn, restored, ConnectionTrigger.goodbye, "executor manager stopped")
        return True

    @staticmethod
    def _refuse(turn: Turn, peer: bytes, code: ErrorCode, message: str) -> None:
        turn.push_node(peer, be.Error(code=code, message=message))

    def _refuse_identity(self, turn: Turn, peer: bytes, counter: str, message: str) -> None:
        """A message that may not speak for the node it names: answered and counted, each one;
        logged rate-limited (refusals.py: a flood of forgeries must not fill the disk)."""
        turn.count(counter)
        self._refuse(turn, peer, ErrorCode.Unauthorized, message)
        unlogged = self._refusals.due(counter, turn.now.mono)
        if unlogged is not None:
            more = f" ({unlogged} more refused since the last such line)" if unlogged else ""
            log.warning("backend: peer %r: %s%s", peer[:32], message, more)

    def _register(self, turn: Turn, peer: bytes, message: be.RegisterNode, sender: identity.Sender) -> None:
        name = message.node.name
        state, now = turn.state, turn.now
        link = self._links.get(name)
        current = self._by_peer.get(peer)
        if current is not None and current.name != name:
            why = f"refused RegisterNode for node {name!r}: this connection is registered as node {current.name!r}"
            self._refuse_identity(turn, peer, "node_impersonations_refused", why)
            return
        if refused := registration.refusal(turn, message, link, sender):
            if refused.identity_counter:
                self._refuse_identity(turn, peer, refused.identity_counter, refused.message)
            else:
                self._refuse(turn, peer, refused.code, refused.message)
            return
        # Only the executor manager that holds the node keeps its executors (identity.py).
        same = identity.same_process(state.nodes.get(name), message.incarnation, message.secret)
        if message.executors and not same:
            log.info("node %s: a new executor manager (incarnation %s) keeps nothing", name, message.incarnation)
        epoch = state.max_epoch + 1
        if name in state.nodes:
            turn.count("reregistrations")
        turn.commit(
            r.NodeRegistered(
                time=now.wall,
                info=message.node,
                incarnation=message.incarnation,
                epoch=epoch,
                secret_hash=identity.secret_hash(message.secret),
            )
        )
        kept = registration.reconcile(turn, name, set(message.executors) if same else set())
        self._keep(name)
        if link is not None:
            if link.peer is not None:
                self._by_peer.pop(link.peer, None)
            if link.connection is not ConnectionState.Closed:
                link.move(ConnectionTrigger.register)
        link = NodeLink(name, peer, message.incarnation, epoch, now.mono)
        link.stopping = message.stopping
        link.features = frozenset(message.features)
        link.key = sender.key
        self._links[name] = link
        self._by_peer[peer] = link
        self._heard.touch(name, link.last_seen)
        self._quiet.touch(name, link.last_sent)
        self._draining.discard(name)
        turn.count("registrations")
        log.info("node %s: Ready (epoch %d, %d executors kept)", name, epoch, len(kept))
        turn.push_node(peer, registration.registered(turn, epoch, kept))
        turn.schedule_soon()
        for executor in kept:  # Ready again: its Bound executors can take work again
            if executor.session_id is not None:
                turn.session_changed(executor.session_id)

    # ------------------------------------------------------------------ commands

    def send(self, node: str, command: be.ExecutorCommand) -> None:
        """Queue a command for the node's next `Commands` frame; dropped if it is not
        Connected (the snapshot at its next registration carries the desired state)."""
        link = self._links.get(node)
        if link is not None and link.connection is ConnectionState.Connected:
            if isinstance(command, be.RemoveApplication) and "remove-application" not in link.features:
                return  # an older executor manager would drop the whole frame
            link.commands.append(command)
            self._due.add(node)

    @property
    def _scan_period(self) -> float:
        return self.config.heartbeat_interval / SCANS_PER_INTERVAL

    def flush(self, turn: Turn) -> None:
        """End of a loop turn: each Connected link's queued commands in one `Commands` frame,
        or a heartbeat when nothing was sent to it for a heartbeat interval (looked for in a scan,
        so it may go up to a scan period late)."""
        interval = self.config.heartbeat_interval
        now = turn.now.mono
        table = self._links
        names: Iterable[str] = self._due
        if now >= self._next_scan:
            self._next_scan = now + self._scan_period
            quiet = self._quiet.older(now, interval)
            names = [*quiet, *self._due]  # one twice is harmless: sent once, then recent
        self._due = set()
        for name in names:
            link = table.get(name)
            if link is None:
                continue
            if link.connection is not ConnectionState.Connected or link.peer is None:
                link.commands.clear()
                continue
            message: be.Message
            if link.commands:
                link.send_seq += 1
                message = be.Commands(epoch=link.epoch, seq=link.send_seq, ack=link.ack, commands=link.commands)
                link.commands = []
            elif now - link.last_sent >= interval:
                link.send_seq += 1
                message = be.Heartbeat(epoch=link.epoch, seq=link.send_seq, ack=link.ack)
            else:
                continue
            link.last_sent = now
            self._quiet.touch(name, now)
            turn.push_node(link.peer, message)

    # ------------------------------------------------------------------ timers

    def heard_all(self, now: float) -> None:
        """The daemon read every node message that was waiting at `now`."""
        self._heard_all = now

    def tick(self, turn: Turn) -> None:
        """Judge the links (once a scan period): silent ones go Unknown, drains that ran out
        are cleaned up. Silence is judged as of the last time every waiting node message was
        read (`heard_all`): after a loop turn of seconds (a batch of a million tasks) the
        heartbeats of that time wait in the socket, and a judgement as of now would make
        every node Unknown. As of now only when the daemon never said (tests), or said it
        longer than `drain_timeout` ago: a backend that never empties must not keep a dead
        node Ready for ever."""
        now = turn.now.mono
        stalled = self._stalls.tick(now)
        if stalled is not None:
            if stalled:
                turn.count("session_manager_stalls")
                why = (
                    "session manager: no turn for %.1fs (paused or overloaded); listening %.1fs before judging any node"
                )
                log.warning(why, stalled, self._silence_limit)
            return
        if now < self._next_judgement:
            return
        self._next_judgement = now + self._scan_period
        links, limit = self._links, self._silence_limit
        heard = self._heard_all if now - self._heard_all <= self.config.drain_timeout else now
        for name in self._heard.older(heard, limit, strictly=True):
            link = links[name]
            self._silence(turn, link, f"no message for {now - link.last_seen:.1f}s")
        for name in self._draining.expired(now, links):
            self._close(turn, links[name], ConnectionTrigger.drain_expired, "drain timeout expired")

    def _silence(self, turn: Turn, link: NodeLink, reason: str) -> None:
        """The node is no longer heard (or may no longer be): Unknown, its drain timer started."""
        self._keep(link.name)
        link.move(ConnectionTrigger.silence)
        link.drain_deadline = turn.now.mono + self.config.drain_timeout
        self._heard.discard(link.name)
        self._quiet.discard(link.name)
        self._draining.add(link)
        turn.count("nodes_silent")
        turn.commit(r.NodeChanged(time=turn.now.wall, name=link.name, trigger="silent", reason=reason))
        log.warning("node %s: Unknown (%s); cleanup in %.1fs", link.name, reason, self.config.drain_timeout)

    def revoke_keys(self, turn: Turn, allowed: Callable[[str, str], bool]) -> None:
        """The allow-list changed: every Connected link whose key `allowed(key, node)` no longer
        admits goes silent now (no more commands to it; cleaned up when its drain runs out, or
        kept if it registers again within it with an allowed key)."""
        for link in list(self._links.values()):
            if link.key and link.connection is ConnectionState.Connected and not allowed(link.key, link.name):
                self._silence(turn, link, "its key was revoked")

    def _close(self, turn: Turn, link: NodeLink, trigger: ConnectionTrigger, reason: str) -> None:
        self._keep(link.name)
        link.move(trigger)
        del self._links[link.name]
        self._heard.discard(link.name)
        self._quiet.discard(link.name)
        self._draining.discard(link.name)
        if link.peer is not None:
            self._by_peer.pop(link.peer, None)
        turn.count("node_cleanups")
        for executor in [e for e in turn.state.executors.values() if e.node == link.name]:
            lose_executor(turn, executor, f"node {link.name} cleaned up: {reason}")
        node = turn.state.nodes.get(link.name)
        if node is not None and node.state is not NodeState.NotReady:
            turn.commit(r.NodeChanged(time=turn.now.wall, name=link.name, trigger="cleaned_up", reason=reason))
        # A goodbye is an orderly stop; a drain that ran out is a node lost.
        level = logging.INFO if trigger is ConnectionTrigger.goodbye else logging.WARNING
        log.log(level, "node %s: NotReady (%s); its executors released", link.name, reason)
        turn.schedule_soon()

    def next_deadline(self) -> float:
        """The next scan while there are links (every silence, drain and heartbeat to send is
        found by one), else only the stall watch's."""
        stalls = self._stalls.next_deadline(watching=bool(self._links))
        if not self._links:
            return stalls
        return min(stalls, max(self._next_scan, self._next_judgement))

    # ------------------------------------------------------------------ views

    def readiness(self, state: ClusterState) -> Readiness:
        """Which nodes may get new work, as `state` and the links say now."""
        return Readiness(self._links, state.nodes)

    def link(self, name: str) -> LinkView | None:
        """The current link of node `name`, read-only (None: none)."""
        return self._links.get(name)

    def registered_as(self, peer: bytes) -> identity.Sender | None:
        """The node (and CURVE key) `peer` registered as; None if it has no current link."""
        link = self._by_peer.get(peer)
        return identity.Sender(link.key, link.name) if link is not None else None

    def node_view(self, state: ClusterState, name: str, now: float) -> Node | None:
        return views.node_view(state, name, self._links.get(name), now)

    def node_views(self, state: ClusterState, now: float) -> list[Node]:
        found = [self.node_view(state, name, now) for name in sorted(state.nodes)]
        return [v for v in found if v is not None]

    def link_mark(self, name: str) -> tuple[object, ...]:
        """What of node `name`'s link changes without a record (cluster subscriptions compare
        these to find nodes to push again)."""
        link = self._links.get(name)
        return (link.connection if link else None, link and link.peer is None, link and link.stopping)

    def heartbeat_ages(self, now: float) -> dict[str, float]:
        """Seconds since each registered node was last heard."""
        return {name: now - link.last_seen for name, link in self._links.items() if link.peer is not None}
