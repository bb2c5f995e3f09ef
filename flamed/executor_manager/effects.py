"""What the executor manager's core (core.py) asks its shell (lifecycle.py) to do, as data.

The core decides; the shell does: it starts instances, sends on the instance socket, signals
process groups, runs timers, installs packages, removes work dirs and queues the reports for
the session manager, in the order the core returned them. Some effects have an answer, which
the shell feeds back to the core as an event: a start (`started` / `start_failed`), an install
(`installed`, or `install_progressed` once a running install finished), a removal of an
application's packages (`packages_removed`), a send the instance
socket could not take (`unreachable`), a timer that fired (`timer`).

Rules: an effect names an executor by id; the shell acts on the instance it holds for it now,
and a timer carries the number of the instance it was set for, so one that outlived its
instance is ignored by the core.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from protocol import backend as be
from protocol import instance as im


class Sig(enum.Enum):
    """The signals the core sends an instance's process group."""

    TERM = "TERM"
    KILL = "KILL"


class TimerKind(enum.Enum):
    #: the instance did not say InstanceReady and enter the session in time
    bind = "bind"
    #: a graceful stop: the instance did not leave in time, TERM it
    terminate = "terminate"
    #: TERM did not stop it in time, KILL it
    kill = "kill"
    #: the instance socket did not take a send and the instance is still there
    stuck = "stuck"


@dataclass(frozen=True)
class TimerKey:
    executor_id: str
    #: the number of the instance it was set for (`InstanceRef.number`)
    instance: int
    kind: TimerKind


@dataclass(frozen=True)
class Install:
    """Install the application's package (install.py); answer `installed` when it is ready or
    failed, or `install_progressed` later if an install is under way."""

    executor_id: str
    binding: int
    app: be.ApplicationContext


@dataclass(frozen=True)
class StartInstance:
    """Start the instance numbered `binding` for the executor; answer `started` (with its pid)
    or `start_failed`. `install_env` comes from the installed package."""

    executor_id: str
    binding: int
    app: be.ApplicationContext
    session_id: str
    install_env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Send:
    """Send `message` to the executor's instance; answer `unreachable` if the socket refuses it."""

    executor_id: str
    message: im.Message


@dataclass(frozen=True)
class Signal:
    """Signal the executor's instance's process group."""

    executor_id: str
    sig: Sig


@dataclass(frozen=True)
class Disown:
    """From now on accept nothing from the executor's instance (it is being killed)."""

    executor_id: str


@dataclass(frozen=True)
class SetTimer:
    key: TimerKey
    deadline: float


@dataclass(frozen=True)
class CancelTimer:
    key: TimerKey


@dataclass(frozen=True)
class Report:
    """Queue reports for the session manager, in order (sent at the end of the loop turn).
    Consecutive reports are one effect (`Holding.report` appends to the last one): an
    instance's results make one report per task."""

    reports: list[be.ExecutorReport]


@dataclass(frozen=True)
class RemoveWorkDir:
    executor_id: str


@dataclass(frozen=True)
class RemovePackages:
    """Remove the installed packages of the unregistered application `application`; answer
    `packages_removed`. The shell removes a release only when no instance of the host holds it
    (install.py's lock files): the core knows only the instances of this executor manager."""

    application: str


Effect = (
    Install | StartInstance | Send | Signal | Disown | SetTimer | CancelTimer | Report | RemoveWorkDir | RemovePackages
)
