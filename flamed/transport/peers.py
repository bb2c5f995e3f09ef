"""Which local process sent a message on an `ipc://` socket.

On Linux, libzmq reads the peer's credentials of each ipc connection with SO_PEERCRED when it
is accepted and hands them out with every message received on it, as the "Peer-Address"
property `"<host>:<uid>:<gid>:<pid>"`. The kernel fills these in, so a peer cannot lie about
them, unlike anything inside its frames (routing id, a pid in a message). The executor manager
uses them to tie each instance message to the instance process that sent it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import zmq

from flamed.transport.sockets import Frames


def drain_with_peer(sock: zmq.Socket[bytes], limit: int) -> Iterator[tuple[int | None, Frames]]:
    """Like `drain` on a ROUTER: up to `limit` messages ready on `sock`, each with the pid of
    the process that sent it (None when the platform does not say, or the sender runs as
    another user)."""
    uid = os.getuid()
    for _ in range(limit):
        try:
            routing_id = sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return
        # Only the first frame from the peer as a zmq.Frame, for its properties: as cheap as
        # `drain` (3 us a message), where every frame as a Frame doubled it.
        first = sock.recv(copy=False)  # the rest of a multipart message is there already
        frames = [routing_id, first.bytes]
        if first.more:
            frames.extend(sock.recv_multipart())
        yield _sender_pid(first, uid), frames


def _sender_pid(frame: zmq.Frame, uid: int) -> int | None:
    try:
        address = frame.get("Peer-Address")
    except zmq.ZMQError:  # no such property (not ipc, or libzmq without SO_PEERCRED)
        return None
    fields = str(address).rsplit(":", 3)
    if len(fields) != 4 or not fields[1].isdigit() or not fields[3].isdigit():
        return None
    return int(fields[3]) if int(fields[1]) == uid else None
