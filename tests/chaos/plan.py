"""The seeded plan of a chaos run: which faults, where, when and for how long, and which tasks
are submitted when. Pure: no I/O, no clock. The same `Settings` (seed included) always give the
same `Plan`, so a failing seed reruns exactly (`Settings.command()` prints the command line).

Faults (`FaultKind`): an executor manager killed (SIGKILL, restarted after `duration`) or
frozen (SIGSTOP, SIGCONT after `duration`), a node's link cut (veth down, up after
`duration`; SIGSTOP-based where no network namespace can be made, said in the output), and
the session manager killed and restarted, or frozen. Durations are drawn from bands around
the two times that matter (`Timing`): detection (heartbeat_interval x heartbeat_liveness) and
detection + drain: well below detection, around it, between, around detection + drain, and
above it. By default at most one fault is active at a time; `overlap` lets the next start
before the last heals, never twice on the same target.

Tasks work 0..`max_task_ms` ms, `fail_rate` of them fail on purpose, spread over `sessions`
sessions. Most are submitted in waves every half second over the whole schedule; a share
(`burst_share`) comes in bursts while a fault is active.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, fields

from tests.chaos.payload import Payload


class FaultKind(enum.StrEnum):
    em_kill = "em-kill"
    em_stop = "em-stop"
    link_cut = "partition"
    sm_kill = "sm-kill"
    sm_stop = "sm-stop"

    @property
    def on_node(self) -> bool:
        return self in (FaultKind.em_kill, FaultKind.em_stop, FaultKind.link_cut)


SESSION_MANAGER = "sm"


@dataclass(frozen=True)
class Timing:
    heartbeat: float
    liveness: int
    drain: float

    @property
    def detection(self) -> float:
        """Silence after which either side declares the other dead."""
        return self.heartbeat * self.liveness

    @property
    def detection_drain(self) -> float:
        """Silence after which a node is cleaned up and its tasks retried."""
        return self.detection + self.drain


@dataclass(frozen=True)
class Settings:
    """Everything a run depends on; `bench/chaos.py` has one option per field."""

    seed: int = 1
    tasks: int = 10_000
    faults: int = 50
    nodes: int = 3
    slots: int = 2
    sessions: int = 3
    fail_rate: float = 0.02
    max_task_ms: int = 200
    heartbeat: float = 0.5
    liveness: int = 4
    drain: float = 3.0
    backoff_min: float = 0.2
    backoff_max: float = 1.0
    retry_limit: int = 3
    client_timeout: float = 30.0
    #: seconds between one fault's heal and the next fault's start
    gap_min: float = 2.0
    gap_max: float = 6.0
    #: share of the tasks submitted in bursts during faults
    burst_share: float = 0.3
    overlap: bool = False
    #: fault kinds to draw from (comma-separated FaultKind values)
    kinds: str = ",".join(k.value for k in FaultKind)
    #: use network namespaces when root allows (else loopback, SIGSTOP for partitions)
    netns: bool = True

    @property
    def timing(self) -> Timing:
        return Timing(self.heartbeat, self.liveness, self.drain)

    @property
    def fault_kinds(self) -> list[FaultKind]:
        return [FaultKind(k.strip()) for k in self.kinds.split(",") if k.strip()]

    @property
    def node_names(self) -> list[str]:
        return [f"n{i + 1}" for i in range(self.nodes)]

    def command(self) -> str:
        """The command line that reruns exactly this plan."""
        args = ["python bench/chaos.py", f"--seed {self.seed}", f"--tasks {self.tasks}", f"--faults {self.faults}"]
        default = Settings()
        for field in fields(self):
            if field.name in ("seed", "tasks", "faults"):
                continue
            value = getattr(self, field.name)
            if value == getattr(default, field.name):
                continue
            flag = "--" + field.name.replace("_", "-")
            if isinstance(value, bool):
                args.append(flag if value else f"--no-{field.name.replace('_', '-')}")
            else:
                args.append(f"{flag} {value}")
        return " ".join(args)


@dataclass(frozen=True)
class Fault:
    index: int
    kind: FaultKind
    #: a node name, or "sm"
    target: str
    #: seconds after the start of the run
    start: float
    duration: float
    #: which duration band it was drawn from
    band: str

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True)
class Submission:
    """`seqs` (task numbers) of `session`, submitted together `at` seconds into the run;
    `burst_of` is the fault it was aimed at (-1: a regular wave)."""

    at: float
    session: int
    seqs: tuple[int, ...]
    burst_of: int = -1


@dataclass(frozen=True)
class Plan:
    settings: Settings
    faults: tuple[Fault, ...]
    tasks: tuple[Payload, ...]
    submissions: tuple[Submission, ...]

    @property
    def span(self) -> float:
        """When the last fault heals and the last task is submitted."""
        ends = [f.end for f in self.faults] + [s.at for s in self.submissions]
        return max(ends, default=0.0)


#: the first fault comes after this many seconds (every node Ready, work flowing)
WARMUP = 3.0
#: waves of regular submissions every this many seconds
WAVE = 0.5
#: a run without faults lasts long enough for this many tasks a second
IDLE_RATE = 40.0


def bands(timing: Timing) -> dict[str, tuple[float, float]]:
    """Duration bands (seconds) around detection (D) and detection + drain (DD)."""
    d, dd = timing.detection, timing.detection_drain
    found = {
        "below-detection": (0.15 * d, 0.7 * d),
        "around-detection": (0.8 * d, 1.3 * d),
        "between": (1.3 * d, dd - 0.6),
        "around-drain": (max(1.3 * d, dd - 0.5), dd + 0.5),
        "above-drain": (dd + 0.8, dd + 4.0),
    }
    return {name: (lo, hi) for name, (lo, hi) in found.items() if hi > lo}


def make_plan(settings: Settings) -> Plan:
    faults = _faults(settings)
    tasks = _tasks(settings)
    return Plan(settings, faults, tasks, _submissions(settings, faults, tasks))


def _faults(settings: Settings) -> tuple[Fault, ...]:
    rng = random.Random(f"{settings.seed}:faults")
    kinds = settings.fault_kinds
    if settings.faults and not kinds:
        raise ValueError("no fault kinds to draw from")
    band_table = bands(settings.timing)
    names = settings.node_names
    faults: list[Fault] = []
    #: target -> when it is free again
    busy: dict[str, float] = {}
    t = WARMUP
    for index in range(settings.faults):
        kind = rng.choice(kinds)
        band = rng.choice(sorted(band_table))
        duration = round(rng.uniform(*band_table[band]), 3)
        if kind.on_node:
            free = [n for n in names if busy.get(n, 0.0) <= t]
            if not free:  # overlap only: wait for the first node to be free again
                t = min(busy[n] for n in names)
                free = [n for n in names if busy[n] <= t]
            target = rng.choice(free)
        else:
            target = SESSION_MANAGER
            t = max(t, busy.get(target, 0.0))
        start = round(t, 3)
        faults.append(Fault(index, kind, target, start, duration, band))
        busy[target] = start + duration + settings.gap_min
        if settings.overlap:  # the next one starts while this one lasts (elsewhere)
            t = start + rng.uniform(0.3, max(0.4, duration))
        else:
            t = start + duration + rng.uniform(settings.gap_min, settings.gap_max)
    return tuple(faults)


def _tasks(settings: Settings) -> tuple[Payload, ...]:
    rng = random.Random(f"{settings.seed}:tasks")
    return tuple(
        Payload(
            session=rng.randrange(settings.sessions),
            seq=seq,
            ms=rng.randint(0, settings.max_task_ms),
            fail=rng.random() < settings.fail_rate,
        )
        for seq in range(settings.tasks)
    )


def _submissions(settings: Settings, faults: tuple[Fault, ...], tasks: tuple[Payload, ...]) -> tuple[Submission, ...]:
    rng = random.Random(f"{settings.seed}:submissions")
    span = max([f.end for f in faults], default=0.0)
    span = max(span, WARMUP + len(tasks) / IDLE_RATE)
    bursts = int(len(tasks) * settings.burst_share) if faults else 0
    # (when, how many, which fault): bursts inside their fault, the rest in even waves
    slots: list[tuple[float, int, int]] = []
    for i, fault in enumerate(faults):
        share = bursts // len(faults) + (1 if i < bursts % len(faults) else 0)
        if share:
            at = fault.start + rng.uniform(0.05, max(0.1, 0.8 * fault.duration))
            slots.append((round(at, 3), share, fault.index))
    waves = max(1, int(span / WAVE))
    rest = len(tasks) - bursts
    for w in range(waves):
        count = rest // waves + (1 if w < rest % waves else 0)
        if count:
            slots.append((round(w * WAVE, 3), count, -1))
    slots.sort()
    submissions: list[Submission] = []
    next_task = 0
    for at, count, burst_of in slots:
        chosen = tasks[next_task : next_task + count]
        next_task += count
        for session in range(settings.sessions):
            seqs = tuple(t.seq for t in chosen if t.session == session)
            if seqs:
                submissions.append(Submission(at, session, seqs, burst_of))
    return tuple(submissions)
