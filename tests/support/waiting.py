"""The one way a test waits: poll a condition until it holds, or fail after a deadline.

A sleep standing in for a condition makes a test slow when the machine is idle and flaky when
it is loaded; `wait_for` returns as soon as the condition holds and, when it never does, says
what it waited for and the last value it saw.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05) -> T:
    """Poll `probe` until it returns something truthy and return that; fail with `what` after
    `timeout` seconds (monotonic clock), quoting the last value `probe` returned."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
