"""Client requests: what every request handler of the controller keeps to.

A handler takes the peer, the decoded request and `now`, and returns its reply, or None when the
reply comes later (a watch's first push is its reply). Handlers are grouped by what they act on:
`session_requests` (applications, sessions, tasks) and `cluster_requests` (the connection,
nodes, executors, stats, cluster subscriptions). Each group lists its handlers in `handlers()`;
the controller merges the groups into one table keyed by request type.

Rules: a handler changes state only through `Controller.commit`, and a request that cannot be
served raises `RequestError` before it commits anything, so the controller answers it with a
typed `Error` reply, counts it, and the state is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

from protocol import frontend as fe
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from flamed.core.controller import Controller
    from flamed.core.turn import Now

#: Requests that only read: not even built for a client whose replies pile up unread.
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

#: A request handler: (peer, request, now) -> the reply, or None when it comes later.
Handler: TypeAlias = "Callable[[bytes, object, Now], fe.Message | None]"


class RequestError(Exception):
    """A client request cannot be served; becomes an `Error` reply."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RequestHandlers:
    """A group of handlers working on the controller `ctl`."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl

    def handlers(self) -> dict[type, Handler]:
        """This group's part of the controller's table: request type -> handler."""
        raise NotImplementedError
