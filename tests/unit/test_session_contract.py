"""PROTOCOL.md and the session manager agree on the points a client written from the spec alone
had to guess (issue: a client in another language passed 95 of 98 checks). One test per point.

Through the pure controller; nothing here opens a socket.
"""

from __future__ import annotations

import msgspec
import pytest

from protocol import frontend as fe
from protocol.errors import ErrorCode
from protocol.types import ApplicationSpec, Session, SessionSpec, SessionState
from tests.unit.core_harness import Harness

pytestmark = pytest.mark.timeout(30)


def cluster() -> Harness:
    h = Harness()
    h.request(fe.RegisterApplication(name="app", spec=ApplicationSpec(command="true")))
    return h


def error(reply: fe.Message) -> fe.Error:
    assert isinstance(reply, fe.Error), reply
    return reply


def test_close_with_running_tasks_is_refused_with_invalid_state() -> None:
    """As Flame (and now as PROTOCOL.md says): wait for running tasks, then close."""
    h = cluster()
    node = h.add_node("n1", 1)
    node.auto_run = False
    h.session("s1", application="app")
    h.tasks("s1", [b"x"])
    h.advance(0.5)
    refused = error(h.request(fe.CloseSession(session_id="s1")))
    assert refused.code is ErrorCode.InvalidState
    assert "running" in refused.message
    node.auto_run = True
    h.advance(0.5)
    closed = h.request(fe.CloseSession(session_id="s1"))
    assert isinstance(closed, fe.SessionReply)
    assert closed.session.state is SessionState.Closed
    again = h.request(fe.CloseSession(session_id="s1"))
    assert isinstance(again, fe.SessionReply)
    assert again.session.completion_time == closed.session.completion_time


def test_open_session_does_not_compare_common_data() -> None:
    """Flame compares application, instances, priority and resreq, not the data: an open with
    other common data gets the session as it is."""
    h = cluster()
    h.request(fe.CreateSession(session_id="s1", spec=SessionSpec(application="app", common_data=b"first")))
    reply = h.request(fe.OpenSession(session_id="s1", spec=SessionSpec(application="app", common_data=b"other")))
    assert isinstance(reply, fe.SessionReply)
    assert reply.session.spec.common_data == b"first"
    mismatch = error(h.request(fe.OpenSession(session_id="s1", spec=SessionSpec(application="app", priority=3))))
    assert mismatch.code is ErrorCode.InvalidArgument
    assert "priority differs" in mismatch.message


def test_open_of_a_closed_session_is_invalid_argument() -> None:
    """Flame's code for it; the error table lists it under InvalidArgument."""
    h = cluster()
    h.session("s1", application="app")
    h.request(fe.CloseSession(session_id="s1"))
    refused = error(h.request(fe.OpenSession(session_id="s1")))
    assert refused.code is ErrorCode.InvalidArgument
    assert "not open" in refused.message


def test_hello_of_another_version_is_version_mismatch() -> None:
    """Breaks if a Hello of another protocol version is accepted instead of answered with VersionMismatch."""
    h = cluster()
    refused = error(h.request(fe.Hello(protocol_version=2, client="future")))
    assert refused.code is ErrorCode.VersionMismatch


def test_defaults_are_left_out_on_the_wire() -> None:
    """What the 'Defaults are left out' paragraph promises a hand-written reader."""
    welcome = msgspec.msgpack.decode(msgspec.msgpack.encode(fe.Welcome(protocol_version=1, server_version="x")))
    assert welcome == {"type": "Welcome", "protocol_version": 1, "server_version": "x"}
    session = Session(id="s", spec=SessionSpec(application="a"), state=SessionState.Open, creation_time=1)
    encoded = msgspec.msgpack.decode(msgspec.msgpack.encode(session))
    assert not {"pending", "running", "succeed", "failed", "cancelled", "events"} & set(encoded)


def test_pushes_carry_the_request_id_that_started_them() -> None:
    """A watch's pushes and a subscription's updates carry the id of their request."""
    h = cluster()
    h.add_node("n1", 1)
    h.session("s1", application="app")
    h.tasks("s1", [b"x"])
    h.ctl.handle_client(b"watcher", fe.WatchTasks(request_id=4242, session_id="s1"), h.now())
    h.ctl.handle_client(b"watcher", fe.SubscribeCluster(request_id=77), h.now())
    h.advance(2.0)
    pushes = h.replies[b"watcher"]
    assert {p.request_id for p in pushes if isinstance(p, fe.TaskUpdates)} == {4242}
    assert {p.request_id for p in pushes if isinstance(p, fe.ClusterSnapshot | fe.ClusterUpdates)} == {77}
