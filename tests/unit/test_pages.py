"""Pages of tasks (`flamed.core.pages`): the size bound they are cut by must really bound the
encoded message. What would break: an estimate below the real size lets one ListTasks reply or
TaskUpdates push grow past `limits.max_page_bytes`, which is what a client that never reads
makes the session manager hold (times the frontend's SNDHWM)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flamed.core import pages
from protocol import frontend as fe
from protocol.types import Event, Task, TaskState

pytestmark = pytest.mark.timeout(60)

ENCODE = msgspec.msgpack.Encoder().encode
INT = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TEXT = st.text(max_size=300)

events = st.builds(Event, code=INT, message=st.none() | TEXT, creation_time=INT)
tasks = st.builds(
    Task,
    id=INT,
    session_id=st.text(alphabet="abcxyz0123456789-_.", min_size=1, max_size=253),
    state=st.sampled_from(TaskState),
    input=st.none() | st.binary(max_size=2000),
    output=st.none() | st.binary(max_size=2000),
    creation_time=INT,
    completion_time=st.none() | INT,
    attempt=INT,
    retry_count=INT,
    executor_id=st.none() | TEXT,
    message=st.none() | TEXT,
    events=st.lists(events, max_size=5),
)


@settings(max_examples=300, deadline=None)
@given(tasks)
@example(  # an executor id counted in characters, not bytes, was under-counted (found by this test)
    Task(id=0, session_id="0", state=TaskState.Pending, creation_time=0, executor_id="\u2603" * 300)
)
def test_task_bytes_is_an_upper_bound_of_the_encoded_task(task: Task) -> None:
    """Breaks if any field (a non-ASCII message, a large integer, an event) is under-counted."""
    assert len(ENCODE(task)) <= pages.task_bytes(task)


@settings(max_examples=100, deadline=None)
@given(st.lists(tasks, min_size=1, max_size=40), st.integers(min_value=1, max_value=50), st.integers(1, 20_000))
def test_a_page_stays_within_its_maxima_and_holds_at_least_one_task(
    given_tasks: list[Task], max_tasks: int, max_bytes: int
) -> None:
    """A page is never over `max_tasks`, never over `max_bytes` encoded unless it is a single
    task (which must still go out), and it takes tasks in order from the start."""
    page, size = pages.page(range(len(given_tasks)), given_tasks.__getitem__, max_tasks, max_bytes)
    assert 1 <= len(page) <= max_tasks
    assert page == given_tasks[: len(page)]
    for reply in (
        fe.TasksReply(tasks=page, next_cursor=2**63 - 1, request_id=2**63 - 1),
        fe.TaskUpdates(tasks=page, more=True, request_id=2**63 - 1),
    ):
        encoded = len(ENCODE(reply))
        assert encoded <= size
        if len(page) > 1:
            assert encoded <= max_bytes


def test_a_task_bigger_than_a_page_makes_a_page_of_its_own() -> None:
    """Breaks if a big task is skipped (lost from a listing) or blocks the pages after it."""
    big = [Task(id=i, session_id="s", state=TaskState.Pending, input=b"x" * (5000 if i == 2 else 10)) for i in range(5)]
    taken, start = [], 0
    while start < len(big):
        page, _ = pages.page(range(start, len(big)), big.__getitem__, 100, 1000)
        taken.append([t.id for t in page])
        start += len(page)
    assert taken == [[0, 1], [2], [3, 4]]
