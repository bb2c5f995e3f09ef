"""`progress(futures)`: wait for many task futures with a progress bar (opt-in), as Dask's
`distributed.progress` does for its futures.

The bar is drawn on a terminal only (or when `show=True`): piped output and logs stay clean.
It counts futures as they finish, splitting succeeded from failed, and never changes what a
future holds. It uses `rich`, which the dashboard's Textual already brings along.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from typing import IO, Any, TypeVar

F = TypeVar("F", bound="Future[Any]")


class Tally:
    """Finished futures counted from their done callbacks (any thread)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.succeeded = 0
        self.failed = 0
        self._lock = threading.Lock()
        self.all_done = threading.Event()
        if total == 0:
            self.all_done.set()

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    def count(self, future: Future[Any]) -> None:
        failed = future.cancelled() or future.exception() is not None
        with self._lock:
            if failed:
                self.failed += 1
            else:
                self.succeeded += 1
            if self.done >= self.total:
                self.all_done.set()


def progress(
    futures: Iterable[F],
    *,
    description: str = "tasks",
    show: bool | None = None,
    file: IO[str] | None = None,
    refresh: float = 0.1,
) -> list[F]:
    """Wait until every future is done, drawing a bar on `file` (default stderr) while it does
    when `show` is True, or when `show` is None and `file` is a terminal. Returns the futures
    (their results and errors are untouched: read them as usual)."""
    items = list(futures)
    stream = file if file is not None else sys.stderr
    tally = Tally(len(items))
    for future in items:
        future.add_done_callback(tally.count)
    if show is None:
        show = bool(getattr(stream, "isatty", lambda: False)())
    if not show:
        tally.all_done.wait()
        return items
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(file=stream, force_terminal=True if show else None)
    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[red]{task.fields[failed]} failed"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=tally.total, failed=0)
        while not tally.all_done.wait(refresh):
            bar.update(task, completed=tally.done, failed=tally.failed)
        bar.update(task, completed=tally.done, failed=tally.failed)
    return items
