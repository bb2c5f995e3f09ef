"""ZeroMQ transport: the only package that imports zmq (sockets, the reactor loop)."""

from flamed.transport.loop import Loop, Timer
from flamed.transport.signals import SignalInbox
from flamed.transport.sockets import (
    Frames,
    bind_router,
    close,
    connect_dealer,
    context,
    drain,
    drain_with_user,
    readable,
    try_send,
)

__all__ = [
    "Frames",
    "Loop",
    "SignalInbox",
    "Timer",
    "bind_router",
    "close",
    "connect_dealer",
    "context",
    "drain",
    "drain_with_user",
    "readable",
    "try_send",
]
