"""The instance window: which of an executor's tasks its instance holds, how the results that
come back are matched to them, and which tasks are blamed when the instance dies.

Rules: the instance runs the tasks of its window in order and reports results in order, so
when it dies the oldest task without a result is taken as the one it was running (its retry
is counted) and the others come back unstarted (spared). A spared task becomes a suspect; a
suspect in flight at another death is blamed too, and while a suspect is near the window is
one task. Pure bookkeeping on `LocalExecutor` and the set of suspects: no sockets, no clock
(times come in as arguments), no reports sent; the core (core.py) decides with it.
"""

from __future__ import annotations

import itertools
import logging

from flamed.executor_manager.executors import LocalExecutor
from protocol import backend as be
from protocol import instance as im
from protocol.types import TaskState

log = logging.getLogger("flamed.executor_manager")

#: Most tasks handed to an instance of fast tasks at once: the running one and the next ones at
#: hand, sent in one `InvokeTasks` and topped up (again in one message) once the instance holds
#: half of them, so a busy instance never waits a round trip for work and the cost of a send is
#: shared by many tasks. The instance runs them in order and reports results in order,
#: so when it dies the oldest task without a result is taken as the one it was running (its
#: retry is counted); the others come back unstarted. A result sent just before the death can
#: be lost with the process, so an innocent task may be blamed: a task that comes back
#: unstarted from one death and is again in flight at another is blamed too (`suspects`), so a
#: task that kills its instance at once cannot loop forever uncounted. 128, with the session
#: manager's default `dispatch_depth` of 128 (129 tasks per executor between it and the
#: instance): a message carries about 64 tasks each way (21 with 32 and 64); each message costs
#: the executor manager and the instance a send, a wake-up and a decode (issue 21: CPU per
#: task). At most 128 x FAST_TASK = 0.64 s of work waits on an instance (a drain lets it finish).
INSTANCE_WINDOW = 128
#: The window until the instance's tasks are known to be fast (take at most FAST_TASK seconds
#: on average): the running task and the next. For slower tasks a deep window saves next to
#: nothing, and it would hold tasks that a graceful drain must wait for (queued tasks are handed
#: back unstarted; tasks on an instance must finish).
SLOW_WINDOW = 2
FAST_TASK = 0.005
#: The window once the tasks are known to be long (LONG_TASK seconds or more on average): the
#: running task only. The round trip to fetch the next one (under a millisecond) is then a
#: fraction of a percent, and a task not yet on the instance can still be recalled for another
#: executor or handed back at once by a drain.
LONG_WINDOW = 1
LONG_TASK = 0.1
#: The window while a suspect is in flight or queued: one task at a time, its result back
#: before the next is sent, so the next death is blamed on exactly the task that was running.
#: A deep window with batched results would let an instance die holding several unsent
#: results; the oldest of them, innocent, would be blamed while the culprit is spared.
SUSPECT_WINDOW = 1
#: Suspects kept at most; the set is cleared when it is full.
MAX_SUSPECTS = 100_000

#: (session, task) spared at an instance death
Suspects = set[tuple[str, int]]


def take_batch(executor: LocalExecutor, suspects: Suspects, now: float) -> list[be.TaskAssignment]:
    """The tasks to send the instance now, moved from the queue to `in_flight`: its window
    topped up once it holds half of it or fewer (INSTANCE_WINDOW for fast tasks, LONG_WINDOW
    for long ones, else SLOW_WINDOW, and SUSPECT_WINDOW while a suspect is near). Empty: send
    nothing."""
    if not executor.queue:
        return []
    held = len(executor.in_flight)
    if not held:
        executor.paced_at = now
    if suspects and _near_suspect(executor, suspects):
        window = SUSPECT_WINDOW
    elif executor.pace is not None and executor.pace <= FAST_TASK:
        window = INSTANCE_WINDOW
    elif executor.pace is not None and executor.pace >= LONG_TASK:
        window = LONG_WINDOW
    else:
        window = SLOW_WINDOW
    if held > window // 2:
        return []
    batch = [executor.queue.popleft() for _ in range(min(window - held, len(executor.queue)))]
    executor.in_flight.extend(batch)
    return batch


