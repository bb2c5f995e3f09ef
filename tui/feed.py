"""Where the dashboard's data comes from: a `Feed` delivers items to the app.

The live feed is the SDK's `ClusterFeed` (flamed.client.cluster_feed): the session manager's
cluster subscription and the watch of the session on screen, on the SDK's I/O thread, with
silence detection and resubscription; it delivers `Connected`, `Disconnected`, `Notice` and
the pushed messages in batches, on a thread of its own. This module only names what the app
needs of a feed (`Feed`) and gives tests `FakeFeed`, which records what the app asked for and
delivers nothing by itself. No socket here.
"""

from __future__ import annotations

from typing import Protocol

from flamed.client.cluster_feed import ClusterFeed, Connected, Deliver, Disconnected, FeedItem, Notice

#: The live feed (its first argument is the endpoint; see `ClusterFeed`).
LiveFeed = ClusterFeed

__all__ = ["Connected", "Deliver", "Disconnected", "FakeFeed", "Feed", "FeedItem", "LiveFeed", "Notice"]


class Feed(Protocol):
    endpoint: str

    def start(self, deliver: Deliver) -> None: ...
    def stop(self) -> None: ...
    def watch_session(self, session_id: str | None) -> None: ...
    def close_session(self, session_id: str) -> None: ...
    def drain_node(self, name: str, drained: bool) -> None: ...


class FakeFeed:
    """A feed for tests: remembers the app's requests; the test delivers items itself."""

    def __init__(self, endpoint: str = "fake://cluster") -> None:
        self.endpoint = endpoint
        self.deliver: Deliver | None = None
        self.watched: list[str | None] = []
        self.closed: list[str] = []
        self.drained: list[tuple[str, bool]] = []
        self.stopped = False

    def start(self, deliver: Deliver) -> None:
        self.deliver = deliver

    def stop(self) -> None:
        self.stopped = True

    def watch_session(self, session_id: str | None) -> None:
        self.watched.append(session_id)

    def close_session(self, session_id: str) -> None:
        self.closed.append(session_id)

    def drain_node(self, name: str, drained: bool) -> None:
        self.drained.append((name, drained))
