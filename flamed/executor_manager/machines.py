"""The executor manager's state machines as tables (STYLE 2, as flamed/core/machines/ does for
the session manager): the phases of an executor it holds, and its link to the session manager.

`Machine.next` applies a trigger or raises `InvalidTransition` naming both (a bug of ours:
every caller moves only on its own decisions, never straight on peer input). The diagrams in
docs/architecture.md are generated from these tables by scripts/state_diagrams.py.
"""

from __future__ import annotations

import enum
from typing import Any

from flamed.core.machines import Machine


class Phase(enum.StrEnum):
    """Idle: no instance. Binding: instance started, waiting for `InstanceReady` and
    `SessionEntered`. Bound: the instance serves the session; tasks flow. Unbinding: the
    instance is being stopped (leave, then TERM, then KILL)."""

    Idle = "Idle"
    Binding = "Binding"
    Bound = "Bound"
    Unbinding = "Unbinding"


class PhaseTrigger(enum.StrEnum):
    #: an instance is started for a session
    start = "start"
    #: the instance entered the session (`SessionEntered` ok)
    entered = "entered"
    #: the instance is being stopped (unbind, release, misbehaviour, another bind, a snapshot)
    stop = "stop"
    #: the instance is gone (exited, or never started)
    gone = "gone"


PHASE = Machine[Phase, PhaseTrigger](
    "em_executor",
    {
        (Phase.Idle, PhaseTrigger.start): Phase.Binding,
        (Phase.Binding, PhaseTrigger.entered): Phase.Bound,
        (Phase.Binding, PhaseTrigger.stop): Phase.Unbinding,
        (Phase.Bound, PhaseTrigger.stop): Phase.Unbinding,
        (Phase.Unbinding, PhaseTrigger.stop): Phase.Unbinding,
        (Phase.Binding, PhaseTrigger.gone): Phase.Idle,
        (Phase.Bound, PhaseTrigger.gone): Phase.Idle,
        (Phase.Unbinding, PhaseTrigger.gone): Phase.Idle,
    },
)


class LinkState(enum.StrEnum):
    """Registering: no confirmed registration (trying, at once on each new connection, then
    with backoff). Registered: the session manager answered and its snapshot is applied; tasks
    may start."""

    Registering = "Registering"
    Registered = "Registered"


class LinkTrigger(enum.StrEnum):
    #: a `Registered` answer, its snapshot applied (also a newer one while registered)
    confirmed = "confirmed"
    #: silence, a stand-still of our own, a stale message, a refusal: register again
    suspect = "suspect"


LINK = Machine[LinkState, LinkTrigger](
    "em_link",
    {
        (LinkState.Registering, LinkTrigger.confirmed): LinkState.Registered,
        (LinkState.Registered, LinkTrigger.confirmed): LinkState.Registered,
        (LinkState.Registered, LinkTrigger.suspect): LinkState.Registering,
    },
)


#: The executor manager's tables, in the order docs/architecture.md shows them (after the core's).
MACHINES: tuple[Machine[Any, Any], ...] = (PHASE, LINK)
