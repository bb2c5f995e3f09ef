"""The session-manager daemon: receive -> core -> persist -> send.

One loop owns the frontend ROUTER (clients) and the backend ROUTER (executor managers). Each
turn it drains both sockets (backend first, so heartbeats are never queued behind client
traffic; each within a slice of time, the frontend also between chunks of node messages, so
that a saturated backend does not starve clients: `turns.py`), feeds every decoded message to
the `Controller`, and at the end of the turn flushes: the records the turn produced are
appended to the log and committed with one fsync (group commit), and only then are the
replies, pushes and node messages sent. A frame that does not decode is answered with a typed
error and counted; it never stops the loop.

Clients that do not read (`outflow.py`): the frontend queues few messages per connection in
ZeroMQ (`limits.client_send_hwm`); past that a connection's messages wait in a bounded backlog
here, retried every turn and on a short timer, and the controller is told the connection's
flow, so that it stops building pushes (and then replies to reads) for it. Each request names
its client for the per-client limits: the CURVE key's name, or in plain mode the connection.

Durability (DESIGN 6): with a `Storage` the state is rebuilt from it before anything is served
(`durability.py`); each turn is committed, snapshotted and kept fsynced on time by the
`Journal` (`journal.py`). When a commit fails, the turn is rolled back (`rollback.py`): memory
is re-read from disk and the requests that wanted a change are answered `StorageUnavailable`;
reads keep being served. Without a `Storage` (tests) the state lives in memory only.
"""

from __future__ import annotations

import itertools
import logging
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from flamed import __version__
from flamed.config import Config, is_local_endpoint
from flamed.core.config import CoreConfig
from flamed.core.controller import Controller
from flamed.core.identity import PLAIN, Sender
from flamed.core.turn import Now, Outbox
from flamed.notify import Notifier
from flamed.session_manager.apps import DEFAULT_APPLICATIONS
from flamed.session_manager.collector import Collector
from flamed.session_manager.durability import Recovered, recover_state
from flamed.session_manager.journal import Journal
from flamed.session_manager.keys import KeyChecks
from flamed.session_manager.outflow import Outflow
from flamed.session_manager.rollback import TurnGuard
from flamed.session_manager.turns import BACKEND_CHUNK, BACKEND_SLICE, FRONTEND_SLICE, TurnBudget, sliced
from flamed.storage import Storage
from flamed.transport import (
    Loop,
    SignalInbox,
    Timer,
    bind_router,
    close,
    context,
    drain,
    drain_with_user,
    readable,
    security,
    try_send,
)
from flamed.transport.dropped import DroppedFrames
from flamed.transport.refusal_log import REFUSAL_WINDOW
from protocol import backend as be
from protocol import codec
from protocol import frontend as fe
from protocol.codec import FrameError
from protocol.resources import parse_resreq

log = logging.getLogger("flamed.session_manager")

#: Messages that are pushes, not replies: they always join a congested client's backlog.
PUSHES = (fe.TaskUpdates, fe.ClusterUpdates, fe.ClusterSnapshot)
#: Seconds between tries of the client backlogs, doubling while nothing moves.
RETRY_MIN, RETRY_MAX = 0.002, 0.25


@dataclass
class SessionManagerOptions:
    config: Config
    frontend: str
    backend: str
    state_dir: Path | None = None
    #: the config file to re-read on SIGHUP (None: built-in defaults, nothing to reload)
    config_path: str | None = None
    #: log level and format given on the command line (they win over the file on reload)
    log_level: str | None = None
    log_format: str | None = None
    #: the object cache's endpoint handed to clients and nodes (None: config cache.endpoint)
    cache_endpoint: str | None = None


