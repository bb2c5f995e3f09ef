"""The dispatcher's index of bound executors follows what is bound now, not every session that
ever had an executor: an unbind touches only its session's entry and removes it with the last
executor (in a long soak the index kept one entry per session ever served, and every unbind
walked all of them: throughput fell to a third over ten minutes)."""

from __future__ import annotations

import pytest

from protocol import frontend as fe
from protocol.types import ApplicationSpec, TaskState
from tests.unit.core_harness import Harness

pytestmark = pytest.mark.timeout(30)


def test_sessions_served_and_closed_leave_no_entry_in_the_bound_index() -> None:
    """Breaks if `Dispatcher.bound` keeps an (empty) entry per session once its executors are
    unbound, so that its size grows with the sessions ever served."""
    h = Harness()
    h.request(fe.RegisterApplication(name="flmping", spec=ApplicationSpec(command="true")))
    h.add_node("n1", 2)
    for n in range(12):
        session_id = f"s{n}"
        h.session(session_id)
        h.tasks(session_id, [b"x"] * 4)
        h.advance(0.5, step=0.05)
        assert all(t.state is TaskState.Succeed for t in h.state.sessions[session_id].tasks)
        assert isinstance(h.request(fe.CloseSession(session_id=session_id)), fe.SessionReply)
        h.advance(1.0, step=0.05)
    dispatcher = h.ctl.dispatcher
    bound_now = {e.session_id for e in h.state.executors.values() if e.session_id is not None}
    assert set(dispatcher.bound) <= bound_now, (sorted(dispatcher.bound), sorted(bound_now))
    assert all(dispatcher.bound.values()), "no empty entry is kept"
