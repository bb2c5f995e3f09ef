"""ZeroMQ transport: the only package that imports zmq (sockets, the reactor loop, the client's
link and settings). Everything else holds a `Socket` it was handed and catches `TransportError`.
"""

from flamed.transport.client_link import EVENTS, READABLE, WOKEN, ClientLink, LinkEvent, LinkEventKind
from flamed.transport.loop import Loop, Timer
from flamed.transport.settings import ClientSettings, SettingsError, client_role, client_settings
from flamed.transport.signals import SignalInbox
from flamed.transport.sockets import (
    CONNECTION_UP,
    Frames,
    Reconnect,
    Socket,
    TransportError,
    bind_router,
    close,
    close_monitored,
    connect_dealer,
    connections_up,
    context,
    drain,
    drain_with_user,
    readable,
    start_context,
    try_send,
)

__all__ = [
    "CONNECTION_UP",
    "EVENTS",
    "READABLE",
    "WOKEN",
    "ClientLink",
    "ClientSettings",
    "Frames",
    "LinkEvent",
    "LinkEventKind",
    "Loop",
    "Reconnect",
    "SettingsError",
    "SignalInbox",
    "Socket",
    "Timer",
    "TransportError",
    "bind_router",
    "client_role",
    "client_settings",
    "close",
    "close_monitored",
    "connect_dealer",
    "connections_up",
    "context",
    "drain",
    "drain_with_user",
    "readable",
    "start_context",
    "try_send",
]
