"""Run one chaos plan against real daemons and gather the evidence.

Order: start the session manager, the observer and the executor managers; wait until every
node is Ready; create the sessions; then play the plan's timeline (submissions, fault starts,
heals) against the clock, restarting any daemon that exits on its own (a crash, recorded).
After the last heal: wait until the client has every result, every node is Ready and both
sides agree on each node's executors (I5), read the final state, stop the daemons as an
operator would (SIGTERM) and scan for processes left behind. The timeline's waits are the
plan itself (a fault lasts its duration); everything after it waits on conditions with
deadlines.
"""

from __future__ import annotations

import contextlib
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flamed.client import Connection, FlameError
from protocol.types import ExecutorState, Task
from tests.chaos.cluster import ChaosCluster
from tests.chaos.evidence import Agreement, Evidence, FaultRun, log_events, log_times, read_journal, tracebacks
from tests.chaos.hosts import Hosts, make_hosts
from tests.chaos.observer import Observer
from tests.chaos.plan import SESSION_MANAGER, Fault, FaultKind, Plan, Submission
from tests.chaos.workload import Workload, session_id
from tests.support.waiting import wait_for

Say = Callable[[str], None]
#: where a kept run leaves its evidence
EVIDENCE = "evidence.pickle"


def save_evidence(workdir: Path, evidence: Evidence) -> None:
    """Keep the evidence with the run (`bench/chaos.py --analyse DIR` reports on it again)."""
    (workdir / EVIDENCE).write_bytes(pickle.dumps(evidence))


def load_evidence(workdir: Path) -> Evidence:
    """The evidence a kept run left in `workdir` (our own file: pickle is fine)."""
    evidence = pickle.loads((workdir / EVIDENCE).read_bytes())
    assert isinstance(evidence, Evidence)
    return evidence


class Timeline:
    """Plays the plan: submissions and faults at their offsets from the start."""

    def __init__(self, plan: Plan, cluster: ChaosCluster, hosts: Hosts, workload: Workload, observer: Observer) -> None:
        self.plan = plan
        self.cluster = cluster
        self.hosts = hosts
        self.workload = workload
        self.observer = observer
        self.runs: dict[int, FaultRun] = {}
        self.say: Say = print

    def play(self, say: Say) -> None:
        self.say = say
        actions: list[tuple[float, int, Fault | Submission]] = []
        for fault in self.plan.faults:
            actions.append((fault.start, 1, fault))
            actions.append((fault.end, 0, fault))
        actions += [(s.at, 2, s) for s in self.plan.submissions]
        actions.sort(key=lambda a: (a[0], a[1]))
        origin = time.monotonic()
        for at, order, item in actions:
            self.wait_until(origin + at)
            if isinstance(item, Submission):
                self.workload.submit(item)
            elif order == 1:
                self.start_fault(item)
            else:
                self.heal_fault(item)

    def wait_until(self, moment: float) -> None:
        """The schedule's own pacing (a fault lasts its duration), watching for crashes."""
        while True:
            self.restart_crashed()
            left = moment - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.1))

    def restart_crashed(self) -> None:
        for exit_ in self.cluster.unexpected_exits():
            self.say(f"  !! {exit_.name} exited by itself with code {exit_.code}; restarting it")
            self.cluster.start(exit_.name)

    def cpu(self) -> dict[str, float]:
        found = {}
        for name in self.cluster.daemons:
            seconds = self.cluster.cpu_seconds(name)
            if seconds is not None:
                found[name] = seconds
        return found

    def start_fault(self, fault: Fault) -> None:
        run = FaultRun(fault, start=time.time(), cpu_start=self.cpu(), stats_start=self.observer.latest_stats())
        target = fault.target
        match fault.kind:
            case FaultKind.em_kill | FaultKind.sm_kill:
                run.method = "sigkill"
                self.cluster.kill(target)
            case FaultKind.link_cut if self.hosts.namespaced:
                run.method = "veth"
                self.hosts.cut(target)
            case _:
                run.method = "sigstop"
                self.cluster.freeze(target)
        self.runs[fault.index] = run
        self.say(
            f"  fault #{fault.index:<3} {fault.kind:<9} {target:<3} for {fault.duration:5.2f}s ({fault.band}, "
            f"{run.method}) at {fault.start:6.1f}s"
        )

    def heal_fault(self, fault: Fault) -> None:
        run = self.runs[fault.index]
        run.cpu_heal = self.cpu()
        target = fault.target
        if run.method == "sigkill":
            self.cluster.start(target)
        elif run.method == "veth":
            self.hosts.heal(target)
        else:
            self.cluster.thaw(target)
        run.heal = time.time()


