"""The frontend's sending side: what happens to messages for a client that does not read.

ZeroMQ queues at most `client_send_hwm` messages for one connection; past that a send raises
EAGAIN (ROUTER_MANDATORY), or EHOSTUNREACH while the connection is gone. `Outflow` then keeps
that peer's further messages in a backlog of its own, in order, and retries it (`retry`) at the
end of every loop turn and on a short timer. Rules:
- a peer with a backlog is *congested*; what is new for it joins the backlog, so messages to a
  peer go out in the order they were made;
- replies join the backlog while it holds less than `max_bytes`; past that the peer is *full*
  and further replies are dropped and counted (a client that reads again asks again);
- pushes (`TaskUpdates`, `ClusterUpdates`, `ClusterSnapshot`) always join it: the core builds
  none for a congested peer, so at most one turn's worth goes past the cap, and a dropped push
  would lose a change that its watch no longer holds;
- a backlog is dropped only when the core forgets its peer (`forget`: client_ttl of silence).
Every change of a peer's flow is reported (`take_changes`) for the core (`Controller.peer_flow`).
Memory per connection is thus bounded by `client_send_hwm` messages in ZeroMQ plus
`max_bytes` plus one turn of pushes; nothing here reads the clock or decodes.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from flamed.core.clients import Flow

#: Sends one message (frames, routing id first) without blocking; False if it cannot go now.
Send = Callable[[list[bytes]], bool]

#: What a kept message costs beyond its bytes (the list and bytes objects holding it), so that
#: a flood of tiny replies is bounded as well as a few big ones.
MESSAGE_OVERHEAD = 256


class Backlog:
    __slots__ = ("messages", "size")

    def __init__(self) -> None:
        self.messages: collections.deque[tuple[list[bytes], int]] = collections.deque()
        self.size = 0


class Outflow:
    def __init__(self, send: Send, max_bytes: int, counters: collections.Counter[str] | None = None) -> None:
        self._send = send
        self.max_bytes = max_bytes
        self.backlogs: dict[bytes, Backlog] = {}
        self._changes: dict[bytes, Flow] = {}
        self.counters: collections.Counter[str] = counters if counters is not None else collections.Counter()

    def __bool__(self) -> bool:
        return bool(self.backlogs)

    @property
    def queued_bytes(self) -> int:
        return sum(b.size for b in self.backlogs.values())

    def send(self, peer: bytes, frames: list[bytes], *, push: bool) -> None:
        """Send now, or keep for later (see the module rules); `frames` start with `peer`."""
        backlog = self.backlogs.get(peer)
        if backlog is None:
            if self._send(frames):
                return
            backlog = self.backlogs[peer] = Backlog()
            self.counters["client_congestions"] += 1
            self._changes[peer] = Flow.congested
        if not push and backlog.size >= self.max_bytes:
            self.counters["client_replies_dropped"] += 1
            return
        size = MESSAGE_OVERHEAD + sum(len(frame) for frame in frames)
        backlog.messages.append((frames, size))
        backlog.size += size
        self.counters["client_messages_queued"] += 1
        if backlog.size >= self.max_bytes:
            self._changes[peer] = Flow.full

    def retry(self) -> bool:
        """Send what the backlogs hold, in order, until ZeroMQ refuses; True if anything went."""
        moved = False
        for peer, backlog in list(self.backlogs.items()):
            was_full = backlog.size >= self.max_bytes
            messages = backlog.messages
            while messages and self._send(messages[0][0]):
                _, size = messages.popleft()
                backlog.size -= size
                moved = True
            if not messages:
                del self.backlogs[peer]
                self._changes[peer] = Flow.clear
            elif was_full and backlog.size < self.max_bytes:
                self._changes[peer] = Flow.congested
        return moved

    def forget(self, peer: bytes) -> None:
        """Drop what is kept for `peer` (the core forgot it)."""
        backlog = self.backlogs.pop(peer, None)
        if backlog is not None:
            self.counters["client_messages_forgotten"] += len(backlog.messages)
        self._changes.pop(peer, None)

    def take_changes(self) -> dict[bytes, Flow]:
        """Peers whose flow changed since the last call, with their new flow."""
        changes, self._changes = self._changes, {}
        return changes
