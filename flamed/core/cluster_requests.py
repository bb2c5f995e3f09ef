"""Client requests on the cluster: the connection, nodes, executors, stats, cluster subscriptions.

Rules: a client speaking another protocol version is refused at `Hello`; draining a node only
cordons it (no new executors or binds there) and is idempotent: no record when nothing changes;
cluster subscriptions are capped per client (so one key cannot lock every dashboard out) and
in all; everything else here only reads.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flamed import __version__
from flamed.core import records as r
from flamed.core.requests import Handler, RequestError, RequestHandlers
from flamed.core.views import executor_view
from protocol import frontend as fe
from protocol.codec import PROTOCOL_VERSION
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from flamed.core.turn import Now

log = logging.getLogger("flamed.session_manager")

#: Most session ids one `CheckSessions` may name.
MAX_CHECKED_SESSIONS = 10_000


class ClusterRequests(RequestHandlers):
    def handlers(self) -> dict[type, Handler]:
        ctl = self.ctl
        return {
            fe.Hello: self._hello,  # type: ignore[dict-item]
            fe.Ping: lambda peer, req, now: fe.Pong(),
            fe.ListNodes: lambda peer, req, now: fe.NodesReply(nodes=ctl.links.node_views(ctl.state, now.mono)),
            fe.GetNode: self._get_node,  # type: ignore[dict-item]
            fe.DrainNode: self._drain_node,  # type: ignore[dict-item]
            fe.UndrainNode: self._undrain_node,  # type: ignore[dict-item]
            fe.ListExecutors: self._list_executors,
            fe.GetExecutor: self._get_executor,  # type: ignore[dict-item]
            fe.GetStats: self._get_stats,
            fe.SubscribeCluster: self._subscribe_cluster,  # type: ignore[dict-item]
            fe.UnsubscribeCluster: self._unsubscribe_cluster,
            fe.CheckSessions: self._check_sessions,  # type: ignore[dict-item]
        }

    def _hello(self, peer: bytes, request: fe.Hello, now: Now) -> fe.Message:
        if request.protocol_version != PROTOCOL_VERSION:
            raise RequestError(
                ErrorCode.VersionMismatch,
                f"client speaks protocol {request.protocol_version}, this session manager {PROTOCOL_VERSION}",
            )
        return fe.Welcome(
            protocol_version=PROTOCOL_VERSION,
            server_version=__version__,
            cluster=self.ctl.config.cluster_name,
            cache_endpoint=self.ctl.config.cache_endpoint,
        )

    def _check_sessions(self, peer: bytes, request: fe.CheckSessions, now: Now) -> fe.Message:
        if len(request.session_ids) > MAX_CHECKED_SESSIONS:
            raise RequestError(
                ErrorCode.InvalidArgument,
                f"CheckSessions names {len(request.session_ids)} sessions; at most {MAX_CHECKED_SESSIONS}",
            )
        sessions = self.ctl.state.sessions
        found = {s: sessions[s].spec.application for s in request.session_ids if s in sessions}
        return fe.SessionsChecked(sessions=found)

    def _subscribe_cluster(self, peer: bytes, request: fe.SubscribeCluster, now: Now) -> fe.Message | None:
        """Subscribe (or renew `peer`'s subscription); the `ClusterSnapshot` reply goes out
        with the turn's pushes."""
        config, subscriptions = self.ctl.config, self.ctl.subscriptions
        client = self.ctl.clients.client_of(peer)
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
        return None

    def _unsubscribe_cluster(self, peer: bytes, request: object, now: Now) -> fe.Message:
        self.ctl.subscriptions.remove(peer)
        return fe.Ok()

    def _get_node(self, peer: bytes, request: fe.GetNode, now: Now) -> fe.Message:
        view = self.ctl.links.node_view(self.ctl.state, request.name, now.mono)
        if view is None:
            raise RequestError(ErrorCode.NotFound, f"node {request.name!r} not found")
        return fe.NodeReply(node=view)

    def _set_drained(self, name: str, drained: bool, now: Now) -> fe.Message:
        """Cordon or uncordon a node; idempotent (no record when nothing changes)."""
        node = self.ctl.state.nodes.get(name)
        if node is None:
            raise RequestError(ErrorCode.NotFound, f"node {name!r} not found")
        if node.drained != drained:
            reason = "drained by an operator" if drained else "undrained by an operator"
            self.ctl.commit(r.NodeDrainChanged(time=now.wall, name=name, drained=drained, reason=reason))
            self.ctl.counters["node_drains" if drained else "node_undrains"] += 1
            log.info("node %s: %s", name, reason)
            self.ctl.dispatcher.schedule_soon()
        view = self.ctl.links.node_view(self.ctl.state, name, now.mono)
        assert view is not None
        return fe.NodeReply(node=view)

    def _drain_node(self, peer: bytes, request: fe.DrainNode, now: Now) -> fe.Message:
        return self._set_drained(request.name, True, now)

    def _undrain_node(self, peer: bytes, request: fe.UndrainNode, now: Now) -> fe.Message:
        return self._set_drained(request.name, False, now)

    def _list_executors(self, peer: bytes, request: object, now: Now) -> fe.Message:
        return fe.ExecutorsReply(
            executors=[executor_view(self.ctl.state, e) for e in self.ctl.state.executors.values()]
        )

    def _get_executor(self, peer: bytes, request: fe.GetExecutor, now: Now) -> fe.Message:
        executor = self.ctl.state.executors.get(request.executor_id)
        if executor is None:
            raise RequestError(ErrorCode.NotFound, f"executor {request.executor_id!r} not found")
        return fe.ExecutorReply(executor=executor_view(self.ctl.state, executor))

    def _get_stats(self, peer: bytes, request: object, now: Now) -> fe.Message:
        stats, info = self.ctl.stats(), {"server_version": __version__}
        if self.ctl.started is not None:
            stats["uptime_seconds"] = now.mono - self.ctl.started.mono
            stats["started_at_ms"] = float(self.ctl.started.wall)
        if self.ctl.storage_stats is not None:
            for key, value in self.ctl.storage_stats().items():
                if isinstance(value, str):
                    info[f"storage_{key}"] = value
                else:
                    stats[f"storage_{key}"] = float(value)
        return fe.StatsReply(stats=stats, info=info)
