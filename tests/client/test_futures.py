"""TaskFuture, the SDK's cheaper future of a task run, behaves as a `concurrent.futures.Future`
for every caller: the standard library's `wait` and `as_completed`, callbacks, cancellation,
and a completion racing a thread that starts waiting."""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, InvalidStateError, as_completed, wait

import pytest

from flamed.client.futures import TaskFuture

pytestmark = pytest.mark.timeout(30)


def test_a_future_completed_before_anyone_looks_never_makes_a_condition() -> None:
    """The point of TaskFuture: a finished future read with done()/result()/exception() costs
    no Condition (a third of the client's CPU per task when every future made one)."""
    ok: TaskFuture[bytes] = TaskFuture()
    failed: TaskFuture[bytes] = TaskFuture()
    ok.set_result(b"out")
    failed.set_exception(ValueError("boom"))
    assert ok.done()
    assert ok.result() == b"out"
    assert ok.exception() is None
    assert failed.done()
    assert isinstance(failed.exception(), ValueError)
    with pytest.raises(ValueError, match="boom"):
        failed.result()
    assert ok._lazy_condition is None
    assert failed._lazy_condition is None
    assert isinstance(ok, Future)


def test_completing_twice_or_after_cancel_is_refused_as_for_a_plain_future() -> None:
    """set_result on a finished or cancelled future raises InvalidStateError (the SDK's
    set_result helper relies on it to ignore a cancelled run)."""
    future: TaskFuture[int] = TaskFuture()
    future.set_result(1)
    with pytest.raises(InvalidStateError):
        future.set_result(2)
    cancelled: TaskFuture[int] = TaskFuture()
    assert cancelled.cancel()
    assert cancelled.cancelled()
    assert cancelled.done()
    with pytest.raises(InvalidStateError):
        cancelled.set_result(3)


def test_callbacks_run_once_whether_added_before_or_after_the_result() -> None:
    """A callback added before completion runs at completion, one added after runs at once."""
    seen: list[str] = []
    future: TaskFuture[str] = TaskFuture()
    future.add_done_callback(lambda f: seen.append(f"before:{f.result()}"))
    future.set_result("x")
    future.add_done_callback(lambda f: seen.append(f"after:{f.result()}"))
    assert seen == ["before:x", "after:x"]


def test_a_waiting_thread_is_woken_by_a_completion_from_another_thread() -> None:
    """result(timeout) in one thread returns what another thread sets later; without the
    notify of the slow path it would wait the whole timeout and raise TimeoutError."""
    future: TaskFuture[str] = TaskFuture()
    started = threading.Event()
    got: list[str] = []

    def waiter() -> None:
        started.set()
        got.append(future.result(timeout=20))

    thread = threading.Thread(target=waiter)
    thread.start()
    started.wait(5)
    future.set_result("done")
    thread.join(20)
    assert got == ["done"]


def test_the_standard_librarys_wait_and_as_completed_see_every_completion() -> None:
    """concurrent.futures.wait and as_completed reach into a future's condition and waiters;
    a TaskFuture completed from another thread must wake them."""
    futures: list[TaskFuture[int]] = [TaskFuture() for _ in range(200)]
    first = wait(futures[:1] + futures[1:], timeout=0)
    assert not first.done

    def complete() -> None:
        for i, future in enumerate(futures):
            future.set_result(i)

    thread = threading.Thread(target=complete)
    thread.start()
    done, _ = wait(futures, timeout=20, return_when=FIRST_COMPLETED)
    assert done
    assert sorted(f.result() for f in as_completed(futures, timeout=20)) == list(range(200))
    thread.join(20)


def test_completions_racing_waiters_lose_no_wakeup() -> None:
    """Many futures, a completing thread and two waiting threads racing: every waiter returns
    (a lost wakeup between 'no condition yet' and 'wait on it' would hang to the timeout)."""
    futures: list[TaskFuture[int]] = [TaskFuture() for _ in range(20_000)]
    results: list[list[int]] = [[], []]

    def waiter(slot: int, step: int) -> None:
        results[slot] = [f.result(timeout=20) for f in futures[::step]]

    waiters = [threading.Thread(target=waiter, args=(0, 1)), threading.Thread(target=waiter, args=(1, 7))]
    for thread in waiters:
        thread.start()
    for i, future in enumerate(futures):
        future.set_result(i)
    for thread in waiters:
        thread.join(25)
    assert results[0] == list(range(20_000))
    assert results[1] == list(range(0, 20_000, 7))


def test_a_future_nobody_waited_on_holds_no_lists_of_waiters_or_callbacks() -> None:
    """The waiters and callbacks lists come with the condition: a million finished futures
    held by a caller are a million objects, not three million. Breaks if __init__ makes them
    again, or if a future that does get a condition lacks them."""
    plain: TaskFuture[bytes] = TaskFuture()
    plain.complete(b"out")
    assert "_waiters" not in vars(plain)
    assert "_done_callbacks" not in vars(plain)
    assert plain.result() == b"out"
    seen: list[bytes] = []
    watched: TaskFuture[bytes] = TaskFuture()
    watched.add_done_callback(lambda f: seen.append(f.result()))
    assert wait([watched], timeout=0).not_done == {watched}
    watched.complete(b"late")
    assert seen == [b"late"]
    assert watched._waiters == []


def test_complete_is_set_result_that_leaves_a_done_future_alone() -> None:
    """`complete` (the I/O thread's path) finishes a pending future with a result or an
    exception, wakes a thread waiting on it, and does nothing to one already done (a cancelled
    run) where set_result would raise."""
    cancelled: TaskFuture[bytes] = TaskFuture()
    assert cancelled.cancel()
    cancelled.complete(b"ignored")
    assert cancelled.cancelled()
    finished: TaskFuture[bytes] = TaskFuture()
    finished.complete(b"first")
    finished.complete(b"second")
    assert finished.result() == b"first"
    failed: TaskFuture[bytes] = TaskFuture()
    failed.complete(None, ValueError("boom"))
    with pytest.raises(ValueError, match="boom"):
        failed.result()
    waited: TaskFuture[bytes] = TaskFuture()
    got: list[bytes] = []
    thread = threading.Thread(target=lambda: got.append(waited.result(timeout=20)))
    thread.start()
    deadline = time.monotonic() + 10
    while waited._lazy_condition is None and time.monotonic() < deadline:
        time.sleep(0.001)  # until the waiter holds the condition: the slow path is the one tested
    waited.complete(b"woken")
    thread.join(20)
    assert got == [b"woken"]
