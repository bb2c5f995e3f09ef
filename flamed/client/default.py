"""The default connection of flamepy's module functions (`connect`, then `create_session` ...).

One per process, made on first use (endpoint and timeout as `open_connection` finds them) or by
`connect(addr)`, closed at interpreter exit. Its own module so that parts of the SDK which need
it (the object cache's functions) import it without importing the package.
"""

from __future__ import annotations

import atexit
import threading

from flamed.client.connection import Connection, open_connection

_lock = threading.Lock()
_default: Connection | None = None


def connect(addr: str | None = None, timeout: float | None = None) -> Connection:
    """Connect the default connection to `addr` (see `open_connection`), replacing any other."""
    global _default
    connection = open_connection(addr, timeout=timeout)
    with _lock:
        old, _default = _default, connection
    if old is not None:
        old.close()
    return connection


def connection() -> Connection:
    """The default connection, connected on first use."""
    global _default  # noqa: PLW0603 - see connect()
    with _lock:
        if _default is not None and not _default.closed:
            return _default
    created = open_connection()
    with _lock:
        if _default is None or _default.closed:
            _default = created
            return created
        current = _default
    created.close()
    return current


def disconnect() -> None:
    """Close the default connection (done at interpreter exit too)."""
    global _default
    with _lock:
        old, _default = _default, None
    if old is not None:
        old.close()


atexit.register(disconnect)
