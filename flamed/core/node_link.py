"""One executor manager's link, as the session manager holds it: `NodeLink`.

A link is the volatile side of a node's connection: routing id, epoch, sequence numbers,
liveness and drain deadlines, the commands waiting for its next `Commands` frame. Its
`connection` follows the connection table (machines/connection.py): it starts Connected and
changes only to what `CONNECTION.next` returns. `NodeLinks` (links.py) owns every link; other
parts and the daemon see one only as a `LinkView`, read-only, and the dispatcher asks which
nodes may get work through a `Readiness` view. A `LinksCheckpoint` is the link table as a
durable turn left it (links.py `restore`). A `LinkOrder` keeps link names oldest first by a
time that only grows (last heard, last sent to), and a `DrainOrder` the Draining links by drain
deadline, so that the scans for silent links, for heartbeats to send and for drains that ran
out cost what they find, not the cluster's size.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterable, Mapping
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
    """Node names with a time each (when its link was last heard from, or last sent to),
    oldest first; a name's time only grows. `touch` gives a name its new time and makes it the
    newest; `older` finds the names whose time is old enough by reading from the front and
    stopping at the first that is not: a scan costs what it finds (a scan of every link ten
    times a heartbeat interval was a third of an idle session manager at 10,000 nodes). The
    times are kept here, so a scan reads no link."""

    __slots__ = ("_order",)

    def __init__(self, entries: Iterable[tuple[str, float]] = ()) -> None:
        self._order: OrderedDict[str, float] = OrderedDict(entries)

    def touch(self, name: str, time: float) -> None:
        order = self._order
        order[name] = time
        order.move_to_end(name)

    def discard(self, name: str) -> None:
        self._order.pop(name, None)

    def older(self, now: float, age: float, *, strictly: bool = False) -> list[str]:
        """The names from the oldest on whose time is `age` or more before `now` (more than
        `age` if `strictly`), up to the first that is not."""
        found = []
        if strictly:
            for name, time in self._order.items():
                if not now - time > age:
                    break
                found.append(name)
        else:
            for name, time in self._order.items():
                if not now - time >= age:
                    break
                found.append(name)
        return found

    def __contains__(self, name: object) -> bool:
        return name in self._order

    def __len__(self) -> int:
        return len(self._order)


class DrainOrder:
    """The names of the Draining links, soonest drain deadline first: `expired` costs the
    drains that ran out, not every Draining link (after a registration storm thousands may
    drain at once, and a scan of them all ten times a second was 8% of the loop). A link's
    deadline is read when it is added; an entry whose link has since left, or drains again to
    another deadline, is dropped when it comes up."""

    __slots__ = ("_heap", "_names")

    def __init__(self, links: Iterable[NodeLink] = ()) -> None:
        self._names: set[str] = set()
        self._heap: list[tuple[float, str]] = []
        for link in links:
            self.add(link)

    def add(self, link: NodeLink) -> None:
        """`link` is Draining with its `drain_deadline` set."""
        self._names.add(link.name)
        if link.drain_deadline is not None:
            heapq.heappush(self._heap, (link.drain_deadline, link.name))

    def discard(self, name: str) -> None:
        self._names.discard(name)

    def expired(self, now: float, links: Mapping[str, NodeLink]) -> list[str]:
        """The names whose drain ran out by `now`, in name order (each once)."""
        heap, found = self._heap, set()
        while heap and heap[0][0] <= now:
            deadline, name = heapq.heappop(heap)
            link = links.get(name)
            if name in self._names and link is not None and link.drain_deadline == deadline:
                found.add(name)
        return sorted(found)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __len__(self) -> int:
        return len(self._names)
