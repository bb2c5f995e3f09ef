"""`flamed.client.progress`: waits for every future, draws a bar only when asked or on a terminal."""

from __future__ import annotations

import io
import threading
from concurrent.futures import Future

import pytest

from flamed.client import FlameError, FlameErrorCode, progress

pytestmark = pytest.mark.timeout(30)


def finish_later(futures: list[Future[bytes | None]], fail: set[int]) -> threading.Thread:
    def work() -> None:
        for index, future in enumerate(futures):
            if index in fail:
                future.set_exception(FlameError(FlameErrorCode.INTERNAL, "boom"))
            else:
                future.set_result(b"ok")

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def test_waits_for_all_and_counts_failures_on_the_bar() -> None:
    """The bar ends at N/N with the failures counted; the futures keep their results."""
    futures: list[Future[bytes | None]] = [Future() for _ in range(5)]
    out = io.StringIO()
    thread = finish_later(futures, fail={1, 3})
    done = progress(futures, description="demo", show=True, file=out, refresh=0.01)
    thread.join()
    assert all(f.done() for f in done)
    assert [f.exception() is None for f in done] == [True, False, True, False, True]
    text = out.getvalue()
    assert "5/5" in text, text
    assert "2 failed" in text, text
    assert "demo" in text, text


def test_draws_nothing_off_a_terminal_unless_asked() -> None:
    """A pipe or a log file gets no bar by default; zero futures return at once."""
    futures: list[Future[bytes | None]] = [Future() for _ in range(3)]
    out = io.StringIO()
    thread = finish_later(futures, fail=set())
    progress(futures, file=out)
    thread.join()
    assert out.getvalue() == ""
    assert progress([], show=True, file=out) == []
