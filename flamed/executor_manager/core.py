"""The executor manager's pure core: the executors a node holds, driven by events, deciding
effects (effects.py). No socket, process, file or clock: `now` comes with every event, and
the shell (lifecycle.py) does what the effects say and feeds their answers back.

Events: a session-manager command (`command`), an instance message already decoded and
attributed to its executor (`instance_message`) or an instance that broke the protocol before
it could be decoded (`misbehaved`), an instance exit with its exit text (`instance_exited`), a
timer that fired (`timer`), the answers to a start, an install, a send or a removal of an
application's packages, the link confirmed (`link_confirmed`), applications a registration no
longer lists (`applications_unregistered`), a registration snapshot to converge to
(`converge`, converge.py) and a drain step (drain.py). Each returns the effects to run, in
order.

Rules: phases change only through `LocalExecutor.move` (machines.PHASE). No task is handed to
an instance unless `may_start(now)` (the manager: only on a link the session manager has
confirmed and that we do not suspect, link.py), so a node back from a freeze or a cut starts
nothing the session manager may have put back to Pending. Instances are untrusted (conduct.py):
a message it may not send at that point gets it killed at once: its bind fails, or the task it
was running fails, with what it did as the reason. Which tasks an instance holds, and which are
blamed when it dies, is decided in instance_window.py.
"""

from __future__ import annotations

import logging

from flamed.executor_manager import conduct
from flamed.executor_manager.effects import (
    CancelTimer,
    Disown,
    Effect,
    Install,
    Send,
    Sig,
    Signal,
    StartInstance,
    TimerKey,
    TimerKind,
)
from flamed.executor_manager.executors import InstanceRef, LocalExecutor
from flamed.executor_manager.holding import (
    BIND_FAILED_ENTER,
    BIND_FAILED_INSTALL,
    BIND_FAILED_MISBEHAVED,
    BIND_FAILED_START,
    BIND_TIMEOUT,
    Holding,
)
from flamed.executor_manager.instance_window import blame, fail_running, take_results, withdraw
from flamed.executor_manager.machines import Phase, PhaseTrigger
from protocol import backend as be
from protocol import instance as im
from protocol.types import ResourceRequirement

log = logging.getLogger("flamed.executor_manager")


