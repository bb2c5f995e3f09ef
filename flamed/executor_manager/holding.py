"""The executors a node holds and what every event of the core (core.py) does to them:
bind (install, then start an instance), keep its tasks at hand, stop its instance (leave, then
TERM, then KILL) and report it unbound once it is gone. Pure, as the core: effects out
(effects.py), times in; phases change only through `LocalExecutor.move` (machines.PHASE).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flamed.executor_manager import conduct
from flamed.executor_manager.effects import (
    CancelTimer,
    Effect,
    Install,
    RemovePackages,
    RemoveWorkDir,
    Report,
    Send,
    SetTimer,
    Sig,
    Signal,
    TimerKey,
    TimerKind,
)
from flamed.executor_manager.executors import LocalExecutor
from flamed.executor_manager.instance_window import Suspects, take_batch, withdraw
from flamed.executor_manager.machines import Phase, PhaseTrigger
from protocol import backend as be
from protocol import instance as im

log = logging.getLogger("flamed.executor_manager")

#: Seconds an instance gets to say `InstanceReady` and enter the session.
BIND_TIMEOUT = 60.0
#: ExecutorBindFailed codes (Flame's BIND_RESULT codes): the application package could not be
#: installed, the instance could not start (or never said InstanceReady), on_session_enter
#: failed (or the instance died entering), and "other": an instance that misbehaved, or a
#: session refused because of that.
BIND_FAILED_INSTALL = 10
BIND_FAILED_START = 11
BIND_FAILED_ENTER = 12
BIND_FAILED_MISBEHAVED = 19


class Holding:
    """The executors and what the core's effects are decided from; the events are in core.py."""

    def __init__(self, stop_timeout: float) -> None:
        self.stop_timeout = stop_timeout
        self.executors: dict[str, LocalExecutor] = {}
        #: (session, task) spared at an instance death; blamed if in flight at another
        self.suspects: Suspects = set()
        self.strikes = conduct.Strikes()
        #: may a task be handed to an instance at `now`? (the manager: `BackendLink.may_start`)
        self.may_start: Callable[[float], bool] = lambda _now: True
        #: instances killed for misbehaving, and binds refused because of that
        self.instances_killed = 0
        self.binds_refused = 0
        #: the time of the event being handled
        self.now = 0.0
        #: unregistered applications whose installed packages go once no instance here uses them
        self.doomed_apps: set[str] = set()
        self._bindings = 0
        self._out: list[Effect] = []

    def _emit(self, effect: Effect) -> None:
        self._out.append(effect)

    def report(self, report: be.ExecutorReport) -> None:
        out = self._out
        if out and type(out[-1]) is Report:  # the reports of a turn's results: one effect
            out[-1].reports.append(report)
        else:
            out.append(Report([report]))

    def take_effects(self) -> list[Effect]:
        """The effects decided since the last call, in order (the events return them too)."""
        out, self._out = self._out, []
        return out

    def _at(self, now: float) -> None:
        self.now = max(self.now, now)

    # ------------------------------------------------------------------ binding

    def bind(
        self,
        executor: LocalExecutor,
        session: be.SessionContext,
        app: be.ApplicationContext,
        tasks: list[be.TaskAssignment] | None = None,
    ) -> None:
        """Start an instance for `session` (after the current one is stopped, if any); `tasks`
        (from a snapshot) are queued for it."""
        if executor.phase is not Phase.Idle:
            self._bind_not_idle(executor, session, app, tasks)
            return
        executor.move(PhaseTrigger.start)
        self._bindings += 1
        executor.binding = self._bindings
        executor.session, executor.application = session, app
        self.doomed_apps.discard(app.name)  # registered again since
        executor.ready = executor.bind_failed = False
        executor.pace = None
        executor.waiting = None
        executor.report_exit, executor.release_after_unbind = True, False
        executor.stop_reason = ""
        executor.queue.extend(tasks or [])
        refusal = self.strikes.refusal(session.session_id)
        if refusal is not None:
            self.binds_refused += 1
            log.warning("executor %s: bind refused: %s", executor.id, refusal)
            self._bind_failed(executor, BIND_FAILED_MISBEHAVED, refusal)
            self._unbound(executor, reason=f"bind refused: {refusal}")
            return
        self._emit(Install(executor.id, executor.binding, app))

    def _bind_not_idle(
        self,
        executor: LocalExecutor,
        session: be.SessionContext,
        app: be.ApplicationContext,
        tasks: list[be.TaskAssignment] | None,
    ) -> None:
        """A bind for an executor that has an instance: a repeat of the binding in progress
        (answered if bound already), or a bind to another session, done once the old
        instance is stopped."""
        if executor.session_id == session.session_id and executor.phase is not Phase.Unbinding:
            if executor.phase is Phase.Bound:
                self.report(be.ExecutorBound(executor_id=executor.id, session_id=session.session_id))
            return  # binding already
        # The session manager is done with the old binding (it binds only executors it
        # sees Idle): finish stopping the old instance quietly, then bind.
        log.info("executor %s: bind to %s once its old instance is stopped", executor.id, session.session_id)
        executor.pending_bind = (session, app, tasks or [])
        executor.report_exit = False
        if executor.phase is not Phase.Unbinding:
            self.stop_instance(executor, "bound to another session", graceful=False)

    def _bind_failed(self, executor: LocalExecutor, code: int, message: str) -> None:
        assert executor.session is not None
        executor.bind_failed = True
        self.report(
            be.ExecutorBindFailed(
                executor_id=executor.id, session_id=executor.session.session_id, code=code, message=message
            )
        )

    def pump(self, executor: LocalExecutor) -> None:
        """Keep the instance's next tasks at hand (instance_window.py): top up its window in
        one message, only on a link we may start tasks on. While its running task waits for its
        own session, hand the queue back instead (`TasksReturned{waiting}`): a task queued
        behind it could be the one it waits for."""
        if executor.phase is not Phase.Bound:
            return
        if executor.waiting is not None:
            if executor.queue:
                self.hand_back_waiting(executor, withdraw(executor))
            return
        if not self.may_start(self.now):
            return
        batch = take_batch(executor, self.suspects, self.now)
        if batch:
            self._emit(Send(executor.id, im.InvokeTasks(tasks=batch)))

    def hand_back_waiting(self, executor: LocalExecutor, tasks: list[be.TaskKey]) -> None:
        """Tell the session manager the executor's running task waits (it feeds it no more),
        with the tasks handed back unstarted; sent even with none."""
        assert executor.session_id is not None
        self.report(
            be.TasksReturned(executor_id=executor.id, session_id=executor.session_id, unstarted=tasks, waiting=True)
        )

    # ------------------------------------------------------------------ unregistered applications

    def remove_doomed(self) -> None:
        """Ask the shell to remove the packages of the unregistered applications that no
        executor here uses or is about to bind (it may still find one held by an instance of
        another executor manager of the host: `packages_removed` says so)."""
        if not self.doomed_apps:
            return
        in_use = {e.application.name for e in self.executors.values() if e.application is not None}
        in_use.update(e.pending_bind[1].name for e in self.executors.values() if e.pending_bind is not None)
        for name in sorted(self.doomed_apps - in_use):
            self._emit(RemovePackages(name))

    # ------------------------------------------------------------------ stopping

    def unbind(self, executor: LocalExecutor, reason: str) -> None:
        if executor.phase is Phase.Idle:
            self.report(be.ExecutorUnbound(executor_id=executor.id, reason="not bound"))
        elif executor.phase is not Phase.Unbinding:
            self.stop_instance(executor, reason, graceful=executor.phase is Phase.Bound)

    def release(self, executor: LocalExecutor) -> None:
        if executor.phase is Phase.Idle:
            self._released(executor)
        else:
            executor.release_after_unbind = True
            self.unbind(executor, "released by the session manager")

    def discard(self, executor: LocalExecutor, reason: str) -> None:
        """Forget the executor without a word to the session manager, stopping its instance first."""
        executor.report_exit = False
        if executor.instance is None:
            self.executors.pop(executor.id, None)
            return
        executor.release_after_unbind = True
        self.stop_instance(executor, reason, graceful=False)

    def _released(self, executor: LocalExecutor, report: bool = True) -> None:
        self.executors.pop(executor.id, None)
        self._emit(RemoveWorkDir(executor.id))
        if report:
            self.report(be.ExecutorReleased(executor_id=executor.id))
        log.info("executor %s: released", executor.id)

    def stop_instance(self, executor: LocalExecutor, reason: str, graceful: bool) -> None:
        """Leave the session (if `graceful`), then TERM the group, then KILL it, each after
        the stop timeout. The executor is reported unbound once the instance exited."""
        executor.move(PhaseTrigger.stop)
        executor.stop_reason = executor.stop_reason or reason
        self._cancel_timer(executor)
        if executor.instance is None:
            self._unbound(executor, reason)
            return
        log.info("executor %s: unbinding session %s (%s)", executor.id, executor.session_id, reason)
        if graceful:
            self._emit(Send(executor.id, im.LeaveSession()))
            self._set_timer(executor, TimerKind.terminate, self.stop_timeout)
        else:
            self._terminate(executor)

    def _terminate(self, executor: LocalExecutor) -> None:
        self._emit(Signal(executor.id, Sig.TERM))
        self._set_timer(executor, TimerKind.kill, self.stop_timeout)

    # ------------------------------------------------------------------ timers

    def _set_timer(self, executor: LocalExecutor, kind: TimerKind, delay: float) -> None:
        assert executor.instance is not None
        self._cancel_timer(executor)
        executor.timer = TimerKey(executor.id, executor.instance.number, kind)
        self._emit(SetTimer(executor.timer, self.now + delay))

    def _cancel_timer(self, executor: LocalExecutor) -> None:
        if executor.timer is not None:
            self._emit(CancelTimer(executor.timer))
            executor.timer = None

    def _unbound(self, executor: LocalExecutor, reason: str) -> None:
        """The instance is gone: report the executor unbound, with the queued tasks as
        unstarted (the in-flight ones count as started: see instance_window.py)."""
        unstarted = [be.TaskKey(task_id=t.task_id, attempt=t.attempt) for t in executor.queue]
        report = be.ExecutorUnbound(
            executor_id=executor.id, session_id=executor.session_id, unstarted=unstarted, reason=reason
        )
        executor.last_unbound = report
        quiet, executor.report_exit = not executor.report_exit, True
        if not quiet:
            self.report(report)
        log.info("executor %s: unbound from session %s (%s)", executor.id, executor.session_id, reason)
        executor.move(PhaseTrigger.gone)
        executor.session = executor.application = None
        executor.queue.clear()
        executor.in_flight.clear()
        executor.ready = False
        executor.waiting = None
        self.remove_doomed()
        if executor.release_after_unbind:
            executor.pending_bind = None
            self._released(executor, report=not quiet)
        elif executor.pending_bind is not None:
            session, app, tasks = executor.pending_bind
            executor.pending_bind = None
            self.bind(executor, session, app, tasks)
