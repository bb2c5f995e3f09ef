"""Undoing a loop turn whose records could not be made durable.

When `Storage.commit` fails, the batch is not in the log, but the controller has already applied
its records and queued replies that acknowledge them. `TurnGuard` keeps what is needed to put
everything back the way the last durable turn left it:
- the state is replaced by one re-read from disk (see `durability.reread_state`);
- requests of the turn that changed something (or could have: any request of a writing type)
  are answered `Error(StorageUnavailable, ...)` instead; read-only requests are answered again
  from the re-read state, so no client sees a change that is not durable;
- watch pushes of the turn are dropped and their watches ended with the same error (the client
  watches again); a watch that a failed `CreateTasks{watch}` opened goes with its tasks;
- node messages of the turn are dropped and each link's receive sequence and ack go back to
  their last durable values, so the executor manager's next message shows a gap, is answered
  `Reregister`, and it re-registers and resends its unacknowledged reports (an ack never covers
  a report that is not durable); links made or closed during the turn are undone.

Everything the core owns is put back by the core (`Controller.checkpoint` after every durable
turn, `Controller.restore` after a failed one); this module only decides what each client is
answered, and which watches end with the turn.
"""

from __future__ import annotations

from flamed.core.controller import Controller
from flamed.core.state import ClusterState
from flamed.core.turn import Now, Outbox
from protocol import frontend as fe
from protocol.errors import ErrorCode

#: Requests that never change state: after a failed turn they are answered again.
READ_ONLY: frozenset[type] = frozenset(
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


def unavailable(reason: str, request_id: int) -> fe.Error:
    return fe.Error(
        code=ErrorCode.StorageUnavailable,
        message=f"could not make the change durable: {reason}; nothing was changed",
        request_id=request_id,
    )


class TurnGuard:
    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self._checkpoint = ctl.checkpoint()
        self._writes: set[tuple[bytes, int]] = set()
        self._reads: list[tuple[bytes, fe.ClientRequest]] = []
        self.mark_durable()

    def mark_durable(self) -> None:
        """Call after every turn whose records are durable (or that had none)."""
        self._checkpoint = self.ctl.checkpoint()
        self._writes.clear()
        self._reads.clear()

    def request_handled(self, peer: bytes, request: fe.ClientRequest, *, changed: bool) -> None:
        """The daemon served `request` of `peer` in this turn; `changed`: it committed a record."""
        if changed or type(request) not in READ_ONLY:
            self._writes.add((peer, request.request_id))
        else:
            self._reads.append((peer, request))

    def roll_back(self, outbox: Outbox, state: ClusterState, reason: str, now: Now) -> list[tuple[bytes, fe.Message]]:
        """Install `state` (re-read from disk) and return the replies to send for the turn."""
        ctl = self.ctl
        replies: list[tuple[bytes, fe.Message]] = []
        failed: set[tuple[bytes, int]] = set()
        ended: set[tuple[bytes, int]] = set()
        for peer, reply in outbox.replies:
            key = (peer, reply.request_id)
            if isinstance(reply, fe.TaskUpdates):
                ended.add(key)
            elif key not in self._writes:
                if key not in {(p, r.request_id) for p, r in self._reads}:
                    replies.append((peer, reply))  # an answer to a frame that did not decode
                continue
            if key not in failed:
                failed.add(key)
                replies.append((peer, unavailable(reason, reply.request_id)))
        # Watches whose pushes were dropped end (the client watches again), and so does a
        # watch that a failed CreateTasks{watch} of the turn opened.
        ctl.restore(self._checkpoint, state, ended | failed)
        for peer, request in self._reads:
            ctl.handle_client(peer, request, now)
        replies.extend(ctl.take_replies())
        self.mark_durable()
        return replies
