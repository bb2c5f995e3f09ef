"""How the executor manager shows itself on the backend (DESIGN 6a), against a fake session
manager: a secret per process, a new random routing id per connection, a new connection for
each registration after a lost link or an unanswered try.

What would break: a routing id derived from the public incarnation (anyone who reads ListNodes
could claim it); the same id reused after the link was lost (the backend ROUTER, without
handover, would ignore the reconnected node while it still holds the old connection); a
registration that never reaches a session manager because its connection died silently (ZMTP
no longer watches it); a goodbye or registration without the secret (the session manager could
not tell this process from a forger after a restart).
"""

from __future__ import annotations

import pytest

from protocol import backend as be
from protocol.errors import ErrorCode
from tests.support.daemons import ExecutorManagerProcess
from tests.support.fake_backend import FakeSessionManager
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def next_registration(sm: FakeSessionManager, timeout: float = 10.0) -> tuple[bytes, be.RegisterNode]:
    """The next RegisterNode (unanswered) and the routing id it came from."""

    def registering() -> tuple[bytes, be.RegisterNode] | None:
        message = sm.recv(0.1)
        return (sm.peer, message) if isinstance(message, be.RegisterNode) else None

    return wait_for("a RegisterNode", registering, timeout, interval=0)


def test_a_lost_link_is_registered_again_on_a_new_connection_with_the_same_secret(
    sm: FakeSessionManager, em: ExecutorManagerProcess
) -> None:
    """Breaks if the executor manager reuses its routing id after a lost link, derives it from its incarnation,
    logs its secret, or changes incarnation or secret on the way."""
    first = sm.register()
    first_peer = sm.peer
    assert len(first.secret) >= 40
    assert first.secret not in em.log()
    assert first.incarnation.encode() not in first_peer
    sm.send(be.Error(code=ErrorCode.Reregister, message="stale"))
    again = sm.register()
    assert sm.peer != first_peer
    assert (again.incarnation, again.secret) == (first.incarnation, first.secret)
    # It took the registration: it heartbeats.
    wait_for("a heartbeat after the registration", lambda: isinstance(sm.recv(0.1), be.Heartbeat), 10, interval=0)
    em.stop()
    goodbye = sm.wait_message(be.Goodbye)
    assert (goodbye.incarnation, goodbye.secret) == (first.incarnation, first.secret)


def test_an_unanswered_registration_is_tried_again_on_a_new_connection(
    sm: FakeSessionManager, em: ExecutorManagerProcess
) -> None:
    """Breaks if an unanswered registration is retried on the same connection (a dead one would never reach a
    session manager)."""
    peers = [next_registration(sm)[0] for _ in range(3)]
    assert len(set(peers)) == 3, peers
