"""Rules the suite checks about its own tests while they run.

A test that starts a process (a daemon, an instance, a CLI run as a subprocess) must carry the
`integration` mark, so that `pytest -m "not integration"` is a fast lane that starts none.
`forbid_processes` makes every way of starting a program raise `ProcessStartedWithoutMark`
(subprocess, multiprocessing, posix_spawn, system), and records it: code under test may swallow
the error (a daemon catches a failed spawn), so the fixture in tests/conftest.py fails the test
afterwards too. A bare `os.fork` (no exec) is allowed: it runs the test's own code, as a daemon
that forks, and starts no daemon, instance or CLI.
"""

from __future__ import annotations

import multiprocessing.process
import os
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

#: what to do about it, in every message
ADVICE = "mark it integration (pytest.mark.integration), or give it a fake in place of the process"


class ProcessStartedWithoutMark(RuntimeError):
    """A test without the `integration` mark tried to start a process."""


def forbid_processes(monkeypatch: pytest.MonkeyPatch, test: str) -> list[str]:
    """Make starting a process raise for the rest of `test` (undone with `monkeypatch`); the
    returned list gets one line per attempt."""
    attempts: list[str] = []

    def refusing(how: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            what = f"{how} {_command(how, args)}"
            attempts.append(what)
            raise ProcessStartedWithoutMark(f"{test} starts a process ({what}): {ADVICE}")

        return refuse

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refusing("subprocess.Popen"))
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refusing("multiprocessing"))
    for name in ("posix_spawn", "posix_spawnp", "system"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refusing(f"os.{name}"))
    return attempts


def _command(how: str, args: tuple[Any, ...]) -> str:
    """The program asked for, as far as it can be told from the call (for the message)."""
    if how == "subprocess.Popen" and len(args) > 1:  # _execute_child(self, args, executable, ...)
        return repr(args[1])[:200]
    if how.startswith("os.") and args:
        return repr(args[0])[:200]
    return ""
