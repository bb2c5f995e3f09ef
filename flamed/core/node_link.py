"""One executor manager's link, as the session manager holds it: `NodeLink`.

A link is the volatile side of a node's connection: routing id, epoch, sequence numbers,
liveness and drain deadlines, the commands waiting for its next `Commands` frame. Its
`connection` follows the connection table (machines/connection.py): it starts Connected and
changes only to what `CONNECTION.next` returns. `NodeLinks` (links.py) owns every link; other
parts and the daemon see one only as a `LinkView`, read-only.
"""

from __future__ import annotations

from typing import Protocol

from flamed.core.machines.connection import CONNECTION, ConnectionTrigger
from protocol import backend as be
from protocol.types import ConnectionState


class LinkView(Protocol):
    """What may be read of a link outside the node links (registration, tests)."""

    @property
    def name(self) -> str: ...
    @property
    def peer(self) -> bytes | None: ...
    @property
    def incarnation(self) -> str: ...
    @property
    def epoch(self) -> int: ...
    @property
    def connection(self) -> ConnectionState: ...
    @property
    def last_seen(self) -> float: ...
    @property
    def recv_seq(self) -> int: ...
    @property
    def stopping(self) -> bool: ...
    @property
    def key(self) -> str: ...


class NodeLink:
    __slots__ = (
        "ack",
        "commands",
        "connection",
        "drain_deadline",
        "epoch",
        "features",
        "incarnation",
        "key",
        "last_seen",
        "last_sent",
        "name",
        "peer",
        "recv_seq",
        "send_seq",
        "stopping",
    )

    def __init__(self, name: str, peer: bytes | None, incarnation: str, epoch: int, now: float) -> None:
        self.name = name
        self.peer = peer
        self.incarnation = incarnation
        self.epoch = epoch
        self.connection = ConnectionState.Connected
        self.last_seen = now
        self.last_sent = now
        self.send_seq = 0
        self.recv_seq = 0
        self.ack = 0
        self.drain_deadline: float | None = None
        self.commands: list[be.ExecutorCommand] = []
        #: the executor manager said it is draining to stop: no new executors, binds or tasks
        self.stopping = False
        #: optional commands its executor manager understands (`RegisterNode.features`)
        self.features: frozenset[str] = frozenset()
        #: CURVE: the key (Z85) that registered it; every message of the link must carry it
        self.key = ""

    def move(self, trigger: ConnectionTrigger) -> None:
        """Apply a trigger of the connection table (raises `InvalidTransition` if illegal)."""
        self.connection = CONNECTION.next(self.connection, trigger)

    def copy(self) -> NodeLink:
        """The link as it is now, as a separate object (a checkpoint keeps these)."""
        twin = NodeLink.__new__(NodeLink)
        for slot in NodeLink.__slots__:
            setattr(twin, slot, getattr(self, slot))
        twin.commands = list(self.commands)
        return twin
