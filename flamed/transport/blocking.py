"""A DEALER for callers that block: send and receive with a timeout, from a plain thread.

The SDK's object-cache channel uses it (one call at a time per channel, under the caller's
lock); everything about the socket (options, CURVE, reconnects) is `connect_dealer`'s.
"""

from __future__ import annotations

import zmq

from flamed.transport.security import ClientCurve
from flamed.transport.sockets import connect_dealer
from protocol.codec import DEFAULT_MAX_MESSAGE_SIZE


class BlockingDealer:
    def __init__(
        self,
        endpoint: str,
        routing_id: bytes,
        curve: ClientCurve | None = None,
        hwm: int = 100_000,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self.endpoint = endpoint
        self._sock = connect_dealer(endpoint, routing_id, max_message_size, curve=curve, hwm=hwm)

    def send(self, frames: list[bytes], timeout: float) -> bool:
        """Queue `frames`; False if the peer could not take them within `timeout` seconds
        (not connected, or its queue full)."""
        if not self._sock.poll(max(0, int(timeout * 1000)), zmq.POLLOUT):
            return False
        try:
            self._sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        return True

    def receive(self, timeout: float) -> list[bytes] | None:
        """The next message, or None after `timeout` seconds without one."""
        if not self._sock.poll(max(0, int(timeout * 1000)) + 1, zmq.POLLIN):
            return None
        return self._sock.recv_multipart()

    def close(self) -> None:
        self._sock.close(0)
