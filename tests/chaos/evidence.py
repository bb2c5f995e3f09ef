"""What a chaos run leaves behind for the checks, as plain data: the faults as they happened,
the journal of task starts, the session manager's events and final state, the client's records,
the daemons' exits. The checks (`checks.py`) and the attribution (`attribution.py`) are pure
functions of an `Evidence`, so they are unit-tested with made-up evidence.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from pathlib import Path

from protocol.types import Task
from tests.chaos.cluster import Exit, InstanceProcess
from tests.chaos.observer import NodeSight, SeenEvent, TerminalRecord
from tests.chaos.plan import Fault, Plan
from tests.chaos.workload import CallRecord, TaskRecord


@dataclass
class FaultRun:
    """A fault as it happened: wall times of its start and heal, how it was made, and the
    CPU seconds each live daemon had used at both ends."""

    fault: Fault
    start: float
    heal: float = 0.0
    #: how it was made: "sigkill", "sigstop", "veth"
    method: str = ""
    cpu_start: dict[str, float] = field(default_factory=dict)
    cpu_heal: dict[str, float] = field(default_factory=dict)
    stats_start: dict[str, float] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.heal - self.start


@dataclass(frozen=True)
class Run:
    """One line of a node's journal."""

    event: str
    session: str
    task_id: int
    seq: int
    node: str
    executor: str
    pid: int
    time: float


@dataclass
class Agreement:
    """Both sides' view of each node's executors after the last heal (I5)."""

    reached: bool = False
    seconds: float = 0.0
    detail: list[str] = field(default_factory=list)


@dataclass
class Evidence:
    plan: Plan
    namespaced: bool
    #: wall time the schedule started at (fault and submission offsets count from it)
    t0: float
    #: wall time the daemons were told to stop, after the checks' waits (nothing after it is
    #: any fault's doing)
    stopped_at: float
    faults: list[FaultRun]
    records: dict[int, TaskRecord]
    calls: list[CallRecord]
    #: session id -> its tasks, as the session manager lists them at the end
    tasks: dict[str, list[Task]]
    runs: list[Run]
    events: list[SeenEvent]
    node_sights: list[NodeSight]
    terminal: dict[tuple[str, int], list[TerminalRecord]]
    reopened: list[tuple[str, int, str, float]]
    stats: list[tuple[float, dict[str, float]]]
    exits: list[Exit]
    exit_codes: dict[str, int | None]
    agreement: Agreement
    instances_end: list[InstanceProcess]
    leftovers: list[int]
    unfinished: int
    sm_ready: list[float]
    log_tracebacks: dict[str, int]
    #: the node and executor events the subscription delivered (a cross-check of `events`,
    #: which come from the session manager's log)
    subscription_events: list[SeenEvent] = field(default_factory=list)
    full_pushes: int = 0
    #: what did not happen in time after the last heal (every result, every node Ready)
    settle_notes: list[str] = field(default_factory=list)
    #: how long the whole run took and how busy the machine was (set by bench/chaos.py)
    seconds: float = 0.0
    load: dict[str, float] | None = None

    def starts(self) -> list[Run]:
        return [r for r in self.runs if r.event == "start"]


def read_journal(path: Path) -> list[Run]:
    """The lines of a node's journal; a torn last line (an instance killed mid-write) is skipped."""
    if not path.exists():
        return []
    runs = []
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) != 8:
            continue
        try:
            runs.append(
                Run(
                    parts[0], parts[1], int(parts[2]), int(parts[3]), parts[4], parts[5], int(parts[6]), float(parts[7])
                )
            )
        except ValueError:
            continue
    return runs


def _stamp(line: str) -> float | None:
    try:
        return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return None


def log_times(text: str, needle: str) -> list[float]:
    """Wall times of the text-format log lines that contain `needle`."""
    times = [_stamp(line) for line in text.splitlines() if needle in line]
    return [t for t in times if t is not None]


_NODE = re.compile(r": node (\S+): (Ready|Unknown|NotReady)\b ?(.*)$")
_CREATED = re.compile(r": executor (\S+): created on (\S+) for session")
_RELEASED = re.compile(r": executor (\S+) on (\S+): released \((.*)\)$")


def log_events(text: str) -> list[SeenEvent]:
    """The session manager's node and executor changes, from its log (every restart appends
    to it, so nothing is missed), worded as its cluster events are: `registered (...):
    Ready`, `silent: Unknown (...)`, `cleaned_up: NotReady (...)`, `created on node N: Void`,
    `removed`. Subscription pushes carry at most 200 events each and drop the rest."""
    found = []
    for line in text.splitlines():
        if ": node " not in line and ": executor " not in line:
            continue
        when = _stamp(line)
        if when is None:
            continue
        if match := _NODE.search(line):
            node, state, rest = match.groups()
            message = {
                "Ready": f"registered {rest}: Ready",
                "Unknown": f"silent: Unknown {rest}",
                "NotReady": f"cleaned_up: NotReady {rest}",
            }[state]
            found.append(SeenEvent(when, "node", node, message))
        elif match := _CREATED.search(line):
            found.append(SeenEvent(when, "executor", match.group(1), f"created on node {match.group(2)}: Void"))
        elif match := _RELEASED.search(line):
            found.append(SeenEvent(when, "executor", match.group(1), "removed"))
    return found


def tracebacks(text: str) -> int:
    return text.count("Traceback (most recent call last)")