def withdraw(executor: LocalExecutor) -> list[be.TaskKey]:
    """The instance's running task waits for a task of its own session (`TaskWaiting`): every
    task held behind it, on the instance or queued, is taken back (to be handed back to the
    session manager unstarted); the running one stays in flight."""
    behind = list(itertools.islice(executor.in_flight, 1, None))
    while len(executor.in_flight) > 1:
        executor.in_flight.pop()
    behind.extend(executor.queue)
    executor.queue.clear()
    return [be.TaskKey(task_id=t.task_id, attempt=t.attempt) for t in behind]


def _near_suspect(executor: LocalExecutor, suspects: Suspects) -> bool:
    """A suspect is in flight or among the next INSTANCE_WINDOW queued tasks."""
    session_id = executor.session_id or ""
    if any((session_id, t.task_id) in suspects for t in executor.in_flight):
        return True
    return any((session_id, t.task_id) in suspects for t in itertools.islice(executor.queue, INSTANCE_WINDOW))


def take_results(
    executor: LocalExecutor, session_id: str, results: list[im.TaskOutcome], suspects: Suspects, now: float
) -> list[be.TaskCompleted]:
    """Match `results` to the tasks in flight (in order, else by key; a result for a task not
    in flight is dropped), update the instance's pace and clear the suspects that completed.
    Returns the completions to report."""
    if results:
        pace = (now - executor.paced_at) / len(results)
        executor.pace = pace if executor.pace is None else (executor.pace + pace) / 2
        executor.paced_at = now
    in_flight = executor.in_flight
    completed = []
    for outcome in results:
        key = (outcome.task_id, outcome.attempt)
        if in_flight and (in_flight[0].task_id, in_flight[0].attempt) == key:
            in_flight.popleft()
        else:
            match = [t for t in in_flight if (t.task_id, t.attempt) == key]
            if not match:
                log.debug("executor %s: result for task %d not in flight; dropped", executor.id, outcome.task_id)
                continue
            in_flight.remove(match[0])
        if suspects:
            suspects.discard((session_id, outcome.task_id))
        if executor.waiting == key:
            executor.waiting = None
        completed.append(
            be.TaskCompleted(
                executor_id=executor.id,
                session_id=session_id,
                task_id=outcome.task_id,
                attempt=outcome.attempt,
                state=TaskState.Succeed if outcome.ok else TaskState.Failed,
                output=outcome.output,
                message=outcome.message,
            )
        )
    return completed


def blame(executor: LocalExecutor, suspects: Suspects) -> tuple[str, list[be.TaskAssignment]]:
    """Which in-flight tasks of a dead instance count as started; returns the reason
    fragment and the tasks spared (returned unstarted), which become suspects."""
    if not executor.in_flight:
        return "while idle", []
    session_id = executor.session_id or ""
    blamed = [executor.in_flight[0]]
    spared = []
    for task in list(executor.in_flight)[1:]:
        key = (session_id, task.task_id)
        if key in suspects:
            blamed.append(task)
        else:
            spared.append(task)
    for task in spared:
        if len(suspects) >= MAX_SUSPECTS:
            suspects.clear()
        suspects.add((session_id, task.task_id))
    ids = ", ".join(str(t.task_id) for t in blamed)
    return f"while running task {ids}" if len(blamed) == 1 else f"while running one of tasks {ids}", spared


def fail_running(executor: LocalExecutor, suspects: Suspects, reason: str) -> list[be.TaskCompleted]:
    """An instance killed for misbehaving (conduct.py): the tasks `blame` holds it was running
    fail with `reason`; the others go back to the front of the queue, unstarted. Returns the
    failures to report."""
    session_id = executor.session_id
    if session_id is None or not executor.in_flight:
        return []
    _, spared = blame(executor, suspects)
    spared_keys = {(t.task_id, t.attempt) for t in spared}
    failed = [
        be.TaskCompleted(
            executor_id=executor.id,
            session_id=session_id,
            task_id=task.task_id,
            attempt=task.attempt,
            state=TaskState.Failed,
            message=reason,
        )
        for task in executor.in_flight
        if (task.task_id, task.attempt) not in spared_keys
    ]
    executor.in_flight.clear()
    executor.queue.extendleft(reversed(spared))
    return failed
