"""Session state machine: Open -> Closed (close cancels Pending tasks; refused while tasks run,
as Flame). Closing a Closed session is idempotent and handled by the caller, not the table."""

from __future__ import annotations

import enum

from flamed.core.machines import Machine
from protocol.types import SessionState


class SessionTrigger(enum.StrEnum):
    close = "close"


SESSION = Machine[SessionState, SessionTrigger](
    "session", {(SessionState.Open, SessionTrigger.close): SessionState.Closed}
)
