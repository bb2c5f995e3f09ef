"""The executors a node holds and their instances: the executor-manager side of every
executor command, and of the instance protocol (protocol/instance.py).

`Executors` applies session-manager commands in order, starts and stops instance processes,
feeds them tasks and turns what they say into reports (`reports`, sent by the manager at the
end of the loop turn). It never talks to the session manager itself. Which tasks an instance
holds, and which are blamed when it dies, is decided in instance_window.py.

Instances are untrusted (conduct.py). A message on the instance socket is accepted only from
the instance process (or its process group) that the kernel names as the sender, under the
token that instance was started with; anything else from an instance, or a message it may not
send at that point, gets it killed at once: its bind fails, or the task it was running fails,
with what it did as the reason. Messages from processes that are no instance of ours are
dropped and counted. At most `INSTANCE_MESSAGES_PER_TURN` messages are read per loop turn, so
no instance can starve the others or the backend.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

from flamed.executor_manager import conduct
from flamed.executor_manager.executors import LocalExecutor
from flamed.executor_manager.install import Packages
from flamed.executor_manager.instance_window import Suspects, blame, fail_running, take_batch, take_results
from flamed.executor_manager.instances import Instance, InstanceStartError
from flamed.executor_manager.machines import Phase, PhaseTrigger
from flamed.transport import Loop, Socket, try_send
from flamed.transport.dropped import DroppedFrames
from flamed.transport.peers import drain_with_peer
from protocol import backend as be
from protocol import codec
from protocol import instance as im
from protocol.codec import FrameError
from protocol.types import ResourceRequirement

log = logging.getLogger("flamed.executor_manager")

#: Seconds an instance gets to say `InstanceReady` and enter the session.
BIND_TIMEOUT = 60.0
#: Messages read from the instance socket per loop turn at most (ZeroMQ reads the instances in
#: turn, so one that floods gets its share of these, and the backend is read every turn).
INSTANCE_MESSAGES_PER_TURN = 1000
#: ExecutorBindFailed code for an application package that could not be installed.
BIND_FAILED_INSTALL = 10
#: ExecutorBindFailed code for "other" (Flame's BIND_RESULT codes: 10 install, 11 instance
#: start, 12 on_session_enter, 19 other): an instance that misbehaved, or a refused session.
BIND_FAILED_MISBEHAVED = 19


class Executors:
    def __init__(
        self,
        loop: Loop,
        instances: Socket,
        instance_endpoint: str,
        *,
        work_root: Path,
        stop_timeout: float,
        dropped: DroppedFrames,
    ) -> None:
        self.loop = loop
        self.instances = instances
        self.instance_endpoint = instance_endpoint
        self.work_root = work_root
        self.stop_timeout = stop_timeout
        self.dropped = dropped
        self.executors: dict[str, LocalExecutor] = {}
        self.reports: list[be.ExecutorReport] = []
        #: added to every instance's environment (the object cache's endpoint, set at registration)
        self.instance_env: dict[str, str] = {}
        #: (session, task) spared at an instance death; blamed if in flight at another
        self.suspects: Suspects = set()
        self._instance_codec = codec.instance_message_codec()
        #: the executor of each running instance, by the token it was started with and by pid
        self._by_token: dict[bytes, LocalExecutor] = {}
        self._by_pid: dict[int, LocalExecutor] = {}
        self.strikes = conduct.Strikes()
        #: may a task be handed to an instance now? (the manager: only on a confirmed link)
        self.may_start: Callable[[], bool] = lambda: True
        #: instances killed for misbehaving, and binds refused because of that
        self.instances_killed = 0
        self.binds_refused = 0
        #: application packages (install.py), next to the work dirs: <runtime>/apps
        self.packages = Packages(
            work_root.parent.parent / "apps",
            lambda: self.instance_env,
            loop.add_reader,
            loop.remove_reader,
            loop.call_later,
        )

    def stats(self) -> dict[str, float]:
        """Counters of the instance channel for `--metrics`."""
        return {
            "node_instance_frames_dropped_total": float(self.dropped.counts.get("instance", 0)),
            "node_backend_frames_dropped_total": float(self.dropped.counts.get("backend", 0)),
            "node_instances_killed_for_misbehaviour_total": float(self.instances_killed),
            "node_binds_refused_for_misbehaviour_total": float(self.binds_refused),
        }

    def running(self) -> list[Instance]:
        return [e.instance for e in self.executors.values() if e.instance is not None]

    def poll_exits(self) -> None:
        """Without pidfds (old kernels) exits are noticed here, from the manager's tick."""
        for executor in list(self.executors.values()):
            if executor.instance is not None and executor.instance.pidfd is None and executor.instance.exited():
                self._instance_exited(executor)

    # ------------------------------------------------------------------ commands

    def command(self, command: be.ExecutorCommand) -> None:
        executor = self.executors.get(command.executor_id)
        match command:
            case be.CreateExecutor(resreq=resreq):
                if executor is None:
                    self.executors[command.executor_id] = LocalExecutor(command.executor_id, resreq)
                    log.info("executor %s: created", command.executor_id)
                self.reports.append(be.ExecutorCreated(executor_id=command.executor_id))
            case be.BindExecutor(session=session, application=app):
                if executor is None:
                    executor = LocalExecutor(command.executor_id, ResourceRequirement())
                    self.executors[command.executor_id] = executor
                self.bind(executor, session, app)
            case be.LaunchTasks(session_id=session_id, tasks=tasks):
                self.launch(executor, command.executor_id, session_id, tasks)
            case be.UnbindExecutor():
                if executor is None:
                    self.reports.append(be.ExecutorUnbound(executor_id=command.executor_id, reason="unknown executor"))
                else:
                    self.unbind(executor, "unbound by the session manager")
            case be.ReleaseExecutor():
                if executor is None:
                    self.reports.append(be.ExecutorReleased(executor_id=command.executor_id))
                else:
                    self.release(executor)
            case be.RecallTasks(session_id=session_id, count=count):
                taken = executor.take_back(session_id, count) if executor is not None else []
                self.reports.append(
                    be.TasksReturned(executor_id=command.executor_id, session_id=session_id, unstarted=taken)
                )

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
        executor.session, executor.application = session, app
        executor.ready = executor.bind_failed = False
        executor.pace = None
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
        self._install_then_start(executor, session, app)

    def _install_then_start(
        self, executor: LocalExecutor, session: be.SessionContext, app: be.ApplicationContext
    ) -> None:
        """Start the instance once the application's package is installed (install.py); an
        install in progress calls back here, and is ignored if the binding changed meanwhile."""

        def installed() -> None:
            if executor.phase is Phase.Binding and executor.instance is None and executor.session is session:
                self._install_then_start(executor, session, app)

        prepared = self.packages.prepare(app, installed)
        if prepared is None:
            log.info("executor %s: bind to %s waits for the install of %s", executor.id, session.session_id, app.name)
            return
        if prepared.error is not None:
            log.warning("executor %s: bind to %s failed: %s", executor.id, session.session_id, prepared.error)
            self._bind_failed(executor, BIND_FAILED_INSTALL, prepared.error)
            self._unbound(executor, reason=f"bind failed: {prepared.error}")
            return
        work_dir = self.work_root / executor.id
        try:
            instance = Instance.start(
                executor.id, app, self.instance_endpoint, work_dir, self.instance_env, install_env=prepared.env
            )
        except InstanceStartError as exc:
            log.warning("executor %s: bind to %s failed: %s", executor.id, session.session_id, exc)
            self._bind_failed(executor, 11, str(exc))
            self._unbound(executor, reason=f"bind failed: {exc}")
            return
        executor.instance = instance
        self._by_token[instance.token] = self._by_pid[instance.pid] = executor
        if instance.pidfd is not None:
            self.loop.add_reader(instance.pidfd, lambda: self._on_pidfd(executor, instance))
        executor.timer = self.loop.call_later(BIND_TIMEOUT, lambda: self._bind_timeout(executor, instance))
        log.info(
            "executor %s: binding session %s (app %s): started pid %d",
            executor.id,
            session.session_id,
            app.name,
            instance.pid,
        )

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
                self.reports.append(be.ExecutorBound(executor_id=executor.id, session_id=session.session_id))
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
        self.reports.append(
            be.ExecutorBindFailed(
                executor_id=executor.id, session_id=executor.session.session_id, code=code, message=message
            )
        )

    def _bind_timeout(self, executor: LocalExecutor, instance: Instance) -> None:
        if executor.instance is not instance or executor.phase is not Phase.Binding:
            return
        code = 12 if executor.ready else 11
        what = "enter the session" if executor.ready else "say InstanceReady"
        message = f"instance (pid {instance.pid}) did not {what} within {BIND_TIMEOUT:.0f}s"
        log.warning("executor %s: %s", executor.id, message)
        self._bind_failed(executor, code, message)
        self.stop_instance(executor, message, graceful=False)

    def launch(
        self, executor: LocalExecutor | None, executor_id: str, session_id: str, tasks: list[be.TaskAssignment]
    ) -> None:
        if executor is None or executor.session_id != session_id:
            log.warning("executor %s: %d tasks for session %s it does not serve", executor_id, len(tasks), session_id)
            keys = [be.TaskKey(task_id=t.task_id, attempt=t.attempt) for t in tasks]
            self.reports.append(
                be.ExecutorUnbound(
                    executor_id=executor_id, session_id=session_id, unstarted=keys, reason="not bound to the session"
                )
            )
            return
        log.debug("executor %s: %d tasks queued", executor_id, len(tasks))
        executor.queue.extend(tasks)
        self.pump(executor)

    def pump(self, executor: LocalExecutor) -> None:
        """Keep the instance's next tasks at hand (instance_window.py): top up its window in
        one message."""
        if executor.phase is not Phase.Bound or not self.may_start():
            return
        batch = take_batch(executor, self.suspects, self.loop.now())
        if batch:
            self._send_instance(executor, im.InvokeTasks(tasks=batch))

    def _send_instance(self, executor: LocalExecutor, message: im.Message) -> None:
        instance = executor.instance
        if instance is None or try_send(self.instances, [instance.token, *codec.encode(message)]):
            return
        # Its socket is gone: usually the process is exiting and its pidfd will tell us why.
        # If it is still there after the stop timeout, it is stuck: stop it.
        log.info("executor %s: instance unreachable", executor.id)
        if executor.timer is None:

            def stuck() -> None:
                if executor.instance is instance:
                    executor.timer = None
                    self.stop_instance(executor, f"instance (pid {instance.pid}) closed its socket", graceful=False)

            executor.timer = self.loop.call_later(self.stop_timeout, stuck)

    def unbind(self, executor: LocalExecutor, reason: str) -> None:
        if executor.phase is Phase.Idle:
            self.reports.append(be.ExecutorUnbound(executor_id=executor.id, reason="not bound"))
        elif executor.phase is not Phase.Unbinding:
            self.stop_instance(executor, reason, graceful=executor.phase is Phase.Bound)

    def release(self, executor: LocalExecutor) -> None:
        if executor.phase is Phase.Idle:
            self._released(executor)
        else:
            executor.release_after_unbind = True
            self.unbind(executor, "released by the session manager")

    def _released(self, executor: LocalExecutor, report: bool = True) -> None:
        self.executors.pop(executor.id, None)
        shutil.rmtree(self.work_root / executor.id, ignore_errors=True)
        if report:
            self.reports.append(be.ExecutorReleased(executor_id=executor.id))
        log.info("executor %s: released", executor.id)

    # ------------------------------------------------------------------ stopping instances

    def stop_instance(self, executor: LocalExecutor, reason: str, graceful: bool) -> None:
        """Leave the session (if `graceful`), then TERM the group, then KILL it, each after
        `instance_stop_timeout`. The executor is reported unbound once the instance exited."""
        instance = executor.instance
        executor.move(PhaseTrigger.stop)
        executor.stop_reason = executor.stop_reason or reason
        executor.cancel_timer()
        if instance is None:
            self._unbound(executor, reason)
            return
        log.info("executor %s: unbinding session %s (%s)", executor.id, executor.session_id, reason)
        if graceful:
            self._send_instance(executor, im.LeaveSession())
            executor.timer = self.loop.call_later(self.stop_timeout, lambda: self._terminate(executor, instance))
        else:
            self._terminate(executor, instance)

    def _terminate(self, executor: LocalExecutor, instance: Instance) -> None:
        if executor.instance is not instance:
            return
        instance.signal_group(signal.SIGTERM)
        executor.timer = self.loop.call_later(self.stop_timeout, lambda: instance.signal_group(signal.SIGKILL))

    def _on_pidfd(self, executor: LocalExecutor, instance: Instance) -> None:
        if instance.pidfd is not None:
            self.loop.remove_reader(instance.pidfd)
        self.on_instances()  # results it sent before dying come first
        if executor.instance is instance and instance.exited():
            self._instance_exited(executor)

    def _instance_exited(self, executor: LocalExecutor) -> None:
        instance = executor.instance
        assert instance is not None
        executor.instance = None
        self._forget(instance)
        executor.cancel_timer()
        exit_text = instance.describe_exit()
        if executor.phase is Phase.Unbinding:
            log.info("executor %s: %s", executor.id, exit_text)
            self._unbound(executor, executor.stop_reason or exit_text)
            return
        running, spared = blame(executor, self.suspects)
        if executor.phase is Phase.Binding:
            reason = f"{exit_text} before it entered the session"
            log.warning("executor %s: %s", executor.id, reason)
            if not executor.bind_failed:
                self._bind_failed(executor, 12 if executor.ready else 11, reason)
        else:
            reason = f"{exit_text} {running}"
            log.warning("executor %s: %s (session %s)", executor.id, reason, executor.session_id)
            executor.queue.extendleft(reversed(spared))
        self._unbound(executor, reason)

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
            self.reports.append(report)
        log.info("executor %s: unbound from session %s (%s)", executor.id, executor.session_id, reason)
        executor.move(PhaseTrigger.gone)
        executor.session = executor.application = None
        executor.queue.clear()
        executor.in_flight.clear()
        executor.ready = False
        if executor.release_after_unbind:
            executor.pending_bind = None
            self._released(executor, report=not quiet)
        elif executor.pending_bind is not None:
            session, app, tasks = executor.pending_bind
            executor.pending_bind = None
            self.bind(executor, session, app, tasks)

    # ------------------------------------------------------------------ instances

    def on_instances(self) -> None:
        for pid, frames in drain_with_peer(self.instances, INSTANCE_MESSAGES_PER_TURN):
            routed = self._by_token.get(frames[0])
            sender = routed if pid is None else self._sender(pid)  # without SO_PEERCRED: the token
            if sender is None:
                self.dropped.log("instance", "not from an instance of ours (or from one being stopped)", frames[0])
                continue
            if routed is not sender:
                self._misbehaved(sender, _wrong_routing_id(sender, frames[0]))
                continue
            try:
                message = self._instance_codec.decode(frames[1:])
            except FrameError as exc:
                self._misbehaved(sender, f"sent a frame that does not decode ({exc.message})")
                continue
            self._handle_instance(sender, message)

    def _sender(self, pid: int) -> LocalExecutor | None:
        """The executor whose instance process (or a process in its group) is `pid`."""
        executor = self._by_pid.get(pid)
        if executor is None:
            try:
                executor = self._by_pid.get(os.getpgid(pid))
            except OSError:  # gone already
                return None
        return executor

    def _forget(self, instance: Instance) -> None:
        """From now on nothing is accepted from `instance`."""
        self._by_token.pop(instance.token, None)
        self._by_pid.pop(instance.pid, None)

    def _misbehaved(self, executor: LocalExecutor, what: str) -> None:
        """Kill the instance now; its bind fails, or the task it was running fails, with `what`
        it did as the reason (conduct.py); the rest of its tasks go back unstarted."""
        instance = executor.instance
        assert instance is not None
        instance.signal_group(signal.SIGKILL)  # no grace: it may be hostile
        self._forget(instance)
        self.instances_killed += 1
        reason = f"instance (pid {instance.pid}) killed: it {what}"
        if executor.session_id is not None:
            self.strikes.record(executor.session_id, reason)
        log.warning("executor %s: %s (session %s)", executor.id, reason, executor.session_id)
        if executor.phase is Phase.Binding and not executor.bind_failed:
            self._bind_failed(executor, BIND_FAILED_MISBEHAVED, reason)
        elif executor.phase is Phase.Bound:
            self.reports.extend(fail_running(executor, self.suspects, reason))
        if executor.phase is not Phase.Unbinding:
            self.stop_instance(executor, reason, graceful=False)  # reported unbound once it exited

    def _handle_instance(self, executor: LocalExecutor, message: im.InstanceMessage) -> None:
        instance = executor.instance
        assert instance is not None
        try:
            stage = conduct.check(executor, message)
        except conduct.Misbehaviour as exc:
            self._misbehaved(executor, str(exc))
            return
        match message:
            case im.InstanceReady() if stage is conduct.Stage.Starting:
                executor.ready = True
                assert executor.session is not None and executor.application is not None
                self._send_instance(
                    executor, im.EnterSession(session=executor.session, application=executor.application)
                )
            case im.SessionEntered(ok=ok, message=text) if stage is conduct.Stage.Entering:
                assert executor.session is not None
                executor.cancel_timer()
                if not ok:
                    reason = f"on_session_enter failed: {text}"
                    log.warning("executor %s: %s", executor.id, reason)
                    self._bind_failed(executor, 12, text or "on_session_enter failed")
                    self.stop_instance(executor, reason, graceful=False)
                    return
                executor.move(PhaseTrigger.entered)
                self.reports.append(be.ExecutorBound(executor_id=executor.id, session_id=executor.session.session_id))
                log.info("executor %s: bound to session %s (pid %d)", executor.id, executor.session_id, instance.pid)
                self.pump(executor)
            case im.TaskResults(results=results):
                self._results(executor, results)
            case _:  # Leaving: it is being stopped anyway
                log.debug("executor %s: %s from the instance being stopped", executor.id, type(message).__name__)

    def _results(self, executor: LocalExecutor, results: list[im.TaskOutcome]) -> None:
        session_id = executor.session_id
        if session_id is None:
            return
        self.reports.extend(take_results(executor, session_id, results, self.suspects, self.loop.now()))
        self.pump(executor)


def _wrong_routing_id(executor: LocalExecutor, used: bytes) -> str:
    if used == executor.id.encode():  # a flamed.service from before FLAME_INSTANCE_TOKEN
        return "used its executor id as routing id, not FLAME_INSTANCE_TOKEN (an older flamed.service?)"
    return f"used the routing id {used[:40]!r}, which is not its own"