@dataclass
class _Settled:
    """What the waits after the last heal found."""

    notes: list[str]
    agreement: Agreement
    tasks: dict[str, list[Task]]


class _Run:
    """The parts of one run, started in order and stopped in the reverse order."""

    def __init__(self, plan: Plan, workdir: Path) -> None:
        self.plan = plan
        self.workdir = workdir
        self.hosts = make_hosts(plan.settings.node_names, plan.settings.netns)
        try:
            self.cluster = ChaosCluster(workdir, plan.settings, self.hosts)
        except BaseException:
            self.hosts.close()  # no namespace outlives a run that could not start
            raise
        self.observer = Observer(self.cluster.frontend)
        self.workload = Workload(plan, self.cluster.frontend, self.cluster.config)
        self.timeline = Timeline(plan, self.cluster, self.hosts, self.workload, self.observer)

    def start(self, say: Say) -> None:
        """Every daemon up, every node Ready, the sessions created and watched."""
        settings = self.plan.settings
        say(f"chaos seed {settings.seed}: {self.hosts.describe}")
        self.cluster.start_sm()
        self.observer.start()
        for node in settings.node_names:
            self.cluster.start_em(node)
        wait_for("every node Ready", lambda: _all_ready(self.observer, settings.node_names), 60)
        self.workload.open()
        for index in range(settings.sessions):
            self.observer.watch(session_id(index))

    def settle(self, settle_timeout: float) -> _Settled:
        """After the last heal: every result, every node Ready, both sides agreeing. What does
        not happen in time is evidence (I1, I5...), not a reason to stop looking."""
        settings, workload = self.plan.settings, self.workload
        settle = time.monotonic()
        notes = _wait(self.timeline, "every task result", lambda: workload.unfinished() == 0, settle_timeout)
        conn = workload.connections[0]
        notes += _wait(self.timeline, "every node Ready", lambda: _sm_ready(conn, settings.node_names), 60)
        agreement = _wait_agreement(self.timeline, self.cluster, conn, settings.node_names, settle)
        tasks = {}
        for index in range(settings.sessions):
            try:
                tasks[session_id(index)] = workload.list_tasks(index)
            except FlameError as exc:
                notes.append(f"cannot list the tasks of {session_id(index)}: {exc}")
        return _Settled(notes, agreement, tasks)

    def stop_and_collect(self, t0: float, settled: _Settled) -> Evidence:
        """Stop the daemons as an operator would, look for what is left, gather the evidence."""
        cluster, observer, settings = self.cluster, self.observer, self.plan.settings
        instances_end = cluster.instances()
        observer.stop()
        stopped_at = time.time()
        exit_codes = cluster.stop_all()
        with contextlib.suppress(AssertionError):  # what is left is reported (I5)
            wait_for("every process of the run to exit", lambda: not cluster.leftovers(), 15)
        logs = {name: cluster.log(name) for name in cluster.daemons}
        with observer.lock:
            return Evidence(
                plan=self.plan,
                namespaced=self.hosts.namespaced,
                t0=t0,
                stopped_at=stopped_at,
                faults=[self.timeline.runs[f.index] for f in self.plan.faults],
                records=dict(self.workload.records),
                calls=list(self.workload.calls),
                tasks=settled.tasks,
                runs=[r for node in settings.node_names for r in read_journal(cluster.journal(node))],
                events=log_events(logs[SESSION_MANAGER]),
                node_sights=list(observer.nodes),
                terminal=dict(observer.terminal),
                reopened=list(observer.reopened),
                stats=list(observer.stats),
                exits=list(cluster.exits),
                exit_codes=exit_codes,
                agreement=settled.agreement,
                instances_end=instances_end,
                leftovers=cluster.leftovers(),
                unfinished=self.workload.unfinished(),
                sm_ready=log_times(logs[SESSION_MANAGER], "session manager ready"),
                log_tracebacks={name: tracebacks(text) for name, text in logs.items()},
                subscription_events=sorted(observer.events, key=lambda e: e.time),
                full_pushes=observer.full_pushes,
                settle_notes=settled.notes,
            )

    def close(self) -> None:
        self.observer.stop()
        self.workload.close()
        self.cluster.cleanup()
        self.hosts.close()


