"""A fake shell for the executor manager's pure core (flamed/executor_manager/core.py): it does
what the effects say to plain lists and a fake clock, answering installs and starts at once,
so a test drives a node through binds, freezes, re-registrations and drains in milliseconds."""

from __future__ import annotations

from collections.abc import Iterable

from flamed.executor_manager import effects as fx
from flamed.executor_manager.converge import converge, rejoin
from flamed.executor_manager.core import ExecutorsCore
from flamed.executor_manager.link import BackendLink
from protocol import backend as be
from protocol import instance as im
from tests.em.contexts import RESREQ, flmping_app, session

STOP_TIMEOUT = 1.0


class FakeShell:
    """The core with a fake clock (`now`); the effects it returned, sorted by kind."""

    def __init__(self, link: BackendLink | None = None) -> None:
        self.core = ExecutorsCore(STOP_TIMEOUT)
        self.link = link
        if link is not None:
            self.core.may_start = link.may_start
        self.now = 0.0
        self.timers: dict[fx.TimerKey, float] = {}
        #: (executor, message) sent to instances, (executor, signal) sent to their groups
        self.sent: list[tuple[str, im.Message]] = []
        self.signals: list[tuple[str, fx.Sig]] = []
        self.reports: list[be.ExecutorReport] = []
        self.starts: list[fx.StartInstance] = []
        self.disowned: list[str] = []
        self.removed: list[str] = []
        #: applications whose packages were removed; those held by an instance of another
        #: executor manager of the host (`held_apps`) are asked for but not removed
        self.removed_apps: list[str] = []
        self.held_apps: set[str] = set()
        #: the pid of each executor's running instance
        self.pids: dict[str, int] = {}
        #: executors whose instance socket refuses sends
        self.unreachable: set[str] = set()
        self._next_pid = 1000

    def run(self, effects: Iterable[fx.Effect]) -> None:
        for effect in effects:
            match effect:
                case fx.Report(reports=reports):
                    self.reports.extend(reports)
                case fx.Send(executor_id=executor_id, message=message):
                    if executor_id in self.unreachable:
                        self.run(self.core.unreachable(executor_id, self.now))
                    else:
                        self.sent.append((executor_id, message))
                case fx.Signal(executor_id=executor_id, sig=sig):
                    self.signals.append((executor_id, sig))
                case fx.Disown(executor_id=executor_id):
                    self.disowned.append(executor_id)
                case fx.SetTimer(key=key, deadline=deadline):
                    self.timers[key] = deadline
                case fx.CancelTimer(key=key):
                    self.timers.pop(key, None)
                case fx.Install(executor_id=executor_id, binding=binding):
                    self.run(self.core.installed(executor_id, binding, None, {}, self.now))
                case fx.StartInstance(executor_id=executor_id, binding=binding):
                    self.starts.append(effect)
                    self._next_pid += 1
                    self.pids[executor_id] = self._next_pid
                    self.run(self.core.started(executor_id, binding, self._next_pid, self.now))
                case fx.RemoveWorkDir(executor_id=executor_id):
                    self.removed.append(executor_id)
                case fx.RemovePackages(application=name):
                    done = name not in self.held_apps
                    if done:
                        self.removed_apps.append(name)
                    self.run(self.core.packages_removed(name, done, self.now))

    # ------------------------------------------------------------------ events

    def advance(self, to: float) -> None:
        """Move the clock to `to`, firing the timers due by then in order."""
        while due := sorted((d, k.kind.value, k) for k, d in self.timers.items() if d <= to):
            deadline, _, key = due[0]
            del self.timers[key]
            self.now = max(self.now, deadline)
            self.run(self.core.timer(key, self.now))
        self.now = max(self.now, to)

    def command(self, command: be.ExecutorCommand) -> None:
        self.run(self.core.command(command, self.now))

    def say(self, executor_id: str, message: im.InstanceMessage) -> None:
        self.run(self.core.instance_message(executor_id, message, self.now))

    def results(self, executor_id: str, *task_ids: int, ok: bool = True) -> None:
        outcomes = [im.TaskOutcome(task_id=t, attempt=1, ok=ok, output=b"out") for t in task_ids]
        self.say(executor_id, im.TaskResults(results=outcomes))

    def exit(self, executor_id: str, text: str = "instance (pid 1) exited with code 1") -> None:
        self.pids.pop(executor_id, None)
        self.run(self.core.instance_exited(executor_id, text, self.now))

    def bind(self, executor_id: str, session_id: str, launched: list[be.TaskAssignment]) -> None:
        """Create, bind and enter the session, then launch `launched`."""
        self.command(be.CreateExecutor(executor_id=executor_id, resreq=RESREQ))
        self.command(be.BindExecutor(executor_id=executor_id, session=session(session_id), application=flmping_app()))
        self.say(executor_id, im.InstanceReady(executor_id=executor_id, protocol_version=1, pid=self.pids[executor_id]))
        self.say(executor_id, im.SessionEntered(ok=True))
        self.command(be.LaunchTasks(executor_id=executor_id, session_id=session_id, tasks=launched))

    def registered(self, registration: be.Registered) -> None:
        """What the manager does with a `Registered` answer: confirm the link, resend the kept
        completions the snapshot still lists, converge, then start what may start."""
        assert self.link is not None
        self.link.registered_with(registration, self.now)
        self.reports, resent = rejoin(self.link, self.reports, registration.executors)
        self.run(converge(self.core, registration.executors, resent, self.now))
        self.run(self.core.link_confirmed(self.now))

    # ------------------------------------------------------------------ what came out

    def invoked(self) -> list[int]:
        """Task ids sent in InvokeTasks since the last call."""
        ids = [t.task_id for _, m in self.sent if isinstance(m, im.InvokeTasks) for t in m.tasks]
        self.sent = [(e, m) for e, m in self.sent if not isinstance(m, im.InvokeTasks)]
        return ids

    def take_reports(self) -> list[be.ExecutorReport]:
        reports, self.reports = self.reports, []
        return reports