def core_config(config: Config, cache_endpoint: str | None = None) -> CoreConfig:
    return CoreConfig(
        default_resreq=parse_resreq(config.cluster.resreq),
        heartbeat_interval=config.recovery.heartbeat_interval,
        heartbeat_liveness=config.recovery.heartbeat_liveness,
        drain_timeout=config.recovery.drain_timeout,
        reconnect_backoff_max=config.recovery.reconnect_backoff_max,
        task_retry_limit=config.recovery.task_retry_limit,
        session_bind_retry_limit=config.recovery.session_bind_retry_limit,
        schedule_interval=config.cluster.schedule_interval,
        policies=tuple(config.cluster.policies),
        dispatch_depth=config.cluster.dispatch_depth,
        rebalance_after=config.cluster.rebalance_after,
        max_sessions=config.limits.max_sessions,
        max_tasks=config.limits.max_tasks,
        max_tasks_per_session=config.limits.max_tasks_per_session,
        max_task_input_size=config.limits.max_task_input_size,
        max_task_output_size=config.limits.max_task_output_size,
        max_common_data_size=config.limits.max_common_data_size,
        max_watches_per_client=config.limits.max_watches_per_client,
        max_watch_task_ids=config.limits.max_watch_task_ids,
        max_watched_tasks_per_client=config.limits.max_watched_tasks_per_client,
        max_watched_tasks=config.limits.max_watched_tasks,
        max_subscribers=config.limits.max_subscribers,
        max_subscriptions_per_client=config.limits.max_subscriptions_per_client,
        max_page_tasks=config.limits.max_page_tasks,
        max_page_bytes=config.limits.max_page_bytes,
        closed_session_ttl=config.retention.closed_session_ttl,
        max_finished_tasks=config.retention.max_finished_tasks,
        idle_session_ttl=config.retention.idle_session_ttl,
        retention_interval=config.retention.check_interval,
        cluster_name=config.cluster.name,
        cache_endpoint=cache_endpoint or config.cache.endpoint,
        server_version=__version__,
    )


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class SessionManager:
    def __init__(self, options: SessionManagerOptions, storage: Storage | None = None) -> None:
        """Rebuilds the state from `storage` (which the manager then owns and closes) before
        binding the sockets; raises `StorageError` if it cannot be read."""
        self.options = options
        self.loop = Loop()
        self.recovered: Recovered | None = None
        self.notifier = Notifier()
        state = None
        if storage is not None:
            self.notifier.status(f"replaying the log in {storage.state_dir}")
            state, self.recovered = recover_state(storage)
        self.controller = Controller(core_config(options.config, options.cache_endpoint), state)
        self.controller.storage_stats = self.storage_stats
        self.guard = TurnGuard(self.controller)
        self.journal = Journal(self.loop, self.controller, self.guard, storage, self.recovered)
        self._encoder = msgspec.msgpack.Encoder()
        self._client_codec = codec.client_request_codec()
        self._node_codec = codec.node_message_codec()
        self._bad_frames = DroppedFrames(self.loop, log)  # counted by the controller; logged sparingly
        max_size = options.config.limits.max_message_size
        # CURVE (security.py): the ZAP handler must exist before the sockets that consult it.
        sec = options.config.security
        front_curve = security.server_curve(sec, security.CLIENTS)
        back_curve = security.server_curve(sec, security.NODES)
        self.zap = security.zap_handler(context(), sec)
        self.keys = KeyChecks(self.zap) if self.zap is not None else None
        # Frontend handover: a client that reconnects with its routing id (after ZMTP heartbeats
        # gave up on the old connection, e.g. while this process was paused) must get its id
        # back at once; without it libzmq ignores the newcomer for as long as it stays
        # connected. Client ids are random and never shown to anyone.
        # Backend, no handover: whoever connects with a node's id would take the node's traffic
        # (DESIGN 6a). An executor manager opens a new connection with a new random id each
        # time it registers again, and drops a connection only when it decides to (no ZMTP TTL
        # from here), so it never comes back under an id this socket may still hold.
        try:
            self.frontend = bind_router(
                options.frontend,
                max_size,
                handover=True,
                curve=front_curve,
                sndhwm=options.config.limits.client_send_hwm,
                rcvhwm=options.config.limits.receive_hwm,
            )
        except BaseException:
            if self.zap is not None:
                self.zap.close()
            raise
        try:
            self.backend = bind_router(
                options.backend, max_size, curve=back_curve, zmtp_pings=False, rcvhwm=options.config.limits.receive_hwm
            )
        except BaseException:
            close(self.frontend)
            if self.zap is not None:
                self.zap.close()
            raise
        self.outflow = Outflow(
            lambda frames: try_send(self.frontend, frames),
            options.config.limits.max_queued_bytes_per_client,
            self.controller.counters,
        )
        #: frontend peers served this turn, whose replies wait for its end
        self._waiting: set[bytes] = set()
        #: node messages and client requests served per turn, however many times each socket
        #: is read within it (turns.py)
        self._backend_budget = TurnBudget(BACKEND_SLICE)
        self._frontend_budget = TurnBudget(FRONTEND_SLICE)
        #: the loop turn whose frontend is closed (past its budget, see `_on_frontend`)
        self._frontend_closed = -1
        #: a request read within the flush, where only Pings are answered: served first next turn
        self._held: tuple[str, list[bytes]] | None = None
        self._retry_timer: Timer | None = None
        self._retry_delay = RETRY_MIN
        self._tick_timer = self.loop.call_at(0.0, self._tick)
        #: short garbage-collector pauses (collector.py); from `start`
        self.collector: Collector | None = None
        self.signals = SignalInbox(self.loop, self._on_signal)

    @property
    def storage(self) -> Storage | None:
        """The storage the journal writes to (None: in memory only, or closed)."""
        return self.journal.storage

    @storage.setter
    def storage(self, storage: Storage | None) -> None:
        self.journal.storage = storage

    def now(self) -> Now:
        return Now(mono=self.loop.now(), wall=wall_ms())

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Restore node links, register default apps, start serving (state is already loaded)."""
        now = self.now()
        self.controller.start(now)
        for name, spec in DEFAULT_APPLICATIONS.items():
            self.controller.register_default_application(name, spec, now)
        if self.zap is not None:
            self.loop.add_reader(self.zap.sock, self.zap.on_readable)
            self.loop.call_every(REFUSAL_WINDOW / 5, self.zap.flush_refusals)  # counts of a flood that stopped
        self.loop.add_reader(self.backend, self._on_backend)
        self.loop.add_reader(self.frontend, self._on_frontend)
        self.loop.add_turn_end(self._flush)
        self.collector = Collector(self.loop.now())
        self.loop.add_turn_end(self._collector_turn_end)
        self._flush()
        # Ready only now: the state is replayed, the sockets are bound, the first turn is durable.
        self.notifier.ready(self.status_line())
        if self.notifier.enabled:
            self.loop.call_every(self.notifier.alive_every(), lambda: self.notifier.alive(self.status_line()))

    def _collector_turn_end(self) -> None:
        if self.collector is not None:
            self.collector.turn_end(self.loop.now())

    def status_line(self) -> str:
        """One line for `systemctl status`: what the session manager is doing."""
        stats = self.controller.stats()
        return (
            f"serving; {int(stats.get('nodes_ready', 0))} nodes ready, "
            f"{int(stats.get('executors_bound', 0))} executors bound, "
            f"{int(stats.get('tasks_pending', 0))} tasks pending, {int(stats.get('tasks_running', 0))} running"
        )

    def install_signal_handlers(self) -> None:
        self.signals.install((signal.SIGTERM, signal.SIGINT, signal.SIGHUP))

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            self._reload()
        else:
            log.info("stopping on signal")
            self.notifier.stopping("stopping: writing a snapshot")
            self.loop.stop()

    def _reload(self) -> None:
        """SIGHUP: re-read the config file and apply what can change while running (the log
        level and format). Endpoints, storage and recovery timings need a restart."""
        from flamed.config import ConfigError, load_config
        from flamed.logs import setup_logging

        self.notifier.send(RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000)
        try:
            config = load_config(self.options.config_path)
        except ConfigError as exc:
            log.error("reload: %s; keeping the running config", exc)
        else:
            level = self.options.log_level or config.log.level
            setup_logging(level, self.options.log_format or config.log.format)
            log.info("reload: log level %s; other keys take effect at the next restart", level)
        if self.zap is not None:
            self.zap.reload()
            self._keys_changed(clients=True, nodes=True)
        self.notifier.ready(self.status_line())

    def run(self) -> int:
        log.info("session manager ready: frontend %s, backend %s", self.options.frontend, self.options.backend)
        self.warn_if_open()
        try:
            self.loop.run()
        finally:
            self.close()
        return 0

    def warn_if_open(self) -> None:
        """Plain mode on an address other hosts can reach: anyone there can submit tasks,
        which is code execution on every node (ZEROMQ.md 4.4). Loud, but not refused."""
        if self.options.config.security.curve:
            log.info("security: CURVE on; clients and nodes need keys in the allow-lists")
            return
        for name, endpoint in (("frontend", self.options.frontend), ("backend", self.options.backend)):
            if not is_local_endpoint(endpoint):
                log.warning(
                    "SECURITY WARNING: %s %s is reachable from other hosts WITHOUT authentication or "
                    "encryption: anyone who can connect can run code on every node. Turn on "
                    "[security] curve (docs/operations.md, Security) or bind a loopback address.",
                    name,
                    endpoint,
                )

    def close(self) -> None:
        if self.collector is not None:
            self.collector.close()
            self.collector = None
        self.signals.close()
        self.notifier.close()
        close(self.frontend)
        close(self.backend)
        if self.zap is not None:
            self.zap.close()
        self.journal.close()

    # ------------------------------------------------------------------ receive

    def _check_keys(self) -> None:
        """CURVE: take changes of the allow-lists on disk into account (once per loop turn)."""
        if self.keys is not None:
            clients, nodes = self.keys.refresh(self.loop.turns)
            if clients or nodes:
                self._keys_changed(clients=clients, nodes=nodes)

    def _keys_changed(self, *, clients: bool, nodes: bool) -> None:
        """Revocations take effect at once: nodes whose key went go silent, clients whose key
        went lose their watches and subscriptions (keys.py)."""
        assert self.keys is not None
        if nodes:
            self.controller.keys_changed(self.keys.node_key_allowed, self.now())
        if clients:
            for peer in self.keys.revoked_clients():
                self.controller.forget_peer(peer)

    def _on_backend(self) -> None:
        budget = self._backend_budget
        if not budget.begin(self.loop.turns):
            return  # this turn handled its share of node messages: the rest next turn
        self._check_keys()
        now = self.now()
        ctl = self.controller
        keys = self.keys
        received = drain_with_user(self.backend) if keys is not None else (("", f) for f in drain(self.backend))
        between = self._frontend_between_chunks
        for chunk in sliced(received, budget, BACKEND_CHUNK, ctl.counters, "backend_turns_cut", between=between):
            messages: list[tuple[bytes, be.NodeMessage]] = []
            senders: list[Sender] = []
            for user, frames in chunk:
                peer = frames[0]
                sender = PLAIN
                if keys is not None:
                    # ZAP admitted the key at the handshake; the allow-list decides for each message.
                    found = keys.node_sender(user)
                    if found is None:
                        ctl.reject_unauthorized_node(peer, "this key is not (or no longer) in the nodes allow-list")
                        continue
                    sender = found
                try:
                    message = self._node_codec.decode(frames[1:])
                except FrameError as exc:
                    self._bad_frames.log("backend", exc.message, peer)
                    ctl.reject_node_frame(peer, exc.code, exc.message)
                    continue
                messages.append((peer, message))
                senders.append(sender)
            ctl.handle_nodes(messages, now, senders)
        if not readable(self.backend):  # nothing left unread: silences may be judged as of now
            ctl.backend_drained(self.now())

    def _frontend_between_chunks(self) -> None:
        """Between two chunks of node messages: serve the clients that are waiting (turns.py)."""
        if self._held is not None or readable(self.frontend):
            self._on_frontend()

    def _on_frontend(self) -> None:
        """Serve client requests within the turn's budget (turns.py). Past it, the socket is
        still read for Pings (answered at once: nothing to build, nothing to make durable) up
        to the first other request, which is served too (a client's requests keep their order)
        and closes the frontend for the turn: at most one request more than the budget."""
        turn = self.loop.turns
        if self._frontend_closed == turn:
            return  # this turn served its share of requests: the rest after its replies
        budget = self._frontend_budget
        budget.begin(turn)
        self._check_keys()
        now = self.now()
        ctl = self.controller
        held, self._held = self._held, None
        received = itertools.chain((held,) if held is not None else (), self._received())
        for user, frames in received:
            past_budget = budget.spent
            answered_at_once = self._serve(user, frames, now)
            if past_budget:
                if not answered_at_once:
                    self._frontend_closed = turn  # the rest next turn, after this turn's replies
                    return
            elif budget.over():
                ctl.counters["frontend_turns_cut"] += 1

    def _received(self) -> Iterator[tuple[str, list[bytes]]]:
        """The frontend's requests waiting in the socket, each with the client's name for the
        per-client limits: with CURVE its key (however many connections it opens), else ""
        (the connection)."""
        if self.keys is not None:
            return drain_with_user(self.frontend, limit=2000)
        return (("", frames) for frames in drain(self.frontend, limit=2000))

    def _answer_pings(self) -> None:
        """Within the flush, between its steps: answer the Pings that came meanwhile (a Pong
        says nothing that the turn's records make true, see `Controller.answer_at_once`). The
        first other request read is kept and served first next turn; reading stops there."""
        if self._held is not None or not readable(self.frontend):
            return
        now = self.now()
        for user, frames in self._received():
            if not self._pong(user, frames, now):
                self._held = (user, frames)
                self.loop.call_at(0.0, self._on_frontend)  # next turn, even if nothing else wakes it
                return

    def _pong(self, user: str, frames: list[bytes], now: Now) -> bool:
        """Answer a Ping at once; False (nothing done) for anything else, or for a Ping that
        must wait (its client has replies waiting for the turn's end)."""
        peer = frames[0]
        if peer in self._waiting or (self.keys is not None and not self.keys.client_allowed(peer, user)):
            return False
        try:
            request = self._client_codec.decode(frames[1:])
        except FrameError:
            return False  # answered next turn
        answer = self.controller.answer_at_once(peer, request, now, b"key:" + user.encode() if user else peer)
        if answer is None:
            return False
        self.outflow.send(peer, [peer, codec.HEADER, self._encoder.encode(answer)], push=False)
        return True

    def _serve(self, user: str, frames: list[bytes], now: Now) -> bool:
        """Serve one request; True if it was a Ping answered at once."""
        ctl = self.controller
        peer = frames[0]
        client = b"key:" + user.encode() if user else peer
        if self.keys is not None and not self.keys.client_allowed(peer, user):
            request_id = codec.peek_request_id(frames[1:])
            ctl.reject_unauthorized_client(peer, "this key is not (or no longer) allowed", request_id, now)
            return False
        try:
            request = self._client_codec.decode(frames[1:])
        except FrameError as exc:
            self._bad_frames.log("frontend", exc.message, peer)
            ctl.reject_client_frame(peer, exc.code, exc.message, codec.peek_request_id(frames[1:]), now)
            return False
        # A Ping is answered at once, unless this peer has replies waiting for the turn's end
        # (its answers stay in the order of its requests).
        answer = None if peer in self._waiting else ctl.answer_at_once(peer, request, now, client)
        if answer is not None:
            self.outflow.send(peer, [peer, codec.HEADER, self._encoder.encode(answer)], push=False)
            return True
        self._waiting.add(peer)
        changed = ctl.handle_client(peer, request, now, client)
        self.guard.request_handled(peer, request, changed=changed)
        return False

    def _tick(self) -> None:
        # Read what executor managers sent before judging their silence: a busy loop must never
        # mark a node Unknown whose heartbeat is already waiting in the socket.
        if readable(self.backend):
            self._on_backend()  # says whether it read the backend empty
        else:  # nothing unread: silences may be judged as of now
            self.controller.backend_drained(self.now())
        self._check_keys()
        self.controller.tick(self.now())

    # ------------------------------------------------------------------ flush

    def _flush(self) -> None:
        ctl = self.controller
        now = self.now()
        flushed = ctl.flush(now)
        for peer in flushed.forgotten:  # taken first: a rolled-back turn keeps only replies
            self.outflow.forget(peer)
        self._answer_pings()  # those that came during the dispatch
        outbox = self.journal.commit(flushed, now)
        self._answer_pings()  # during the fsync (not yet those whose clients' replies wait: `_waiting`)
        self._send(outbox)
        self._waiting.clear()
        self.journal.after_commit()
        deadline = ctl.next_deadline()
        if deadline != self._tick_timer.when or self._tick_timer.cancelled:
            self._tick_timer.cancel()
            self._tick_timer = self.loop.call_at(deadline, self._tick)

    def storage_stats(self) -> dict[str, float | int | str]:
        """Facts about the state directory for `GetStats` (empty without storage)."""
        return self.journal.stats()

    def _send(self, outbox: Outbox) -> None:
        header = codec.HEADER
        encode = self._encoder.encode
        keys, registered_as = self.keys, self.controller.registered_as
        for peer, node_message in outbox.node_messages:
            # CURVE: a node's traffic goes only to the connection of the key that registered it,
            # and only while that key may still speak for the node (a refusal still says why).
            node = registered_as(peer) if keys is not None and not isinstance(node_message, be.Error) else None
            if node is not None and keys is not None and not keys.node_key_allowed(node.key, node.name):
                continue
            if not try_send(self.backend, [peer, header, encode(node_message)]):
                log.debug("backend: peer %r unreachable", peer[:32])
        outflow = self.outflow
        if outflow:
            outflow.retry()  # what waits goes before anything new
        for peer, reply in outbox.replies:
            outflow.send(peer, [peer, header, encode(reply)], push=isinstance(reply, PUSHES))
        self._report_flow()

    def _retry_backlogs(self) -> None:
        """Timer: try the client backlogs again; back off while nothing moves."""
        self._retry_timer = None
        moved = self.outflow.retry()
        self._retry_delay = RETRY_MIN if moved else min(RETRY_MAX, self._retry_delay * 2)
        self._report_flow()

    def _report_flow(self) -> None:
        """Tell the controller which clients' flow changed; keep the retry timer while any
        client has a backlog."""
        for peer, flow in self.outflow.take_changes().items():
            self.controller.peer_flow(peer, flow)
        if not self.outflow:
            self._retry_delay = RETRY_MIN
            if self._retry_timer is not None:
                self._retry_timer.cancel()
                self._retry_timer = None
        elif self._retry_timer is None:
            self._retry_timer = self.loop.call_later(self._retry_delay, self._retry_backlogs)
