"""Pages of tasks: how `ListTasks` replies and `TaskUpdates` pushes are cut so that no message
is huge, whatever the session's size or its tasks' data.

A page takes tasks in the order given until it holds `max_tasks` of them or the next one would
take it past `max_bytes` as encoded; it always holds at least one task (so a task whose data
alone is bigger makes a page of its own, that big). Sizes are upper bounds computed from the
views without encoding them: MessagePack keys and headers and integers at their longest, plus
the data and strings. Pure functions; no state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from protocol.types import Task

#: A `Task` map without its data and strings: 12 keys (110 bytes), value headers and integers
#: at their longest (9 bytes each), the state name.
TASK_OVERHEAD = 200
#: An `Event` map without its message.
EVENT_OVERHEAD = 56
#: The reply around the tasks: type, request id, next cursor or more flag, array header.
REPLY_OVERHEAD = 96


def task_bytes(task: Task) -> int:
    """An upper bound of `task`'s encoded size."""
    size = TASK_OVERHEAD + len(task.session_id)
    if task.input:
        size += len(task.input)
    if task.output:
        size += len(task.output)
    if task.executor_id:
        size += len(task.executor_id.encode())
    if task.message:
        size += len(task.message.encode())
    for event in task.events:
        size += EVENT_OVERHEAD + (len(event.message.encode()) if event.message else 0)
    return size


def page(ids: Iterable[int], view: Callable[[int], Task], max_tasks: int, max_bytes: int) -> tuple[list[Task], int]:
    """The views of the first ids that fit in one page, and an upper bound of the page's
    encoded size (reply included). The caller resumes after the last id of the page."""
    tasks: list[Task] = []
    append = tasks.append
    size = REPLY_OVERHEAD
    # `task_bytes` inlined for the common task (no events): this runs for every task result.
    for task_id in ids:
        task = view(task_id)
        cost = TASK_OVERHEAD + len(task.session_id)
        if task.input:
            cost += len(task.input)
        if task.output:
            cost += len(task.output)
        if task.executor_id or task.message or task.events:
            cost = task_bytes(task)
        if tasks and size + cost > max_bytes:
            break
        append(task)
        size += cost
        if len(tasks) >= max_tasks:
            break
    return tasks, size
