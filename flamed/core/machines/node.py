"""Node state machine, driven by the node's connection (DESIGN 4).

Ready while Connected; Unknown while Draining (and after a session-manager restart, until the
node registers or its drain timer expires); NotReady after Closed and cleanup. Only Ready nodes
receive new executors.
"""

from __future__ import annotations

import enum

from flamed.core.machines import Machine
from protocol.types import NodeState as N


class NodeTrigger(enum.StrEnum):
    connected = "connected"
    silent = "silent"
    cleaned_up = "cleaned_up"


NODE = Machine[N, NodeTrigger](
    "node",
    {
        (N.Unknown, NodeTrigger.connected): N.Ready,
        (N.NotReady, NodeTrigger.connected): N.Ready,
        (N.Ready, NodeTrigger.connected): N.Ready,
        (N.Ready, NodeTrigger.silent): N.Unknown,
        (N.Unknown, NodeTrigger.cleaned_up): N.NotReady,
        (N.Ready, NodeTrigger.cleaned_up): N.NotReady,
    },
)
