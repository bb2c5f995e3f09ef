"""The executor manager's link judged with a fake clock (issue 16, holes 2 and 3): when it is
suspected, that no task starts from then until the session manager confirms the node again,
and that a suspected link registers again at once on a live connection. Pure: milliseconds."""

from __future__ import annotations

import pytest

from flamed.core.machines import InvalidTransition
from flamed.executor_manager.link import BackendLink, ConnectAction, TickAction
from flamed.executor_manager.machines import LINK, LinkState, LinkTrigger
from protocol import backend as be

pytestmark = pytest.mark.timeout(10)


def confirmed(now: float, interval: float = 0.5, liveness: int = 4) -> BackendLink:
    link = BackendLink(0.2, 1.0, interval, liveness)
    link.registered_with(
        be.Registered(epoch=3, executors=[], heartbeat_interval=interval, heartbeat_liveness=liveness), now
    )
    return link


def test_tasks_start_only_on_a_confirmed_link() -> None:
    """Breaks if an executor manager that never registered (or is registering again) may hand
    tasks to its instances: the session manager has not confirmed it holds them."""
    link = BackendLink(0.2, 1.0, 0.5, 4)
    assert link.state is LinkState.Registering
    assert not link.may_start(0.0)
    link.registered_with(be.Registered(epoch=1, executors=[], heartbeat_interval=0.5, heartbeat_liveness=4), 5.0)
    assert link.may_start(5.1)
    link.lost()
    assert link.state is LinkState.Registering
    assert not link.may_start(5.2)


def test_a_stand_still_longer_than_detection_stops_task_starts_at_once() -> None:
    """Hole 2. Breaks if, after this process stood still (SIGSTOP) longer than detection, the
    first thing it does on resuming (reading an instance's result) may start the next task:
    the session manager may have put it back to Pending meanwhile, so it would run twice. The
    messages it queued before it wrote us off must not make the link look fresh either."""
    link = confirmed(10.0)
    link.turn_ended(10.05)
    assert link.may_start(10.1)
    resumed = 16.0  # stopped at 10.05, for longer than 0.5 s x 4
    link.last_heard = resumed  # a heartbeat it sent before the freeze, read on resuming
    assert not link.may_start(resumed)
    why = link.suspicion(resumed)
    assert why is not None
    assert "stood still for 5.9s" in why


def test_silence_of_the_session_manager_stops_task_starts() -> None:
    """Breaks if a node cut off from the session manager longer than detection keeps feeding
    its instances: the session manager has the node Unknown and will rerun its work."""
    link = confirmed(0.0)
    for t in (0.5, 1.0, 1.5, 2.0):
        link.turn_ended(t)
    assert link.may_start(2.0)
    link.turn_ended(2.1)
    assert not link.may_start(2.1)
    assert link.suspicion(2.1) == "no message from the session manager for 2.1s"


def test_a_short_stall_is_not_a_suspicion() -> None:
    """Breaks if an ordinary slow turn (below detection) stops task starts or re-registers."""
    link = confirmed(0.0)
    link.turn_ended(0.1)
    link.last_heard = 1.5
    assert link.suspicion(1.9) is None
    assert link.may_start(1.9)


def test_a_suspected_link_registers_at_once_on_a_live_connection() -> None:
    """Hole 3. Breaks if a node resumed (or reconnected) shortly before its drain expires waits
    on its registration backoff instead of registering as soon as its new connection is up:
    the drain expires meanwhile and its finished results are dropped and rerun."""
    link = confirmed(0.0)
    assert not link.register_on_connect(unanswered=False)  # registered: nothing to do
    link.lost()
    assert link.register_on_connect(unanswered=False)
    assert not link.register_on_connect(unanswered=True)  # one try in flight on it already
    link.registered_with(be.Registered(epoch=4, executors=[], heartbeat_interval=0.5, heartbeat_liveness=4), 3.0)
    assert link.registered
    assert link.epoch == 4
    assert link.may_start(3.0)


def test_the_link_table_allows_only_its_moves() -> None:
    """Breaks if the link's table lets a suspicion hit a link that is not registered (a bug:
    callers check `allows`), or loses the re-registration path."""
    assert LINK.next(LinkState.Registered, LinkTrigger.suspect) is LinkState.Registering
    assert LINK.next(LinkState.Registering, LinkTrigger.confirmed) is LinkState.Registered
    with pytest.raises(InvalidTransition):
        LINK.next(LinkState.Registering, LinkTrigger.suspect)
    link = BackendLink(0.2, 1.0, 0.5, 4)
    link.lost()  # not registered: ignored, never raises
    assert link.state is LinkState.Registering


def test_a_connection_made_again_while_registered_rejoins_at_once() -> None:
    """Breaks if, when ZeroMQ makes the backend connection again (the session manager died and
    a new one listens), the executor manager waits for a heartbeat round trip to learn it must
    register again, or if the first connection of a socket is taken for a reconnection (a
    spurious re-registration after every registration)."""
    link = confirmed(0.0)
    assert link.connection_up(ups_before=0, unanswered=False) is ConnectAction.nothing
    assert link.connection_up(ups_before=1, unanswered=False) is ConnectAction.rejoin
    link.lost()
    assert link.connection_up(ups_before=0, unanswered=False) is ConnectAction.register
    assert link.connection_up(ups_before=0, unanswered=True) is ConnectAction.nothing


def test_a_fake_clock_walks_a_link_through_heartbeats_a_freeze_and_its_rejoin() -> None:
    """Breaks if the tick stops heartbeating a live link, heartbeats a suspected one instead of
    registering again, or keeps asking to register again once the link is already re-registering."""
    link = confirmed(0.0)
    actions = []
    for step in range(1, 9):  # every 0.25 s for 2 s, the session manager answering each second
        now = step * 0.25
        if step % 4 == 0:
            link.last_heard = now
        action, _ = link.on_tick(now)
        if action is TickAction.heartbeat:
            link.next_seq(now)
        actions.append(action)
        link.turn_ended(now)
    assert actions.count(TickAction.heartbeat) == 4
    assert TickAction.rejoin not in actions
    action, why = link.on_tick(2.0 + 3.0)  # stopped for 3 s
    assert action is TickAction.rejoin
    assert "stood still" in why
    link.lost()
    assert link.on_tick(5.1) == (TickAction.nothing, "")
