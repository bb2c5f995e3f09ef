"""The time of an input and what the core hands the daemon at the end of a loop turn.

`Now` is the time an input arrived: the core never reads a clock (STYLE 3). `Outbox` is what
a loop turn produced: records to make durable first, then replies, node messages, and the
peers whose queued messages the daemon must drop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flamed.core import records as r
from protocol import backend as be
from protocol import frontend as fe


@dataclass(frozen=True)
class Now:
    """The time of an event: monotonic seconds for timers, Unix ms for timestamps."""

    mono: float
    wall: int


@dataclass
class Outbox:
    records: list[r.AnyRecord] = field(default_factory=list)
    replies: list[tuple[bytes, fe.Message]] = field(default_factory=list)
    node_messages: list[tuple[bytes, be.Message]] = field(default_factory=list)
    #: peers forgotten after client_ttl of silence: drop what is still queued for them
    forgotten: list[bytes] = field(default_factory=list)
