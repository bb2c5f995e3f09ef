"""One executor manager's link, as the session manager holds it: `NodeLink`.

A link is the volatile side of a node's connection: routing id, epoch, sequence numbers,
liveness and drain deadlines, the commands waiting for its next `Commands` frame. Its
`connection` follows the connection table (machines/connection.py): it starts Connected and
changes only to what `CONNECTION.next` returns. `NodeLinks` (links.py) owns every link; other
parts and the daemon see one only as a `LinkView`, read-only, and the dispatcher asks which
nodes may get work through a `Readiness` view. A `LinksCheckpoint` is the link table as a
durable turn left it (links.py `restore`). A `LinkOrder` keeps link names oldest first by a
time that only grows (last heard, last sent to), so that the scans for silent links and for
heartbeats to send cost what they find, not the cluster's size.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from flamed.core.machines.connection import CONNECTION, ConnectionTrigger
from flamed.core.state import NodeEntry
from protocol import backend as be
from protocol.types import ConnectionState, NodeState


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
        """The link as it is now, as a separate object (a checkpoint keeps these; it is taken
        after every durable turn, for every link, so it is spelled out rather than a loop)."""
        twin = NodeLink.__new__(NodeLink)
        twin.name = self.name
        twin.peer = self.peer
        twin.incarnation = self.incarnation
        twin.epoch = self.epoch
        twin.connection = self.connection
        twin.last_seen = self.last_seen
        twin.last_sent = self.last_sent
        twin.send_seq = self.send_seq
        twin.recv_seq = self.recv_seq
        twin.ack = self.ack
        twin.drain_deadline = self.drain_deadline
        twin.commands = list(self.commands)
        twin.stopping = self.stopping
        twin.features = self.features
        twin.key = self.key
        return twin


@dataclass(frozen=True)
class LinksCheckpoint:
    """The link table at the end of a durable turn, as the links changed since: for each node
    name whose link changed, the live link object then and a copy of it as it was, or None if
    there was no link of that name (see `NodeLinks.checkpoint` and `restore`). It fills as the
    next turn runs; only the latest checkpoint can be restored."""

    undo: dict[str, tuple[NodeLink, NodeLink] | None]


class Readiness:
    """Which nodes may be given new work, read by the dispatcher at the end of a loop turn
    (its `NodeReadiness`): Ready with a Connected link, executor manager not stopping."""

    __slots__ = ("_links", "_nodes")

    def __init__(self, links: Mapping[str, NodeLink], nodes: Mapping[str, NodeEntry]) -> None:
        self._links = links
        self._nodes = nodes

    def is_ready(self, node: str) -> bool:
        link = self._links.get(node)
        entry = self._nodes.get(node)
        return (
            link is not None
            and link.connection is ConnectionState.Connected
            and entry is not None
            and entry.state is NodeState.Ready
        )

    def is_stopping(self, node: str) -> bool:
        link = self._links.get(node)
        return link is not None and link.stopping

    def supports(self, node: str, feature: str) -> bool:
        link = self._links.get(node)
        return link is not None and feature in link.features


class LinkOrder:
    """Node names, oldest first by a time that only grows (the monotonic time each link was
    last heard from, or last sent to). `touch` moves a name to the end (its time is now the
    newest); `older` finds the names whose time is old enough by reading from the front and
    stopping at the first that is not: a scan costs what it finds (a scan of every
    link ten times a heartbeat interval was a third of an idle session manager at 10,000 nodes)."""

    __slots__ = ("_order",)

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._order: OrderedDict[str, None] = OrderedDict.fromkeys(names)

    def touch(self, name: str) -> None:
        order = self._order
        order[name] = None
        order.move_to_end(name)

    def discard(self, name: str) -> None:
        self._order.pop(name, None)

    def older(self, is_old: Callable[[str], bool]) -> list[str]:
        """The names from the oldest on for which `is_old(name)` holds, up to the first for
        which it does not: `is_old` must say "its time is old enough", so that it holds of
        every name before one it holds of."""
        found = []
        for name in self._order:
            if not is_old(name):
                break
            found.append(name)
        return found

    def __contains__(self, name: object) -> bool:
        return name in self._order

    def __len__(self) -> int:
        return len(self._order)
