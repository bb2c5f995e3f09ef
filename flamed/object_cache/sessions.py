"""Objects of deleted sessions go with them: the object cache asks the session manager.

Every `cache.session_check_interval` the cache sends the session manager's frontend one
`CheckSessions` with the ids of the sessions it holds objects for (in batches of at most
`MAX_CHECKED`). A session the answer lists (with the same application) is *alive*: the cache
remembers that durably (`live/` markers). A session it has seen alive that the answer no longer
lists was deleted (or expired): its objects are removed.

Why the cache asks instead of being told: a key's session is only a name, and many objects are
put under a session that does not exist yet (flamepy puts a context before it creates the
session) or never will (`app/shared`), so "not found" alone must never delete anything; and
asking needs no state in the session manager and survives either side being down: a deletion
missed while the cache was stopped is found at its next check. What it costs: objects of a
session created and deleted between two checks are left to the LRU; a removal comes at most
one interval late.
"""

from __future__ import annotations

import logging
import secrets

from flamed.object_cache.requests import Requests
from flamed.transport import Loop, close, connect_dealer, drain, try_send
from flamed.transport.security import ClientCurve
from protocol import codec
from protocol import frontend as fe
from protocol.codec import FrameError

log = logging.getLogger("flamed.object_cache")

#: Session ids per `CheckSessions` (the session manager's limit).
MAX_CHECKED = 10_000


class SessionCheck:
    def __init__(
        self, loop: Loop, frontend: str, curve: ClientCurve | None, requests: Requests, interval: float
    ) -> None:
        self.loop = loop
        self.frontend = frontend
        self.requests = requests
        self.interval = interval
        self.sock = connect_dealer(frontend, b"cache-" + secrets.token_hex(6).encode(), curve=curve)
        self._codec = codec.server_reply_codec()
        #: request id -> the session prefixes it asks about
        self.pending: dict[int, list[str]] = {}
        self._next_id = 0
        self.checks = 0
        loop.add_reader(self.sock, self._on_replies)
        self._timer = loop.call_every(interval, self.check)

    def check(self) -> None:
        """Ask about every session that holds objects (answers still missing are given up)."""
        self.pending.clear()
        by_session: dict[str, list[str]] = {}
        for prefix in sorted(self.requests.index.sessions()):
            by_session.setdefault(prefix.split("/", 1)[1], []).append(prefix)
        ids = sorted(by_session)
        for start in range(0, len(ids), MAX_CHECKED):
            batch = ids[start : start + MAX_CHECKED]
            self._next_id += 1
            request = fe.CheckSessions(session_ids=batch, request_id=self._next_id)
            if try_send(self.sock, codec.encode(request)):
                self.pending[self._next_id] = [p for s in batch for p in by_session[s]]
        self.checks += 1

    def _on_replies(self) -> None:
        for frames in drain(self.sock):
            try:
                reply = self._codec.decode(frames)
            except FrameError as exc:
                log.warning("session check: bad frame from the session manager: %s", exc.message)
                continue
            prefixes = self.pending.pop(reply.request_id, None)
            if prefixes is None:
                continue
            if isinstance(reply, fe.SessionsChecked):
                self._apply(prefixes, reply.sessions)
            elif isinstance(reply, fe.Error):
                log.warning("session check: the session manager said %s: %s", reply.code, reply.message)

    def _apply(self, prefixes: list[str], found: dict[str, str]) -> None:
        for prefix in prefixes:
            application, session_id = prefix.split("/", 1)
            if found.get(session_id) == application:
                self.requests.session_alive(prefix)
            elif prefix in self.requests.index.live:
                self.requests.session_gone(prefix)

    def close(self) -> None:
        self._timer.cancel()
        self.loop.remove_reader(self.sock)
        close(self.sock)
