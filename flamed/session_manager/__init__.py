"""The session-manager daemon (`flamed session-manager`)."""

from flamed.session_manager.daemon import SessionManager, SessionManagerOptions

__all__ = ["SessionManager", "SessionManagerOptions"]
