"""What the SDK's I/O thread sends again after a reconnect (`InFlight.renewals`), as a pure test.

What would break: a restarted session manager holds no watch, no subscription and no reply in
flight; a client that does not renew them waits for ever (futures never complete, a dashboard
stays stale), and one that renews what never left the socket, or what must not be repeated
(creating a session), sends it twice.
"""

from __future__ import annotations

import itertools
from concurrent.futures import Future
from typing import Any

from flamed.client.inflight import MAX_WATCH_IDS, ActiveWatch, InFlight, PendingCall
from flamed.client.sinks import WatchSinks
from flamed.client.streams import Stream
from protocol import frontend as fe
from protocol.types import SessionSpec


class Quiet:
    def message(self, message: fe.ServerReply) -> None:
        raise AssertionError("no message expected")


def test_renewals_resend_sent_watches_in_chunks_streams_and_repeatable_calls_only() -> None:
    """A sent watch of 2 x MAX_WATCH_IDS + 5 tasks comes back as its first chunk under its own id
    and two new watches; a sent stream under its id (once, even if asked twice); a sent
    `GetSession` again; an unsent watch, an unsent stream and a sent `CreateSession` not."""
    flight = InFlight("ipc:///nowhere")
    ids = itertools.count(100)
    future: Future[Any] = Future()
    sinks: WatchSinks = {i: [Future()] for i in range(1, 2 * MAX_WATCH_IDS + 6)}
    big = ActiveWatch("s1", sinks)
    big.sent = True
    flight.watches[1] = big
    flight.watches[2] = ActiveWatch("s1", {7: [Future()]})  # still in the backlog
    subscribed = Stream(fe.SubscribeCluster(), Quiet())
    subscribed.request_id, subscribed.sent = 3, True
    waiting = Stream(fe.SubscribeCluster(), Quiet())
    waiting.request_id, waiting.queued = 4, True
    flight.streams = {3: subscribed, 4: waiting}
    read = PendingCall(future, 1e9, fe.GetSession(session_id="s1"))
    read.sent = True
    create = PendingCall(future, 1e9, fe.CreateSession(session_id="s2", spec=SessionSpec(application="a")))
    create.sent = True
    flight.pending = {5: read, 6: create}

    again = flight.renewals(lambda: next(ids))

    assert [(i, type(m).__name__) for i, m in again] == [
        (1, "WatchTasks"),
        (100, "WatchTasks"),
        (101, "WatchTasks"),
        (3, "SubscribeCluster"),
        (5, "GetSession"),
    ]
    chunks = [m.task_ids for _, m in again[:3]]  # type: ignore[attr-defined]  # the first three sent are WatchTasks (asserted above)
    assert [len(c) for c in chunks] == [MAX_WATCH_IDS, MAX_WATCH_IDS, 5]
    assert chunks[0][0] == 1
    assert set(flight.watches) == {1, 2, 100, 101}
    assert not big.sent
    assert not read.sent
    assert subscribed.queued
    assert flight.renewals(lambda: next(ids)) == []
