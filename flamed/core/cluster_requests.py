"""Client requests on the cluster: the connection, nodes, executors, stats, cluster subscriptions.

Rules: a client speaking another protocol version is refused at `Hello`; draining a node only
cordons it (no new executors or binds there) and is idempotent: no record when nothing changes;
cluster subscriptions are capped per client (so one key cannot lock every dashboard out) and
in all; everything else here only reads.

Each request is served on the turn of its input (`turn.py`), by the method the controller's
route names for its type. Nodes are seen through the node links' views (`NodeViews`), and the
statistics are the controller's, handed in with the request.
"""

from __future__ import annotations

import logging

from flamed.core import records as r
from flamed.core.requests import RequestError
from flamed.core.subscriptions import Subscriptions
from flamed.core.turn import Now, Turn
from flamed.core.views import NodeViews, executor_view
from protocol import frontend as fe
from protocol.codec import PROTOCOL_VERSION
from protocol.errors import ErrorCode

log = logging.getLogger("flamed.session_manager")

#: Most session ids one `CheckSessions` may name.
MAX_CHECKED_SESSIONS = 10_000


class ClusterRequests:
    def __init__(self, nodes: NodeViews, subscriptions: Subscriptions) -> None:
        self.nodes = nodes
        self.subscriptions = subscriptions

    @staticmethod
    def hello(turn: Turn, request: fe.Hello) -> fe.Message:
        if request.protocol_version != PROTOCOL_VERSION:
            raise RequestError(
                ErrorCode.VersionMismatch,
                f"client speaks protocol {request.protocol_version}, this session manager {PROTOCOL_VERSION}",
            )
        config = turn.config
        return fe.Welcome(
            protocol_version=PROTOCOL_VERSION,
            server_version=config.server_version,
            cluster=config.cluster_name,
            cache_endpoint=config.cache_endpoint,
            max_watches_per_client=config.max_watches_per_client,
        )

    @staticmethod
    def check_sessions(turn: Turn, request: fe.CheckSessions) -> fe.Message:
        """Which of these sessions exist (the object cache finds deleted sessions' objects)."""
        if len(request.session_ids) > MAX_CHECKED_SESSIONS:
            raise RequestError(
                ErrorCode.InvalidArgument,
                f"CheckSessions names {len(request.session_ids)} sessions; at most {MAX_CHECKED_SESSIONS}",
            )
        sessions = turn.state.sessions
        found = {s: sessions[s].spec.application for s in request.session_ids if s in sessions}
        return fe.SessionsChecked(sessions=found)

    def subscribe_cluster(self, turn: Turn, peer: bytes, client: bytes, request: fe.SubscribeCluster) -> None:
        """Subscribe (or renew `peer`'s subscription); the `ClusterSnapshot` reply goes out
        with the turn's pushes."""
        config, subscriptions = turn.config, self.subscriptions
        existing = subscriptions.subscribers.get(peer)
        if existing is None or existing.client != client:
            if subscriptions.count_of(client) >= config.max_subscriptions_per_client:
                raise RequestError(
                    ErrorCode.LimitExceeded,
                    f"this client has {config.max_subscriptions_per_client} cluster subscriptions "
                    "(limits.max_subscriptions_per_client); close a dashboard first",
                )
            if len(subscriptions) >= config.max_subscribers:
                raise RequestError(
                    ErrorCode.LimitExceeded,
                    f"{config.max_subscribers} clients are subscribed to the cluster (limits.max_subscribers)",
                )
        subscriptions.add(peer, client, request)

    def unsubscribe_cluster(self, peer: bytes) -> fe.Message:
        self.subscriptions.remove(peer)
        return fe.Ok()

    def list_nodes(self, turn: Turn) -> fe.Message:
        return fe.NodesReply(nodes=self.nodes.node_views(turn.state, turn.now.mono))

    def get_node(self, turn: Turn, request: fe.GetNode) -> fe.Message:
        view = self.nodes.node_view(turn.state, request.name, turn.now.mono)
        if view is None:
            raise RequestError(ErrorCode.NotFound, f"node {request.name!r} not found")
        return fe.NodeReply(node=view)

    def set_drained(self, turn: Turn, name: str, *, drained: bool) -> fe.Message:
        """Cordon (`DrainNode`) or uncordon (`UndrainNode`) a node; idempotent (no record when
        nothing changes)."""
        node = turn.state.nodes.get(name)
        if node is None:
            raise RequestError(ErrorCode.NotFound, f"node {name!r} not found")
        if node.drained != drained:
            reason = "drained by an operator" if drained else "undrained by an operator"
            turn.commit(r.NodeDrainChanged(time=turn.now.wall, name=name, drained=drained, reason=reason))
            turn.count("node_drains" if drained else "node_undrains")
            log.info("node %s: %s", name, reason)
            turn.schedule_soon()
        view = self.nodes.node_view(turn.state, name, turn.now.mono)
        assert view is not None
        return fe.NodeReply(node=view)

    @staticmethod
    def list_executors(turn: Turn) -> fe.Message:
        state = turn.state
        return fe.ExecutorsReply(executors=[executor_view(state, e) for e in state.executors.values()])

    @staticmethod
    def get_executor(turn: Turn, request: fe.GetExecutor) -> fe.Message:
        executor = turn.state.executors.get(request.executor_id)
        if executor is None:
            raise RequestError(ErrorCode.NotFound, f"executor {request.executor_id!r} not found")
        return fe.ExecutorReply(executor=executor_view(turn.state, executor))

    @staticmethod
    def get_stats(
        turn: Turn, stats: dict[str, float], started: Now | None, storage: dict[str, float | int | str]
    ) -> fe.Message:
        """`stats`: the controller's; `started`: when serving began; `storage`: facts about
        durable storage (numbers go to `stats`, strings to `info`, keys prefixed `storage_`)."""
        info = {"server_version": turn.config.server_version}
        if started is not None:
            stats["uptime_seconds"] = turn.now.mono - started.mono
            stats["started_at_ms"] = float(started.wall)
        for key, value in storage.items():
            if isinstance(value, str):
                info[f"storage_{key}"] = value
            else:
                stats[f"storage_{key}"] = float(value)
        return fe.StatsReply(stats=stats, info=info)
