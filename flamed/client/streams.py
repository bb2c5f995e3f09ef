"""Streams: long-lived requests whose pushes go to a sink until the owner closes them.

A cluster subscription (`SubscribeCluster`) and a whole-session watch (`WatchTasks` without
ids) are streams: the session manager answers them with pushes under their `request_id` for
as long as the connection lives, and replaces one when a request comes again under the same id.
Rules the I/O thread keeps for a `Stream`:
- it gets a request id when opened and keeps it: a new request for the stream (another session
  to watch) is sent under the same id, so the session manager replaces the old one;
- every message under that id (pushes, or an `Error` when the server refuses it) goes to
  `sink.message`, on the I/O thread, which must not block;
- neither an error nor a silence nor a lost connection closes it: it is sent again after a
  reconnect and whenever its owner asks (after a silence, say), but never twice while a copy
  still waits to leave the socket; only `close_stream` ends it (the server's side then ends
  with the connection, or with the session for a watch).
"""

from __future__ import annotations

from typing import Protocol

from protocol import frontend as fe


class StreamSink(Protocol):
    def message(self, message: fe.ServerReply) -> None:
        """One push (or an `Error`) under the stream's request id; called on the I/O thread."""
        ...


class Stream:
    __slots__ = ("queued", "request", "request_id", "sent", "sink")

    def __init__(self, request: fe.Message, sink: StreamSink) -> None:
        self.request = request
        self.sink = sink
        #: given by the I/O thread when it opens the stream (0 until then)
        self.request_id = 0
        #: a copy of the request waits in the I/O thread's backlog
        self.queued = False
        #: the request left the socket at least once (so it is renewed after a reconnect)
        self.sent = False
