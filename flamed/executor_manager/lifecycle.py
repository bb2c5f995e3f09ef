"""The shell around the executor manager's core (core.py): the executors' instances as
processes and the instance socket (protocol/instance.py).

`Executors` turns socket, pidfd and timer activity into the core's events and does what the
core's effects say with the real `Instance`, socket and loop: it starts and signals instances,
sends to them, runs timers, installs packages (install.py) and removes those of unregistered
applications (holding a shared lock on the release each instance runs, so no executor manager
of the host removes it under it), removes work dirs, and queues the reports (`reports`, sent
by the manager at the end of the loop turn). It decides nothing about executors and never
talks to the session manager itself.

Instances are untrusted (conduct.py). A message on the instance socket is accepted only from
the instance process (or its process group) that the kernel names as the sender, under the
token that instance was started with; anything else from an instance gets it killed at once
(the core's `misbehaved`). Messages from processes that are no instance of ours are dropped and
counted. At most `INSTANCE_MESSAGES_PER_TURN` messages are read per loop turn, so no instance
can starve the others or the backend.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from flamed.executor_manager import effects as fx
from flamed.executor_manager.converge import converge
from flamed.executor_manager.core import ExecutorsCore
from flamed.executor_manager.install import Packages
from flamed.executor_manager.instances import Instance, InstanceStartError
from flamed.executor_manager.zygote import Zygote
from flamed.transport import Loop, Socket, Timer, try_send
from flamed.transport.dropped import DroppedFrames
from flamed.transport.peers import drain_with_peer
from protocol import backend as be
from protocol import codec
from protocol.codec import FrameError

log = logging.getLogger("flamed.executor_manager")

#: Messages read from the instance socket per loop turn at most (ZeroMQ reads the instances in
#: turn, so one that floods gets its share of these, and the backend is read every turn).
INSTANCE_MESSAGES_PER_TURN = 1000

_SIGNALS = {fx.Sig.TERM: signal.SIGTERM, fx.Sig.KILL: signal.SIGKILL}


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
        self.dropped = dropped
        self.core = ExecutorsCore(stop_timeout)
        self.executors = self.core.executors
        self.reports: list[be.ExecutorReport] = []
        #: added to every instance's environment (the object cache's endpoint, set at registration)
        self.instance_env: dict[str, str] = {}
        #: forks instances of Python services (zygote.py); started at the first it can serve
        self.zygote = Zygote(instance_endpoint)
        self._instance_codec = codec.instance_message_codec()
        #: the instance process of each executor that has one
        self._processes: dict[str, Instance] = {}
        #: the executor of each instance we accept messages from, by its token and by its pid
        self._by_token: dict[bytes, str] = {}
        self._by_pid: dict[int, str] = {}
        self._timers: dict[fx.TimerKey, Timer] = {}
        #: the shared lock each instance holds on its application's release (install.Packages.hold)
        self._holds: dict[str, IO[str]] = {}
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
            "node_instances_killed_for_misbehaviour_total": float(self.core.instances_killed),
            "node_binds_refused_for_misbehaviour_total": float(self.core.binds_refused),
            **self.zygote.stats(),
        }

    def running(self) -> list[Instance]:
        return list(self._processes.values())

    # ------------------------------------------------------------------ events in

    def command(self, command: be.ExecutorCommand) -> None:
        self.run(self.core.command(command, self.loop.now()))

    def converge(self, snapshot: list[be.ExecutorAssignment], resent: set[tuple[str, int, int]]) -> None:
        """Converge to a registration's snapshot, then start what the confirmed link allows."""
        now = self.loop.now()
        self.run(converge(self.core, snapshot, resent, now))
        self.run(self.core.link_confirmed(now))

    def keep_applications(self, names: list[str]) -> None:
        """Only `names` are registered (a registration's list): remove the installed packages
        of every other application, now or once no instance here uses them."""
        unregistered = self.packages.installed_applications() - set(names)
        self.run(self.core.applications_unregistered(unregistered, self.loop.now()))

    def settle(self) -> None:
        """Run the effects decided outside an event of ours (a drain step, refused binds)."""
        self.run(self.core.take_effects())

    def poll_exits(self) -> None:
        """Without pidfds (old kernels) exits are noticed here, from the manager's tick."""
        for executor_id, instance in list(self._processes.items()):
            if instance.pidfd is None and instance.exited():
                self._exited(executor_id, instance)

    def _on_pidfd(self, executor_id: str, instance: Instance) -> None:
        if instance.pidfd is not None:
            self.loop.remove_reader(instance.pidfd)
        self.on_instances()  # results it sent before dying come first
        if self._processes.get(executor_id) is instance and instance.exited():
            self._exited(executor_id, instance)

    def _exited(self, executor_id: str, instance: Instance) -> None:
        del self._processes[executor_id]
        self._forget(instance)
        self._let_go(executor_id)  # before the core decides what to remove
        self.run(self.core.instance_exited(executor_id, instance.describe_exit(), self.loop.now()))

    def on_instances(self) -> None:
        for pid, frames in drain_with_peer(self.instances, INSTANCE_MESSAGES_PER_TURN):
            routed = self._by_token.get(frames[0])
            sender = routed if pid is None else self._sender(pid)  # without SO_PEERCRED: the token
            if sender is None:
                self.dropped.log("instance", "not from an instance of ours (or from one being stopped)", frames[0])
                continue
            now = self.loop.now()
            if routed != sender:
                self.run(self.core.misbehaved(sender, _wrong_routing_id(sender, frames[0]), now))
                continue
            try:
                message = self._instance_codec.decode(frames[1:])
            except FrameError as exc:
                self.run(self.core.misbehaved(sender, f"sent a frame that does not decode ({exc.message})", now))
                continue
            self.run(self.core.instance_message(sender, message, now))

    def _sender(self, pid: int) -> str | None:
        """The executor whose instance process (or a process in its group) is `pid`."""
        executor_id = self._by_pid.get(pid)
        if executor_id is None:
            try:
                executor_id = self._by_pid.get(os.getpgid(pid))
            except OSError:  # gone already
                return None
        return executor_id

    def _forget(self, instance: Instance) -> None:
        """From now on nothing is accepted from `instance`."""
        self._by_token.pop(instance.token, None)
        self._by_pid.pop(instance.pid, None)

    def _let_go(self, executor_id: str) -> None:
        """The executor's instance no longer uses its application's release."""
        hold = self._holds.pop(executor_id, None)
        if hold is not None:
            hold.close()

    def _firing(self, key: fx.TimerKey) -> Callable[[], None]:
        def fire() -> None:
            self._timers.pop(key, None)
            self.run(self.core.timer(key, self.loop.now()))

        return fire

    # ------------------------------------------------------------------ effects out

    def run(self, effects: Iterable[fx.Effect]) -> None:
        """Do what the core decided, in order; an answer's effects are done at once, before
        the next effect (as if the core had done the I/O itself)."""
        for effect in effects:
            match effect:
                case fx.Report(reports=reports):
                    self.reports.extend(reports)
                case fx.Send(executor_id=executor_id, message=message):
                    instance = self._processes.get(executor_id)
                    if instance is not None and not try_send(self.instances, [instance.token, *codec.encode(message)]):
                        # Its socket is gone: usually the process is exiting and its pidfd will tell.
                        self.run(self.core.unreachable(executor_id, self.loop.now()))
                case fx.Signal(executor_id=executor_id, sig=sig):
                    instance = self._processes.get(executor_id)
                    if instance is not None:
                        instance.signal_group(_SIGNALS[sig])
                case fx.Disown(executor_id=executor_id):
                    instance = self._processes.get(executor_id)
                    if instance is not None:
                        self._forget(instance)
                case fx.SetTimer(key=key, deadline=deadline):
                    old = self._timers.pop(key, None)
                    if old is not None:
                        old.cancel()
                    self._timers[key] = self.loop.call_at(deadline, self._firing(key))
                case fx.CancelTimer(key=key):
                    timer = self._timers.pop(key, None)
                    if timer is not None:
                        timer.cancel()
                case fx.Install():
                    self._install(effect)
                case fx.StartInstance():
                    self._start(effect)
                case fx.RemoveWorkDir(executor_id=executor_id):
                    shutil.rmtree(self.work_root / executor_id, ignore_errors=True)
                case fx.RemovePackages(application=name):
                    done = self.packages.remove(name)  # only releases no instance of the host holds
                    self.run(self.core.packages_removed(name, done, self.loop.now()))

    def _install(self, effect: fx.Install) -> None:
        """Prepare the application's package; an install in progress answers when it is over."""
        executor_id, binding = effect.executor_id, effect.binding

        def progressed() -> None:
            self.run(self.core.install_progressed(executor_id, binding, self.loop.now()))

        prepared = self.packages.prepare(effect.app, progressed)
        if prepared is None:
            log.info("executor %s: bind waits for the install of %s", executor_id, effect.app.name)
            return
        self.run(self.core.installed(executor_id, binding, prepared.error, prepared.env, self.loop.now()))

    def _start(self, effect: fx.StartInstance) -> None:
        """`Instance.start` is the one place an instance is started."""
        executor_id = effect.executor_id
        work_dir = self.work_root / executor_id
        self._let_go(executor_id)
        hold = self.packages.hold(effect.app)  # no executor manager of the host removes it now
        try:
            instance = Instance.start(
                executor_id,
                effect.app,
                self.instance_endpoint,
                work_dir,
                self.instance_env,
                install_env=effect.install_env,
                zygote=self.zygote,
            )
        except InstanceStartError as exc:
            if hold is not None:
                hold.close()
            self.run(self.core.start_failed(executor_id, effect.binding, str(exc), self.loop.now()))
            return
        self._processes[executor_id] = instance
        if hold is not None:
            self._holds[executor_id] = hold
        self._by_token[instance.token] = executor_id
        self._by_pid[instance.pid] = executor_id
        if instance.pidfd is not None:
            self.loop.add_reader(instance.pidfd, lambda: self._on_pidfd(executor_id, instance))
        self.run(self.core.started(executor_id, effect.binding, instance.pid, self.loop.now()))


def _wrong_routing_id(executor_id: str, used: bytes) -> str:
    if used == executor_id.encode():  # a flamed.service from before FLAME_INSTANCE_TOKEN
        return "used its executor id as routing id, not FLAME_INSTANCE_TOKEN (an older flamed.service?)"
    return f"used the routing id {used[:40]!r}, which is not its own"
