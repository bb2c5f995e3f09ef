"""The session manager's decisions: client requests, node messages, timers -> effects.

`Controller` is pure (DESIGN 2): no sockets, no files, no clock. The daemon calls
`handle_client`, `handle_nodes` and `tick` with the time, then `flush` once per loop turn, which
returns an `Outbox`: records to make durable, then replies and node messages to send. The
daemon must send nothing of an outbox before its records are durable (the durability point).

The controller owns the state and the parts, and routes; the decisions live in the parts:
client requests in `session_requests` and `cluster_requests`, node messages and timers in
`links` (with `registration` and `executor_reports`), dispatching and scheduling in `dispatch`,
pushes in `watches` and `subscriptions`, who each frontend peer is in `clients`. For every input
it builds a `Turn` (turn.py), the one object the parts share: they never hold the controller
nor reach through it into each other. Every change goes through `Turn.commit(record)`, which
tells the observers, applies the record and queues it for the log. Client errors are answered
with typed `Error` replies and never change state.

Clients (`clients`): each request names the client it speaks for (a CURVE key, or the
connection in plain mode), which the per-client limits count. The daemon reports each peer's
flow (`peer_flow`): nothing but replies is built for a peer that does not read, and not even
replies to its reads once its backlog is full; a peer is forgotten (watches, subscriptions,
and the daemon's backlog: `Outbox.forgotten`) only after `client_ttl` of silence.

Rollback: when a turn's records cannot be made durable, the daemon restores what the
controller owns to its last `checkpoint` (`restore`) and rewrites the turn's replies.
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import assert_never

from flamed.core import records as r
from flamed.core.clients import Clients, Flow
from flamed.core.cluster_requests import ClusterRequests
from flamed.core.config import CoreConfig
from flamed.core.dispatch import Dispatcher
from flamed.core.identity import PLAIN, Sender
from flamed.core.links import RECOVERY_COUNTERS, NodeLinks
from flamed.core.node_link import LinksCheckpoint, LinkView
from flamed.core.requests import READS, RequestError
from flamed.core.retention import Retention
from flamed.core.session_requests import SessionRequests
from flamed.core.state import ClusterState
from flamed.core.subscriptions import Subscriptions
from flamed.core.turn import Now, Outbox, RecordObserver, Turn
from flamed.core.watches import Watches
from protocol import backend as be
from protocol import frontend as fe
from protocol.errors import ErrorCode
from protocol.types import ApplicationSpec, Node, SessionState


def new_executor_id() -> str:
    return secrets.token_hex(5)


@dataclass(frozen=True)
class Checkpoint:
    """What the controller must put back when a turn is rolled back (see `restore`)."""

    links: LinksCheckpoint


class Controller:
    def __init__(
        self,
        config: CoreConfig,
        state: ClusterState | None = None,
        new_id: Callable[[], str] = new_executor_id,
    ) -> None:
        self.config = config
        self.state = state or ClusterState()
        self.new_id = new_id
        self.outbox = Outbox()
        self.counters: collections.Counter[str] = collections.Counter()
        shown = ("sessions_expired", "tasks_expired", "frontend_turns_cut", "backend_turns_cut")
        for name in (*RECOVERY_COUNTERS, *shown):
            self.counters.setdefault(name, 0)
        # The parts, each the one owner of what it holds.
        self.clients = Clients(config.client_ttl)
        self.watches = Watches(config.max_page_tasks, config.max_page_bytes)
        self.subscriptions = Subscriptions()
        self.links = NodeLinks(config)
        self.dispatcher = Dispatcher(config, self.state, new_id)
        self.session_requests = SessionRequests(self.watches)
        self.cluster_requests = ClusterRequests(self.links, self.subscriptions)
        self.retention = Retention(config.retention_interval)
        #: told of every record before it is applied (`Turn.commit`)
        self._observers: list[RecordObserver] = [self.subscriptions, self.session_requests, self.watches]
        #: When the daemon started serving (`start`), for `uptime_seconds` in `GetStats`.
        self.started: Now | None = None
        #: Facts about durable storage for `GetStats` (set by the daemon): numbers go to
        #: `stats`, strings to `info`, each key prefixed with `storage_`.
        self.storage_stats: Callable[[], dict[str, float | int | str]] | None = None

    def _turn(self, now: Now) -> Turn:
        return Turn(
            state=self.state,
            config=self.config,
            now=now,
            outbox=self.outbox,
            counters=self.counters,
            observers=self._observers,
            dispatch=self.dispatcher,
            nodes=self.links,
        )

    # ------------------------------------------------------------------ start-up

    def start(self, now: Now) -> None:
        """Serving starts at `now` (uptime counts from it); the nodes of a loaded state wait
        for their executor managers: Unknown, their drain timer started (R8)."""
        self.started = now
        self.links.after_restart(self._turn(now))

    def register_default_application(self, name: str, spec: ApplicationSpec, now: Now) -> None:
        """At start: register a shipped application, or refresh it if its spec changed."""
        self.session_requests.register_default_application(self._turn(now), name, spec)

    def commit(self, record: r.AnyRecord) -> None:
        """Apply a change outside any input (tools, tests), as `Turn.commit` does."""
        for observer in self._observers:
            observer.note(record, self.state)
        self.state.apply(record)
        self.outbox.records.append(record)

    def observe(self, observer: RecordObserver) -> None:
        """Tell `observer` too of every record, before it is applied (tests check invariants
        at the moment of each change this way)."""
        self._observers.append(observer)

    # ------------------------------------------------------------------ clients

    def handle_client(self, peer: bytes, request: fe.ClientRequest, now: Now, client: bytes = b"") -> bool:
        """Serve one request of `peer`, speaking for `client` (its CURVE key; by default the
        peer itself: plain mode). True when it changed state (committed a record)."""
        self.counters["client_requests"] += 1
        client = client or self.clients.client_of(peer)
        self.clients.seen(peer, client, now.mono)
        if type(request) in READS and self.clients.full(peer):
            # It does not read what it is sent: building the answer would only be thrown away.
            self.counters["client_reads_unanswered"] += 1
            return False
        records = len(self.outbox.records)
        turn = self._turn(now)
        try:
            reply = self._route(turn, peer, client, request)
        except RequestError as exc:
            self.counters["client_errors"] += 1
            reply = fe.Error(code=exc.code, message=exc.message)
        if reply is not None:
            reply.request_id = request.request_id
            turn.reply(peer, reply)
        return len(self.outbox.records) != records

    def answer_at_once(
        self, peer: bytes, request: fe.ClientRequest, now: Now, client: bytes = b""
    ) -> fe.Message | None:
        """The answer to `request` when it may go before the turn ends, else None (serve it with
        `handle_client`). Only a `Ping` may: it reads no state, so nothing it says waits for
        the turn's records to be durable, and a client's liveness probe does not wait behind
        a turn of other clients' batches and nodes' results. It counts as heard from `peer`
        (its watches and subscriptions are renewed) like any request."""
        if type(request) is not fe.Ping or self.clients.full(peer):
            return None
        self.counters["client_requests"] += 1
        self.counters["client_answers_at_once"] += 1
        self.clients.seen(peer, client or self.clients.client_of(peer), now.mono)
        return fe.Pong(request_id=request.request_id)

    def _route(self, turn: Turn, peer: bytes, client: bytes, request: fe.ClientRequest) -> fe.Message | None:
        """The reply to `request` (None: it comes later, as a push). One case per request
        type, so mypy checks that every type of `ClientRequest` is served."""
        sessions, cluster = self.session_requests, self.cluster_requests
        match request:
            case fe.CreateTasks():
                return sessions.create_tasks(turn, peer, client, request)
            case fe.WatchTasks():
                sessions.watch_tasks(turn, peer, client, request)
                return None  # its first TaskUpdates push is the reply
            case fe.GetTask():
                return sessions.get_task(turn, request)
            case fe.ListTasks():
                return sessions.list_tasks(turn, request)
            case fe.CreateSession():
                return sessions.create_session(turn, request)
            case fe.OpenSession():
                return sessions.open_session(turn, request)
            case fe.GetSession():
                return sessions.get_session(turn, request)
            case fe.ListSessions():
                return sessions.list_sessions(turn)
            case fe.CloseSession():
                return sessions.close_session(turn, request)
            case fe.DeleteSession():
                return sessions.delete_session(turn, request)
            case fe.RegisterApplication():
                return sessions.register_application(turn, request)
            case fe.UpdateApplication():
                return sessions.update_application(turn, request)
            case fe.UnregisterApplication():
                return sessions.unregister_application(turn, request)
            case fe.GetApplication():
                return sessions.get_application(turn, request)
            case fe.ListApplications():
                return sessions.list_applications(turn)
            case fe.Hello():
                return cluster.hello(turn, request)
            case fe.Ping():
                return fe.Pong()
            case fe.ListNodes():
                return cluster.list_nodes(turn)
            case fe.GetNode():
                return cluster.get_node(turn, request)
            case fe.DrainNode():
                return cluster.set_drained(turn, request.name, drained=True)
            case fe.UndrainNode():
                return cluster.set_drained(turn, request.name, drained=False)
            case fe.ListExecutors():
                return cluster.list_executors(turn)
            case fe.GetExecutor():
                return cluster.get_executor(turn, request)
            case fe.GetStats():
                storage = self.storage_stats() if self.storage_stats is not None else {}
                return cluster.get_stats(turn, self.stats(), self.started, storage)
            case fe.SubscribeCluster():
                cluster.subscribe_cluster(turn, peer, client, request)
                return None  # the ClusterSnapshot goes out with the turn's pushes
            case fe.UnsubscribeCluster():
                return cluster.unsubscribe_cluster(peer)
            case fe.CheckSessions():
                return cluster.check_sessions(turn, request)
            case _:
                assert_never(request)

    def reject_client_frame(
        self, peer: bytes, code: ErrorCode, message: str, request_id: int = 0, now: Now | None = None
    ) -> None:
        """A frontend frame that did not decode: answer it (echoing its request id when it could
        be read) and count it. With `now` the peer counts as heard from, so that it is forgotten
        (with what waits for it) once silent, like any client."""
        self.counters["bad_client_frames"] += 1
        if now is not None:
            self.clients.seen(peer, self.clients.client_of(peer), now.mono)
        self.outbox.replies.append((peer, fe.Error(code=code, message=message, request_id=request_id)))

    def reject_unauthorized_client(
        self, peer: bytes, message: str, request_id: int = 0, now: Now | None = None
    ) -> None:
        """A frontend request whose key the allow-list no longer admits: refused, counted. With
        `now` the peer counts as heard from (forgotten once silent, with what waits for it)."""
        self.counters["unauthorized_requests"] += 1
        if now is not None:
            self.clients.seen(peer, self.clients.client_of(peer), now.mono)
        error = fe.Error(code=ErrorCode.Unauthorized, message=message, request_id=request_id)
        self.outbox.replies.append((peer, error))

    def forget_peer(self, peer: bytes) -> None:
        """Forget `peer` at once (its key was revoked): its watches, its subscription, and
        (`Outbox.forgotten`) what the daemon keeps queued for it."""
        self.watches.drop_peer(peer)
        self.subscriptions.remove(peer)
        self.clients.forget(peer)
        self.outbox.forgotten.append(peer)

    def peer_flow(self, peer: bytes, flow: Flow) -> None:
        """The daemon's word on `peer`'s outgoing queue (see `clients`). Its watches and
        subscriptions are kept whatever the flow; pushes resume once it is clear again."""
        self.clients.set_flow(peer, flow)

    # ------------------------------------------------------------------ nodes

    def handle_node(self, peer: bytes, message: be.NodeMessage, now: Now, sender: Sender = PLAIN) -> None:
        self.links.handle(self._turn(now), peer, message, sender)

    def handle_nodes(
        self, messages: list[tuple[bytes, be.NodeMessage]], now: Now, senders: Sequence[Sender] | None = None
    ) -> None:
        """One read of the backend, in order; `senders[i]` is who sent message i (CURVE; plain
        mode without). A registration followed in the same read by another from the same peer
        is superseded (tries queued while this session manager was paused) and skipped: the
        executor manager gets one epoch and one snapshot, not one per try. What it sent in
        between belongs to an older epoch and is refused either way."""
        last: dict[bytes, int] = {}
        for i, (peer, message) in enumerate(messages):
            if isinstance(message, be.RegisterNode):
                last[peer] = i
        turn = self._turn(now)
        for i, (peer, message) in enumerate(messages):
            if isinstance(message, be.RegisterNode) and last[peer] != i:
                turn.count("registrations_superseded")
                continue
            self.links.handle(turn, peer, message, senders[i] if senders is not None else PLAIN)

    def backend_drained(self, now: Now) -> None:
        """The daemon read every node message waiting at `now` (see `NodeLinks.heard_all`)."""
        self.links.heard_all(now.mono)

    def reject_node_frame(self, peer: bytes, code: ErrorCode, message: str) -> None:
        self.counters["bad_node_frames"] += 1
        self.outbox.node_messages.append((peer, be.Error(code=code, message=message)))

    def reject_unauthorized_node(self, peer: bytes, message: str) -> None:
        """A backend message whose key the allow-list no longer admits: refused, counted."""
        self.counters["unauthorized_node_messages"] += 1
        self.outbox.node_messages.append((peer, be.Error(code=ErrorCode.Unauthorized, message=message)))

    def keys_changed(self, allowed: Callable[[str, str], bool], now: Now) -> None:
        """CURVE: the nodes' allow-list changed; `allowed(key, node)` says whether a key may
        still speak for a node. Nodes whose key it no longer admits go silent at once."""
        self.links.revoke_keys(self._turn(now), allowed)

    # ------------------------------------------------------------------ timers and the end of a turn

    def tick(self, now: Now) -> None:
        """Timers: node liveness and drains, silent clients, periodic scheduling, retention."""
        self.links.tick(self._turn(now))
        self.retention.tick(self._turn(now))
        for peer in self.clients.expire(now.mono):
            self.watches.drop_peer(peer)
            self.subscriptions.remove(peer)
            self.outbox.forgotten.append(peer)
        self.dispatcher.tick(now.mono)

    def next_deadline(self) -> float:
        return min(
            self.links.next_deadline(),
            self.dispatcher.next_deadline(),
            self.subscriptions.next_deadline(self.clients.congested),
            self.clients.next_deadline(),
            self.retention.next_deadline(),
            0.0 if self.watches.more else float("inf"),  # pages due for a reading peer: now
        )

    def flush(self, now: Now) -> Outbox:
        """End of a loop turn: dispatch and schedule, then hand over everything to do."""
        turn = self._turn(now)
        self.dispatcher.run(turn, self.links.readiness(self.state))
        self.watches.collect(self.state)
        self.links.flush(turn)
        outbox, self.outbox = self.outbox, Outbox()
        congested = self.clients.congested
        outbox.replies.extend(self.watches.take_pushes(self.state, congested))
        outbox.replies.extend(self.subscriptions.collect(turn, self.links, self.stats, congested))
        return outbox

    # ------------------------------------------------------------------ rollback

    def checkpoint(self) -> Checkpoint:
        """What `restore` needs to forget a turn: call after every durable turn."""
        return Checkpoint(links=self.links.checkpoint())

    def restore(self, checkpoint: Checkpoint, state: ClusterState, ended_watches: set[tuple[bytes, int]]) -> None:
        """Forget a turn whose records could not be made durable: `state` (re-read from disk)
        replaces the state, the dispatcher's indexes are rebuilt from it, the links are as at
        `checkpoint`, and the watches named in `ended_watches` (peer, request id) end, with
        those of sessions that are gone. Nothing of the turn's outbox is kept but its replies,
        which the daemon rewrites."""
        self.state = state
        self.dispatcher = Dispatcher(self.config, state, self.new_id)
        self.links.restore(checkpoint.links)
        self.watches.end(ended_watches, state.sessions)

    def take_replies(self) -> list[tuple[bytes, fe.Message]]:
        """The replies built since the last flush, taken out of the outbox."""
        replies, self.outbox.replies = self.outbox.replies, []
        return replies

    # ------------------------------------------------------------------ views

    def link(self, name: str) -> LinkView | None:
        """The current link of node `name`, read-only (None: none)."""
        return self.links.link(name)

    def registered_as(self, peer: bytes) -> Sender | None:
        """The node (and CURVE key) backend peer `peer` registered as; None if none."""
        return self.links.registered_as(peer)

    def node_view(self, name: str, now: float) -> Node | None:
        """What clients see of node `name` (None: no such node)."""
        return self.links.node_view(self.state, name, now)

    def node_ready(self, name: str) -> bool:
        """Whether node `name` may get new executors and tasks (Ready, link Connected)."""
        return self.links.readiness(self.state).is_ready(name)

    def stats(self) -> dict[str, float]:
        stats: dict[str, float] = {f"{k}_total": float(v) for k, v in self.counters.items()}
        # Task and session totals come from the durable state, not from this process: they go
        # on across restarts (docs/operations.md says which counters reset).
        stats.update({k: float(v) for k, v in self.state.totals().items()})
        task_counts: collections.Counter[str] = collections.Counter()
        for session in self.state.sessions.values():
            for task_state, count in session.counts.items():
                task_counts[task_state] += count
        stats.update({f"tasks_{k.lower()}": float(v) for k, v in task_counts.items()})
        executor_counts = collections.Counter(e.state for e in self.state.executors.values())
        stats.update({f"executors_{k.lower()}": float(v) for k, v in executor_counts.items()})
        node_counts = collections.Counter(n.state for n in self.state.nodes.values())
        stats.update({f"nodes_{k.lower()}": float(v) for k, v in node_counts.items()})
        stats["sessions"] = float(len(self.state.sessions))
        stats["tasks_held"] = float(sum(s.held for s in self.state.sessions.values()))
        stats["finished_tasks_held"] = float(self.state.finished_held)
        stats["expired_sessions_remembered"] = float(len(self.state.expired_sessions))
        open_sessions = sum(1 for s in self.state.sessions.values() if s.state is SessionState.Open)
        stats["sessions_open"] = float(open_sessions)
        stats["sessions_closed"] = float(len(self.state.sessions) - open_sessions)
        stats["watches"] = float(len(self.watches))
        stats["watched_tasks"] = float(self.watches.total_watched)
        stats["subscriptions"] = float(len(self.subscriptions))
        stats["client_peers"] = float(len(self.clients))
        stats["client_peers_congested"] = float(len(self.clients.flow))
        return stats
