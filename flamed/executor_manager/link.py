"""The executor manager's side of the backend link (protocol/backend.py).

Holds what the link needs to be trusted: the registration epoch, the sequence numbers in both
directions, when we last sent and heard, and the completions the session manager has not yet
acknowledged. Pure bookkeeping: no sockets and no clock (times come in as arguments).

Rules: every message after `Registered` carries the epoch and the next `seq`; an incoming
message with another epoch or a gap in `seq` means our view is stale, so we register again.
A completion is kept until an `ack` covers the `Reports` that carried it, and is resent after
a re-registration if the snapshot still lists its task.

The link's state follows `LINK` (machines.py): Registering until the session manager has
answered a registration and its snapshot is applied, then Registered until we suspect it. We
suspect it when the session manager is silent for `heartbeat_interval * liveness`, when this
process itself stood still that long (SIGSTOP, a starved machine: the session manager may have
written the node off meanwhile, whatever messages it sent before that), on a stale message
and on a refusal. From the moment of suspicion no task is started (`may_start`): a task the
session manager may have put back to Pending would run twice. Registering, a registration
goes out at once on every new connection (`register_on_connect`), so a node that is back in
time is confirmed within a round trip, not after a backoff.
"""

from __future__ import annotations

import enum
import random
from collections import deque

from flamed.executor_manager.machines import LINK, LinkState, LinkTrigger
from protocol import backend as be


class ConnectAction(enum.Enum):
    nothing = "nothing"
    #: send a registration now, on this connection
    register = "register"
    #: the connection came back while registered: suspect the link and register again
    rejoin = "rejoin"


class TickAction(enum.Enum):
    nothing = "nothing"
    #: send a heartbeat now
    heartbeat = "heartbeat"
    #: the link is suspected (the reason comes with it): register again
    rejoin = "rejoin"


