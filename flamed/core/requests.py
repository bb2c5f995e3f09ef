"""Client requests: what every request handler of the core keeps to.

A handler takes the turn of its input (and, where it matters, the peer and the client it
speaks for) and returns its reply, or None when the reply comes later (a watch's first push is
its reply). Handlers are grouped by what they act on: `session_requests` (applications,
sessions, tasks) and `cluster_requests` (the connection, nodes, executors, stats, cluster
subscriptions). The controller routes each request to its handler with one `match` over the
`ClientRequest` union, so a request type without a handler is a type error, not a KeyError.

Rules: a handler changes state only through `Turn.commit`, and a request that cannot be served
raises `RequestError` before it commits anything, so the controller answers it with a typed
`Error` reply, counts it, and the state is unchanged.
"""

from __future__ import annotations

from protocol import frontend as fe
from protocol.errors import ErrorCode, FlameBaseError

#: Requests that only read: not even built for a client whose replies pile up unread, and
#: answered again from the re-read state after a rolled-back turn.
READS: frozenset[type] = frozenset(
    {
        fe.Hello,
        fe.Ping,
        fe.GetApplication,
        fe.ListApplications,
        fe.GetSession,
        fe.ListSessions,
        fe.GetTask,
        fe.ListTasks,
        fe.ListNodes,
        fe.GetNode,
        fe.ListExecutors,
        fe.GetExecutor,
        fe.GetStats,
    }
)


class RequestError(FlameBaseError):
    """A client request cannot be served; becomes an `Error` reply."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
