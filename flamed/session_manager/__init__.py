"""The session-manager daemon (`flamed session-manager`).

`SessionManager` and `SessionManagerOptions` are imported on first use, so that a process
that needs only a part of the package (the compactor: `flamed.session_manager.compactor`)
does not pay for the daemon's imports (ZeroMQ, the controller).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flamed.session_manager.daemon import SessionManager, SessionManagerOptions

__all__ = ["SessionManager", "SessionManagerOptions"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from flamed.session_manager import daemon

        return getattr(daemon, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
