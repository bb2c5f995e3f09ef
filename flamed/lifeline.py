"""Tie a child process's life to its parent's (Linux `PR_SET_PDEATHSIG`).

Used for every process we start (daemons under `flamed cluster`, application instances under
an executor manager), so that killing the parent, even with SIGKILL, leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
# Loaded once here: the hook runs between fork and exec, where looking a library up (which may
# start `ldconfig`) is slow and unsafe.
_libc = ctypes.CDLL(None, use_errno=True)


def parent_death_signal(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A `preexec_fn` for subprocess.Popen: the child gets `sig` when its parent dies."""
    parent = os.getpid()

    def preexec() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec
