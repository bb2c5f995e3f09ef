"""Connection state machine, one per node on the session manager (DESIGN 4, RFE384).

Connected -> Draining when the node is silent for heartbeat_interval * heartbeat_liveness;
Draining -> Connected when it registers again before `drain_timeout`; Draining -> Closed when
the drain timer expires; Connected | Draining -> Closed at once on a goodbye. Closed means
discarded: a later registration starts a new connection (a new epoch), it is never "refused
forever". Every drain and close names the epoch it belongs to; one for an old epoch is ignored.
"""

from __future__ import annotations

import enum

from flamed.core.machines import Machine
from protocol.types import ConnectionState as C


class ConnectionTrigger(enum.StrEnum):
    silence = "silence"
    register = "register"
    drain_expired = "drain_expired"
    goodbye = "goodbye"


CONNECTION = Machine[C, ConnectionTrigger](
    "connection",
    {
        (C.Connected, ConnectionTrigger.silence): C.Draining,
        (C.Connected, ConnectionTrigger.register): C.Connected,
        (C.Draining, ConnectionTrigger.register): C.Connected,
        (C.Draining, ConnectionTrigger.drain_expired): C.Closed,
        (C.Connected, ConnectionTrigger.goodbye): C.Closed,
        (C.Draining, ConnectionTrigger.goodbye): C.Closed,
    },
)
