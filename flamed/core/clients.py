"""Frontend clients as the core sees them: who each connection speaks for, when it was last
heard from, and whether it reads what it is sent.

A *peer* is one connection (its ZeroMQ routing id: where replies go). A *client* is what the
per-client limits count: with CURVE the name of its key (one key is one client, whatever its
connections), in plain mode the peer itself (so plain mode cannot stop one host from opening
many connections; the global limits bound it). The daemon names the client with every request.

Flow, set by the daemon, which owns the socket: a peer is clear, `congested` (ZeroMQ refused a
message for it; the daemon keeps what follows in a bounded backlog of its own) or `full` (that
backlog is at its cap). While a peer is congested the core builds no pushes for it (watch
changes stay pending, coalesced, and go out when it reads again); while it is full the core
does not build replies to its reads either. Flow never makes the core forget a peer: only
`ttl` seconds of silence do (then its watches and subscriptions go, see `expire`).
"""

from __future__ import annotations

import enum

#: How often silent peers are looked for, at most (seconds).
EXPIRY_CHECK = 1.0


class Flow(enum.Enum):
    clear = "clear"
    congested = "congested"
    full = "full"


class Peer:
    __slots__ = ("client", "last_seen")

    def __init__(self, client: bytes, last_seen: float) -> None:
        self.client = client
        self.last_seen = last_seen


class Clients:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.peers: dict[bytes, Peer] = {}
        #: peers whose flow is not clear
        self.flow: dict[bytes, Flow] = {}
        self._next_expiry = 0.0

    def __len__(self) -> int:
        return len(self.peers)

    def seen(self, peer: bytes, client: bytes, now: float) -> None:
        """`peer` sent a request on behalf of `client` at `now`."""
        entry = self.peers.get(peer)
        if entry is None:
            self.peers[peer] = Peer(client, now)
        else:
            entry.client = client
            entry.last_seen = now

    def client_of(self, peer: bytes) -> bytes:
        entry = self.peers.get(peer)
        return entry.client if entry is not None else peer

    def congested(self, peer: bytes) -> bool:
        """True when nothing but replies may be built for `peer` (congested or full)."""
        return peer in self.flow

    def full(self, peer: bytes) -> bool:
        return self.flow.get(peer) is Flow.full

    def set_flow(self, peer: bytes, flow: Flow) -> None:
        if flow is Flow.clear:
            self.flow.pop(peer, None)
        else:
            self.flow[peer] = flow

    def forget(self, peer: bytes) -> None:
        self.peers.pop(peer, None)
        self.flow.pop(peer, None)

    def next_deadline(self) -> float:
        return self._next_expiry if self.peers else float("inf")

    def expire(self, now: float) -> list[bytes]:
        """Forget the peers silent for more than `ttl` at `now`; returns them (at most one
        scan every `EXPIRY_CHECK` seconds, so that many peers cost little per tick)."""
        if now < self._next_expiry:
            return []
        self._next_expiry = now + min(EXPIRY_CHECK, self.ttl / 4)
        gone = [peer for peer, entry in self.peers.items() if now - entry.last_seen > self.ttl]
        for peer in gone:
            del self.peers[peer]
            self.flow.pop(peer, None)
        return gone
