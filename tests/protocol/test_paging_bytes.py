"""Frozen bytes of the paging fields (`ListTasks{cursor, page_size}`, `TasksReply{next_cursor}`,
`TaskUpdates{more}`): the new form as scripted clients see it, and the old form (without the
fields) still decoding to their defaults. What would break: a client written from PROTOCOL.md
before paging, or one written from it now."""

from __future__ import annotations

import msgspec
import pytest

from protocol import frontend as fe
from protocol.codec import HEADER, client_request_codec, encode, server_reply_codec
from protocol.types import Task, TaskState

pytestmark = pytest.mark.timeout(10)

LIST_TASKS = bytes.fromhex(
    "86a474797065a94c6973745461736b73aa73657373696f6e5f6964a27331ac696e636c7564655f64617461c2"
    "a6637572736f7205a9706167655f73697a6564aa726571756573745f696402"
)
TASKS_REPLY = bytes.fromhex(
    "84a474797065aa5461736b735265706c79a57461736b739183a2696405aa73657373696f6e5f6964a27331"
    "a57374617465a750656e64696e67ab6e6578745f637572736f7206aa726571756573745f696402"
)
TASK_UPDATES = bytes.fromhex("84a474797065ab5461736b55706461746573a57461736b7390a46d6f7265c3aa726571756573745f696403")


def test_the_new_fields_travel_as_documented() -> None:
    """PROTOCOL.md shows these maps; a change of name or type breaks scripted clients."""
    request = fe.ListTasks(session_id="s1", include_data=False, cursor=5, page_size=100, request_id=2)
    assert encode(request) == [HEADER, LIST_TASKS]
    assert msgspec.msgpack.decode(LIST_TASKS) == {
        "type": "ListTasks",
        "session_id": "s1",
        "include_data": False,
        "cursor": 5,
        "page_size": 100,
        "request_id": 2,
    }
    reply = fe.TasksReply(tasks=[Task(id=5, session_id="s1", state=TaskState.Pending)], next_cursor=6, request_id=2)
    assert encode(reply) == [HEADER, TASKS_REPLY]
    assert encode(fe.TaskUpdates(tasks=[], more=True, request_id=3)) == [HEADER, TASK_UPDATES]
    assert client_request_codec().decode([HEADER, LIST_TASKS]) == request
    assert server_reply_codec().decode([HEADER, TASKS_REPLY]) == reply


def test_the_old_forms_decode_with_the_defaults() -> None:
    """Messages without the paging fields (older clients and servers) mean: the first page,
    the server's page size, no next page, no more pages of this update."""
    old_request = msgspec.msgpack.encode({"type": "ListTasks", "session_id": "s1", "request_id": 1})
    assert client_request_codec().decode([HEADER, old_request]) == fe.ListTasks(
        session_id="s1", request_id=1, cursor=0, page_size=0
    )
    task = {"id": 1, "session_id": "s1", "state": "Succeed"}
    old_reply = msgspec.msgpack.encode({"type": "TasksReply", "tasks": [task], "request_id": 1})
    decoded = server_reply_codec().decode([HEADER, old_reply])
    assert isinstance(decoded, fe.TasksReply)
    assert decoded.next_cursor == 0
    old_push = msgspec.msgpack.encode({"type": "TaskUpdates", "tasks": [task], "request_id": 1})
    pushed = server_reply_codec().decode([HEADER, old_push])
    assert isinstance(pushed, fe.TaskUpdates)
    assert pushed.more is False