class ExecutorsCore(Holding):
    """The core's events: each returns the effects to run, in order."""

    # ------------------------------------------------------------------ events: the session manager

    def command(self, command: be.ExecutorCommand, now: float) -> list[Effect]:
        """Apply one session-manager command."""
        self._at(now)
        executor = self.executors.get(command.executor_id)
        match command:
            case be.CreateExecutor(resreq=resreq):
                if executor is None:
                    self.executors[command.executor_id] = LocalExecutor(command.executor_id, resreq)
                    log.info("executor %s: created", command.executor_id)
                self.report(be.ExecutorCreated(executor_id=command.executor_id))
            case be.BindExecutor(session=session, application=app):
                if executor is None:
                    executor = LocalExecutor(command.executor_id, ResourceRequirement())
                    self.executors[command.executor_id] = executor
                self.bind(executor, session, app)
            case be.LaunchTasks(session_id=session_id, tasks=tasks):
                self.launch(executor, command.executor_id, session_id, tasks)
            case be.UnbindExecutor():
                if executor is None:
                    self.report(be.ExecutorUnbound(executor_id=command.executor_id, reason="unknown executor"))
                else:
                    self.unbind(executor, "unbound by the session manager")
            case be.ReleaseExecutor():
                if executor is None:
                    self.report(be.ExecutorReleased(executor_id=command.executor_id))
                else:
                    self.release(executor)
            case be.RemoveApplication(application=name):
                self.doomed_apps.add(name)
                self.remove_doomed()
            case be.RecallTasks(session_id=session_id, count=count):
                taken = executor.take_back(session_id, count) if executor is not None else []
                self.report(be.TasksReturned(executor_id=command.executor_id, session_id=session_id, unstarted=taken))
        return self.take_effects()

    def applications_unregistered(self, names: set[str], now: float) -> list[Effect]:
        """Applications `names` are installed here but not registered (a registration's list
        leaves them out): remove their packages, now or once no instance here uses them."""
        self._at(now)
        self.doomed_apps.update(names)
        self.remove_doomed()
        return self.take_effects()

    def packages_removed(self, name: str, done: bool, now: float) -> list[Effect]:
        """The shell removed application `name`'s packages, or (`done` false) could not yet (an
        install of it runs, or another executor manager's instance holds a release): it is
        tried again when an executor here is next unbound."""
        self._at(now)
        if done:
            self.doomed_apps.discard(name)
        return self.take_effects()

    def link_confirmed(self, now: float) -> list[Effect]:
        """The session manager confirmed our executors (a registration answered, its snapshot
        applied): tasks held back while the link was suspected may start now."""
        self._at(now)
        for executor in list(self.executors.values()):
            self.pump(executor)
        return self.take_effects()

    def _installing(self, executor_id: str, binding: int) -> LocalExecutor | None:
        """The executor if it still waits for the install of bind `binding`."""
        executor = self.executors.get(executor_id)
        if executor is None or executor.binding != binding:
            return None
        if executor.phase is not Phase.Binding or executor.instance is not None:
            return None
        return executor

    def install_progressed(self, executor_id: str, binding: int, now: float) -> list[Effect]:
        """An install the bind waited for is over: ask for it again (ignored if the binding changed)."""
        self._at(now)
        executor = self._installing(executor_id, binding)
        if executor is not None and executor.application is not None:
            self._emit(Install(executor.id, binding, executor.application))
        return self.take_effects()

    def installed(
        self, executor_id: str, binding: int, error: str | None, env: dict[str, str], now: float
    ) -> list[Effect]:
        """The application's package is ready (`env` for the instance), or failed with `error`."""
        self._at(now)
        executor = self._installing(executor_id, binding)
        if executor is None or executor.session is None or executor.application is None:
            return self.take_effects()
        if error is not None:
            log.warning("executor %s: bind to %s failed: %s", executor.id, executor.session_id, error)
            self._bind_failed(executor, BIND_FAILED_INSTALL, error)
            self._unbound(executor, reason=f"bind failed: {error}")
        else:
            self._emit(
                StartInstance(executor.id, binding, executor.application, executor.session.session_id, dict(env))
            )
        return self.take_effects()

    def started(self, executor_id: str, binding: int, pid: int, now: float) -> list[Effect]:
        """The instance of bind `binding` runs as `pid`: it has BIND_TIMEOUT to enter the session."""
        self._at(now)
        executor = self._installing(executor_id, binding)
        assert executor is not None, "an instance started for a bind that is over"
        executor.instance = InstanceRef(binding, pid)
        self._set_timer(executor, TimerKind.bind, BIND_TIMEOUT)
        log.info(
            "executor %s: binding session %s (app %s): started pid %d",
            executor.id,
            executor.session_id,
            executor.application.name if executor.application else "",
            pid,
        )
        return self.take_effects()

    def start_failed(self, executor_id: str, binding: int, error: str, now: float) -> list[Effect]:
        self._at(now)
        executor = self._installing(executor_id, binding)
        if executor is not None:
            log.warning("executor %s: bind to %s failed: %s", executor.id, executor.session_id, error)
            self._bind_failed(executor, BIND_FAILED_START, error)
            self._unbound(executor, reason=f"bind failed: {error}")
        return self.take_effects()

    # ------------------------------------------------------------------ tasks

    def launch(
        self, executor: LocalExecutor | None, executor_id: str, session_id: str, tasks: list[be.TaskAssignment]
    ) -> None:
        if executor is None or executor.session_id != session_id:
            log.warning("executor %s: %d tasks for session %s it does not serve", executor_id, len(tasks), session_id)
            keys = [be.TaskKey(task_id=t.task_id, attempt=t.attempt) for t in tasks]
            self.report(
                be.ExecutorUnbound(
                    executor_id=executor_id, session_id=session_id, unstarted=keys, reason="not bound to the session"
                )
            )
            return
        log.debug("executor %s: %d tasks queued", executor_id, len(tasks))
        executor.queue.extend(tasks)
        self.pump(executor)

    def timer(self, key: TimerKey, now: float) -> list[Effect]:
        """A timer fired; one set for an instance that is gone, or replaced since, is ignored."""
        self._at(now)
        executor = self.executors.get(key.executor_id)
        if executor is None or executor.timer != key or executor.instance is None:
            return self.take_effects()
        executor.timer = None
        instance = executor.instance
        match key.kind:
            case TimerKind.bind if executor.phase is Phase.Binding:
                code = BIND_FAILED_ENTER if executor.ready else BIND_FAILED_START
                what = "enter the session" if executor.ready else "say InstanceReady"
                message = f"instance (pid {instance.pid}) did not {what} within {BIND_TIMEOUT:.0f}s"
                log.warning("executor %s: %s", executor.id, message)
                self._bind_failed(executor, code, message)
                self.stop_instance(executor, message, graceful=False)
            case TimerKind.terminate:
                self._terminate(executor)
            case TimerKind.kill:
                self._emit(Signal(executor.id, Sig.KILL))
            case TimerKind.stuck:
                self.stop_instance(executor, f"instance (pid {instance.pid}) closed its socket", graceful=False)
            case _:
                pass
        return self.take_effects()

    def unreachable(self, executor_id: str, now: float) -> list[Effect]:
        """The instance socket did not take a send: usually the process is exiting and its exit
        will tell us why. If it is still there after the stop timeout, it is stuck: stop it."""
        self._at(now)
        executor = self.executors.get(executor_id)
        if executor is not None and executor.instance is not None and executor.timer is None:
            log.info("executor %s: instance unreachable", executor.id)
            self._set_timer(executor, TimerKind.stuck, self.stop_timeout)
        return self.take_effects()

    # ------------------------------------------------------------------ events: instances

    def instance_exited(self, executor_id: str, exit_text: str, now: float) -> list[Effect]:
        """The executor's instance is gone (`exit_text` says how); its results came first."""
        self._at(now)
        executor = self.executors.get(executor_id)
        if executor is None or executor.instance is None:
            return self.take_effects()
        executor.instance = None
        if executor.timer is not None:
            self._emit(CancelTimer(executor.timer))
            executor.timer = None
        if executor.phase is Phase.Unbinding:
            log.info("executor %s: %s", executor.id, exit_text)
            self._unbound(executor, executor.stop_reason or exit_text)
            return self.take_effects()
        running, spared = blame(executor, self.suspects)
        if executor.phase is Phase.Binding:
            reason = f"{exit_text} before it entered the session"
            log.warning("executor %s: %s", executor.id, reason)
            if not executor.bind_failed:
                self._bind_failed(executor, BIND_FAILED_ENTER if executor.ready else BIND_FAILED_START, reason)
        else:
            reason = f"{exit_text} {running}"
            log.warning("executor %s: %s (session %s)", executor.id, reason, executor.session_id)
            executor.queue.extendleft(reversed(spared))
        self._unbound(executor, reason)
        return self.take_effects()

    def misbehaved(self, executor_id: str, what: str, now: float) -> list[Effect]:
        """Kill the instance now; its bind fails, or the task it was running fails, with `what`
        it did as the reason (conduct.py); the rest of its tasks go back unstarted."""
        self._at(now)
        executor = self.executors.get(executor_id)
        if executor is None or executor.instance is None:
            return self.take_effects()
        self._emit(Signal(executor.id, Sig.KILL))  # no grace: it may be hostile
        self._emit(Disown(executor.id))
        self.instances_killed += 1
        reason = f"instance (pid {executor.instance.pid}) killed: it {what}"
        if executor.session_id is not None:
            self.strikes.record(executor.session_id, reason)
        log.warning("executor %s: %s (session %s)", executor.id, reason, executor.session_id)
        if executor.phase is Phase.Binding and not executor.bind_failed:
            self._bind_failed(executor, BIND_FAILED_MISBEHAVED, reason)
        elif executor.phase is Phase.Bound:
            for failure in fail_running(executor, self.suspects, reason):
                self.report(failure)
        if executor.phase is not Phase.Unbinding:
            self.stop_instance(executor, reason, graceful=False)  # reported unbound once it exited
        return self.take_effects()

    def instance_message(self, executor_id: str, message: im.InstanceMessage, now: float) -> list[Effect]:
        """A message from the executor's instance (the shell checked who sent it)."""
        self._at(now)
        executor = self.executors.get(executor_id)
        if executor is None or executor.instance is None:
            return self.take_effects()
        try:
            stage = conduct.check(executor, message)
        except conduct.Misbehaviour as exc:
            return self.misbehaved(executor_id, str(exc), now)
        match message:
            case im.InstanceReady() if stage is conduct.Stage.Starting:
                executor.ready = True
                assert executor.session is not None and executor.application is not None
                self._emit(
                    Send(executor.id, im.EnterSession(session=executor.session, application=executor.application))
                )
            case im.SessionEntered(ok=ok, message=text) if stage is conduct.Stage.Entering:
                self._entered(executor, ok, text or "")
            case im.TaskResults(results=results):
                if executor.session_id is not None:
                    completed = take_results(executor, executor.session_id, results, self.suspects, self.now)
                    for completion in completed:
                        self.report(completion)
                    self.pump(executor)
            case im.TaskWaiting(task_id=task_id, attempt=attempt):
                # Answered also while the instance is being stopped (its running task is let
                # finish, and the instance blocks until the answer); there a wrong name is not
                # killed for (conduct.py) and withdraws nothing.
                running = executor.in_flight[0] if executor.in_flight else None
                named = running is not None and (running.task_id, running.attempt) == (task_id, attempt)
                self._emit(Send(executor.id, im.TasksWithdrawn()))
                if not named or executor.waiting is not None or executor.session_id is None:
                    return self.take_effects()
                executor.waiting = (task_id, attempt)
                withdrawn = withdraw(executor)
                log.info(
                    "executor %s: task %d waits for its own session %s; %d tasks behind it handed back",
                    executor.id,
                    task_id,
                    executor.session_id,
                    len(withdrawn),
                )
                self.hand_back_waiting(executor, withdrawn)
            case _:  # Leaving: it is being stopped anyway
                log.debug("executor %s: %s from the instance being stopped", executor.id, type(message).__name__)
        return self.take_effects()

    def _entered(self, executor: LocalExecutor, ok: bool, text: str) -> None:
        assert executor.session is not None and executor.instance is not None
        self._cancel_timer(executor)
        if not ok:
            reason = f"on_session_enter failed: {text}"
            log.warning("executor %s: %s", executor.id, reason)
            self._bind_failed(executor, BIND_FAILED_ENTER, text or "on_session_enter failed")
            self.stop_instance(executor, reason, graceful=False)
            return
        executor.move(PhaseTrigger.entered)
        self.report(be.ExecutorBound(executor_id=executor.id, session_id=executor.session.session_id))
        log.info("executor %s: bound to session %s (pid %d)", executor.id, executor.session_id, executor.instance.pid)
        self.pump(executor)