class BackendLink:
    def __init__(self, backoff_min: float, backoff_max: float, heartbeat_interval: float, liveness: int) -> None:
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.heartbeat_interval = heartbeat_interval
        self.liveness = liveness
        self.state = LinkState.Registering
        #: when this process last finished a loop turn (a long gap: it stood still)
        self.last_turn = 0.0
        self.epoch = 0
        self.send_seq = 0
        self.recv_seq = 0
        self.ack = 0
        self.attempts = 0
        self.last_sent = 0.0
        self.last_heard = 0.0
        #: (seq of the Reports that carried them, or 0 if never sent; the completions), one
        #: entry per frame rather than per completion (a frame may carry hundreds)
        self.unacked: deque[tuple[int, list[be.TaskCompleted]]] = deque()
        self.not_resent: list[be.TaskCompleted] = []

    # ------------------------------------------------------------------ registration

    def next_backoff(self) -> float:
        """Delay before the next registration attempt: exponential, full jitter, bounded."""
        ceiling = min(self.backoff_max, self.backoff_min * (2**self.attempts))
        self.attempts = min(self.attempts + 1, 30)
        return random.uniform(self.backoff_min, max(self.backoff_min, ceiling))

    @property
    def registered(self) -> bool:
        return self.state is LinkState.Registered

    def registered_with(self, message: be.Registered, now: float) -> None:
        """The session manager answered a registration; its snapshot is applied now."""
        self.state = LINK.next(self.state, LinkTrigger.confirmed)
        self.last_turn = now
        self.epoch = message.epoch
        self.send_seq = 0
        self.recv_seq = 0
        self.attempts = 0
        self.heartbeat_interval = message.heartbeat_interval
        self.liveness = message.heartbeat_liveness
        self.last_heard = now
        self.last_sent = now

    def lost(self) -> None:
        """We suspect the link: register again (no-op if not registered)."""
        if LINK.allows(self.state, LinkTrigger.suspect):
            self.state = LINK.next(self.state, LinkTrigger.suspect)

    # ------------------------------------------------------------------ judging the link

    def turn_ended(self, now: float) -> None:
        self.last_turn = now

    def suspicion(self, now: float) -> str | None:
        """Why the link can no longer be trusted now, or None: the session manager silent too
        long, or this process stood still too long to know what it decided meanwhile."""
        if not self.registered:
            return None
        limit = self.silence_limit
        if now - self.last_turn > limit:
            return f"this process stood still for {now - self.last_turn:.1f}s (stopped or starved)"
        if self.silent_for(now) > limit:
            return f"no message from the session manager for {self.silent_for(now):.1f}s"
        return None

    def on_tick(self, now: float) -> tuple[TickAction, str]:
        """The link's part of the executor manager's periodic tick: register again if the link
        is suspected now (with why), else a heartbeat if one is due, else nothing."""
        if why := self.suspicion(now):
            return TickAction.rejoin, why
        if self.heartbeat_due(now):
            return TickAction.heartbeat, ""
        return TickAction.nothing, ""

    def may_start(self, now: float) -> bool:
        """May a task be handed to an instance now? Only on a link the session manager has
        confirmed and that we do not suspect: otherwise it may have given the task to another
        node, or put it back to Pending, and the start would run it twice."""
        return self.registered and self.suspicion(now) is None

    def register_on_connect(self, unanswered: bool) -> bool:
        """A connection to the session manager just came up: register on it at once (no
        backoff) if we are registering and no registration is waiting for an answer on it."""
        return not self.registered and not unanswered

    def connection_up(self, ups_before: int, unanswered: bool) -> ConnectAction:
        """What to do when the backend socket's connection came up, `ups_before` times before
        on that socket. Registered, a second connection means it was lost and ZeroMQ made it
        again: the session manager may have restarted (its heartbeat would only tell us after
        a round trip), so suspect the link and register again at once on a new connection.
        Registering, register now."""
        if self.registered:
            return ConnectAction.rejoin if ups_before > 0 else ConnectAction.nothing
        return ConnectAction.register if self.register_on_connect(unanswered) else ConnectAction.nothing

    # ------------------------------------------------------------------ incoming

    def accept(self, epoch: int, seq: int, ack: int, now: float) -> str | None:
        """Check an SM message's epoch and seq; None if in order, else why it is not."""
        if epoch != self.epoch:
            return f"message of epoch {epoch}, ours is {self.epoch}"
        if seq != self.recv_seq + 1:
            return f"expected seq {self.recv_seq + 1}, got {seq}"
        self.recv_seq = seq
        self.last_heard = now
        self.acknowledged(ack)
        return None

    def acknowledged(self, ack: int) -> None:
        self.ack = max(self.ack, ack)
        unacked = self.unacked
        while unacked and 0 < unacked[0][0] <= ack:
            unacked.popleft()

    def silent_for(self, now: float) -> float:
        return now - self.last_heard

    @property
    def silence_limit(self) -> float:
        return self.heartbeat_interval * self.liveness

    # ------------------------------------------------------------------ outgoing

    def next_seq(self, now: float) -> int:
        self.send_seq += 1
        self.last_sent = now
        return self.send_seq

    def heartbeat_due(self, now: float) -> bool:
        return self.registered and now - self.last_sent >= self.heartbeat_interval

    def keep(self, seq: int, completions: list[be.TaskCompleted]) -> None:
        if completions:
            self.unacked.append((seq, completions))

    def kept(self) -> list[be.TaskCompleted]:
        """The completions kept (not acknowledged yet), in order."""
        return [c for _, frame in self.unacked for c in frame]

    def take_for_resend(self, wanted: set[tuple[str, int, int]]) -> list[be.TaskCompleted]:
        """After a registration: the kept completions whose task the snapshot still lists on
        that executor (the others were recorded already or given to another executor)."""
        kept = self.kept()
        resend = [c for c in kept if (c.executor_id, c.task_id, c.attempt) in wanted]
        #: the completions just given up: recorded already, or their task was retried elsewhere
        self.not_resent = [c for c in kept if (c.executor_id, c.task_id, c.attempt) not in wanted]
        self.unacked.clear()
        self.ack = 0
        return resend
