"""The futures of task runs: a `concurrent.futures.Future` that costs less to make.

A plain `Future` builds a `threading.Condition` (a lock, an `RLock` and a deque) when it is
created. A client that runs a million tasks makes a million futures, most of them finished by the
time anyone looks at them, and those conditions were a third of the client's CPU per task and
most of the objects its garbage collector walked (issue 21).

`TaskFuture` makes its condition the first time a thread needs one: to wait for it, to add a
callback, to cancel it, or to take part in `concurrent.futures.wait` / `as_completed`; the lists
of waiters and callbacks come with it (the standard library touches them only while holding the
condition), so a future finished before anyone looks is one object and no list. Until then
the I/O thread completes it under one module-wide lock that also guards the making of
conditions, so a thread that starts waiting either sees the result or owns the condition that the
completion then notifies. Reads of a finished future (`done`, `result`, `exception`) take no lock:
a finished future never changes again.

A thread about to block on the result of a task calls the wait hook first with the task's
session (`set_wait_hook`): in an instance, flamed.service uses it to say that its running task
waits for a task of its own session, so that task is not queued behind the waiting one
(protocol/PROTOCOL.md section 5, `TaskWaiting`). Outside an instance there is no hook.

It stays a `concurrent.futures.Future` in every way a caller can see (isinstance, `wait`,
`as_completed`, callbacks, cancellation); tests/client/test_futures.py checks it against the
standard library's functions under concurrency.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, PENDING
from typing import Any, TypeVar

T = TypeVar("T")

# Guards the moment a TaskFuture gets its condition against a completion without one.
_making = threading.Lock()
_DONE = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED))


#: [0]: called with a session id before a thread blocks on a task of that session (see above)
_wait_hook: list[Callable[[str], None] | None] = [None]


def set_wait_hook(hook: Callable[[str], None] | None) -> None:
    """Call `hook(session_id)` before a thread blocks on the result of a task of `session_id`
    (None: no hook). For flamed.service's instance runner; the hook must be quick and may
    ignore sessions and threads it does not care about."""
    _wait_hook[0] = hook


def before_wait(futures: Iterable[Future[Any]]) -> None:
    """About to block until one of `futures` is done (`concurrent.futures.wait`, `as_completed`):
    tell the wait hook about the sessions of the unfinished task futures among them."""
    hook = _wait_hook[0]
    if hook is None:
        return
    for session_id in {f.session_id for f in futures if isinstance(f, TaskFuture) and not f.done()}:
        if session_id is not None:
            hook(session_id)


class TaskFuture(Future[T]):
    """A `Future` whose `threading.Condition` is made only when a thread needs it."""

    def __init__(self, session_id: str | None = None, run_input: bytes | None = None) -> None:
        # (not the base class's __init__: it would make the condition)
        self.task_id: int | None = None  # set once the task exists (documented on Session.run)
        #: the session of the task (for the wait hook)
        self.session_id = session_id
        #: the input of the `Session.run` this future is the command of, until the I/O thread
        #: takes it (commands.py: a run is queued as its future, with no object of its own)
        self.run_input = run_input
        self._lazy_condition: threading.Condition | None = None
        self._state = PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        # no `_waiters` / `_done_callbacks` yet: made with the condition (see `_condition`)

    @property
    def _condition(self) -> threading.Condition:
        condition = self._lazy_condition
        if condition is None:
            with _making:
                if self._lazy_condition is None:
                    # Every use of these lists in concurrent.futures holds the condition first
                    # (wait, as_completed, add_done_callback, cancel, set_result, ...).
                    self._waiters: list[Any] = []
                    self._done_callbacks: list[Any] = []
                    self._lazy_condition = threading.Condition()
                condition = self._lazy_condition
        return condition

    @_condition.setter
    def _condition(self, condition: threading.Condition) -> None:
        with _making:
            if self._lazy_condition is None:
                self._waiters = []
                self._done_callbacks = []
            self._lazy_condition = condition

    def _complete_alone(self, result: Any, exception: BaseException | None) -> bool:
        """Finish the future here if no thread holds its condition yet; False if one may."""
        with _making:
            if self._lazy_condition is not None:
                return False
            if self._state in _DONE:
                raise InvalidStateError(f"{self._state}: <TaskFuture at {id(self):#x}>")  # not repr: it takes the lock
            self._result = result
            self._exception = exception
            self._state = FINISHED
        # No condition means no waiter and no callback yet: wait(), as_completed() and
        # add_done_callback() all take the condition first. A callback added from now on sees
        # FINISHED and runs at once.
        return True

    def complete(self, result: Any, exception: BaseException | None = None) -> None:
        """`set_result(result)` (or `set_exception(exception)`) for the I/O thread, which has a
        result for every task it watches: a future already done (its caller cancelled it) is
        left as it is, without raising. The cheap path for a future nobody waits on yet."""
        with _making:
            if self._lazy_condition is None:
                if self._state not in _DONE:
                    self._result = result
                    self._exception = exception
                    self._state = FINISHED
                return
        try:
            if exception is None:
                super().set_result(result)
            else:
                super().set_exception(exception)
        except InvalidStateError:
            pass

    def set_result(self, result: T) -> None:
        if not self._complete_alone(result, None):
            super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        if exception is None or not self._complete_alone(None, exception):
            super().set_exception(exception)

    def done(self) -> bool:
        return self._state in _DONE

    def result(self, timeout: float | None = None) -> T:
        if self._state == FINISHED:
            if self._exception is not None:
                raise self._exception
            result: T = self._result
            return result
        self._before_wait()
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state == FINISHED:
            return self._exception
        self._before_wait()
        return super().exception(timeout)

    def _before_wait(self) -> None:
        hook = _wait_hook[0]
        if hook is not None and self.session_id is not None and self._state not in _DONE:
            hook(self.session_id)