def run_plan(plan: Plan, say: Say, settle_timeout: float = 240.0, keep: bool = False) -> tuple[Evidence, Path | None]:
    """Run `plan`; the evidence, and the work directory if it was kept (`keep`; a run that
    fails keeps it too)."""
    workdir = Path(tempfile.mkdtemp(prefix="flc-", dir="/tmp"))
    try:
        run = _Run(plan, workdir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    try:
        run.start(say)
        t0 = time.time()
        run.timeline.play(say)
        say(f"  last heal at {time.time() - t0:.1f}s; waiting for every result")
        evidence = run.stop_and_collect(t0, run.settle(settle_timeout))
        if keep:
            save_evidence(workdir, evidence)
        return evidence, (workdir if keep else None)
    except BaseException:
        keep = True
        say(f"  the run failed; its logs and journals are kept in {workdir}")
        raise
    finally:
        run.close()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _all_ready(observer: Observer, names: list[str]) -> bool:
    states = observer.node_states()
    return all(states.get(n) == "Ready" for n in names)


def _sm_ready(conn: Connection, names: list[str]) -> bool:
    states = {n.name: str(n.state) for n in conn.list_nodes()}
    return all(states.get(n) == "Ready" for n in names)


def _wait(timeline: Timeline, what: str, probe: Callable[[], bool], timeout: float) -> list[str]:
    """Wait for `probe`; [] when it held in time, else what did not happen."""

    def checked() -> bool:
        timeline.restart_crashed()
        try:
            return probe()
        except FlameError:  # the session manager is away: ask again
            return False

    try:
        wait_for(what, checked, timeout, interval=0.1)
    except AssertionError as exc:
        return [str(exc)]
    return []


def _wait_agreement(
    timeline: Timeline, cluster: ChaosCluster, conn: Connection, names: list[str], since: float
) -> Agreement:
    """I5: wait (up to 60 s) until, for every node, the executor manager holds as many
    executors as the session manager lists on it, every instance process belongs to one of
    those and is a child of the node's current executor manager, and every Bound executor
    has its instance."""
    agreement = Agreement()

    def agreed() -> bool:
        timeline.restart_crashed()
        try:
            agreement.detail = _disagreements(cluster, conn, names)
        except FlameError as exc:
            agreement.detail = [f"cannot list the executors: {exc}"]
        return not agreement.detail

    try:
        wait_for("both sides to agree on every node's executors", agreed, 60, interval=0.25)
        agreement.reached = True
    except AssertionError:
        agreement.reached = False
    agreement.seconds = time.monotonic() - since
    return agreement


def _disagreements(cluster: ChaosCluster, conn: Connection, names: list[str]) -> list[str]:
    executors = [e for e in conn.list_executors() if e.state is not ExecutorState.Released]
    instances = cluster.instances()
    problems = []
    for node in names:
        listed = {e.id: e for e in executors if e.node == node}
        figures = cluster.metrics(node)
        if figures is None:
            problems.append(f"{node}: no metrics")
            continue
        held = sum(v for k, v in figures.items() if k.startswith("flame_node_executors_"))
        if held != len(listed):
            problems.append(f"{node}: holds {held:g} executors, the session manager lists {len(listed)}")
        mine = [i for i in instances if i.node == node]
        em = cluster.pid(node)
        for instance in mine:
            if instance.executor not in listed:
                problems.append(f"{node}: instance {instance.pid} of executor {instance.executor} not listed")
            if instance.ppid != em:
                problems.append(f"{node}: instance {instance.pid} is not a child of its executor manager")
        running = {i.executor for i in mine}
        for executor in listed.values():
            if executor.state is ExecutorState.Bound and executor.id not in running:
                problems.append(f"{node}: Bound executor {executor.id} has no instance")
    stray = [i for i in instances if i.node not in names]
    problems += [f"instance {i.pid} of no node" for i in stray]
    return problems
