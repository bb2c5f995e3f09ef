"""The executor-manager daemon: one loop, a DEALER to the session manager, a ROUTER for its
instances, one pidfd per instance.

Each turn it reads what is ready, applies session-manager commands in order and instance
messages as they come, and at the end of the turn sends every report the turn produced in one
`Reports` message. Instances keep running while the session manager is away; the executor
manager registers again with backoff and converges to the snapshot it gets back (DESIGN 5).
On SIGTERM it drains first (drain.py); the executors live in the pure core (core.py) and
their instances in its shell (lifecycle.py).

Identity (DESIGN 6a): at start it draws a secret that only this process and the backend link
ever see (never logged); every registration and its goodbye carry it, so the session manager
can tell this process coming back from anyone who read its public incarnation. Each connection
to the backend has a fresh random routing id, and a new connection is opened each time the
executor manager registers again: the backend ROUTER hands no id over, so no id a client could
learn, or that an old connection left behind, carries this node's traffic.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import time
import uuid
from pathlib import Path

from flamed.config import Config
from flamed.executor_manager.converge import rejoin
from flamed.executor_manager.drain import Drain
from flamed.executor_manager.lifecycle import Executors
from flamed.executor_manager.link import BackendLink, ConnectAction, TickAction
from flamed.executor_manager.machines import Phase
from flamed.executor_manager.node import (
    default_runtime_dir,
    instance_socket_path,
    node_info,
    prepare_runtime_dir,
    remove_instance_socket,
    secure_socket,
)
from flamed.notify import Notifier
from flamed.transport import (
    CONNECTION_UP,
    Loop,
    Reconnect,
    SignalInbox,
    Socket,
    bind_router,
    close_monitored,
    connect_dealer,
    connections_up,
    context,
    drain,
    try_send,
)
from flamed.transport.dropped import DroppedFrames
from flamed.transport.security import client_curve
from protocol import backend as be
from protocol import codec
from protocol.codec import FrameError
from protocol.errors import ErrorCode, FlameBaseError

log = logging.getLogger("flamed.executor_manager")

_TICK = 0.1


class Fatal(FlameBaseError):
    """The executor manager cannot go on (e.g. protocol version mismatch); exit non-zero."""


class ExecutorManager:
    def __init__(self, backend: str, node_name: str, slots: int, runtime_dir: Path | None, config: Config) -> None:
        self.config = config
        self.backend_endpoint = backend
        self.node_name = node_name
        self.slots = slots
        self.runtime_dir = runtime_dir or default_runtime_dir()
        if tightened := prepare_runtime_dir(self.runtime_dir):  # UnsafeDirectory: refuse to start
            log.warning("node %s: %s", node_name, tightened)
        self.stop_timeout = config.executor_manager.instance_stop_timeout
        self.incarnation = uuid.uuid4().hex
        #: proves this process to the session manager (protocol/backend.py RegisterNode)
        self.secret = secrets.token_urlsafe(32)
        self.loop = Loop()
        self.signals = SignalInbox(self.loop, self._on_signal)
        rec = config.recovery
        self.link = BackendLink(
            rec.reconnect_backoff_min, rec.reconnect_backoff_max, rec.heartbeat_interval, rec.heartbeat_liveness
        )
        #: the connection's retry timing follows the recovery config: a session manager that is
        #: back is seen within `reconnect_backoff_max`, which its drain after a restart covers
        self.reconnect = Reconnect.backoff(rec.reconnect_backoff_min, rec.reconnect_backoff_max)
        self.exit_code = 0
        self._manager_codec = codec.manager_message_codec()
        self.dropped = DroppedFrames(self.loop, log)
        self._register_timer = self.loop.call_at(0.0, self._register)
        #: a registration went out on the current connection and nothing has come back since
        self._unanswered = False
        max_size = config.limits.max_message_size
        self.max_message_size = max_size
        # CURVE client on the backend when configured (the key must be named after this node).
        self.backend_curve = client_curve(config.security)  # SecurityError before anything is bound
        self.socket_path = instance_socket_path(self.runtime_dir, node_name)
        self.instance_endpoint = f"ipc://{self.socket_path}"
        self.instances = bind_router(self.instance_endpoint, max_size, handover=True)
        secure_socket(self.socket_path)
        self.holder = Executors(
            self.loop,
            self.instances,
            self.instance_endpoint,
            work_root=self.runtime_dir / "work" / self.incarnation[:8],
            stop_timeout=self.stop_timeout,
            dropped=self.dropped,
        )
        self.executors = self.holder.executors
        # No task starts on a link we suspect or that is not confirmed (link.py).
        self.holder.core.may_start = self.link.may_start
        # The instance channel above stays plain: ipc:// in our 0700 runtime dir.
        self.backend, self.backend_monitor = self._connect_backend()
        #: connections the current backend socket has made (a second one: it was lost and made again)
        self._backend_ups = 0
        self.notifier = Notifier()
        #: set by SIGTERM (drain.py)
        self.draining: Drain | None = None
        self.config_path: str | None = None
        self.log_level: str | None = None
        self.log_format: str | None = None

    # ------------------------------------------------------------------ lifecycle

    def install_signal_handlers(self) -> None:
        self.signals.install((signal.SIGTERM, signal.SIGINT, signal.SIGHUP))

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            self._reload()
        elif signum == signal.SIGTERM and self.draining is None:
            self._begin_drain()
        else:  # SIGINT, or a second SIGTERM: stop now
            log.info("node %s: stopping on signal", self.node_name)
            self.notifier.stopping("stopping instances")
            self.loop.stop()

    def _reload(self) -> None:
        """SIGHUP: re-read the config file for the log level and format; the rest needs a restart."""
        from flamed.config import ConfigError, load_config
        from flamed.logs import setup_logging

        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            log.error("node %s: reload: %s; keeping the running config", self.node_name, exc)
            return
        level = self.log_level or config.log.level
        setup_logging(level, self.log_format or config.log.format)
        log.info("node %s: reload: log level %s; other keys take effect at the next restart", self.node_name, level)

    # ------------------------------------------------------------------ graceful stop

    def _begin_drain(self) -> None:
        """SIGTERM: accept no new binds, let the running tasks finish (up to `stop_grace`),
        hand queued tasks back unstarted (no retry counted), then stop and say goodbye."""
        grace = self.config.executor_manager.stop_grace
        self.draining = Drain(self.holder.core, self.node_name, grace, self.loop.now())
        self.notifier.stopping(self.draining.announce())
        if self.link.registered:  # tell the session manager now, not at the next heartbeat
            self._send_heartbeat(self.loop.now())
        self._drain_step()

    def _drain_step(self) -> None:
        assert self.draining is not None
        done = self.draining.step(self.loop.now())
        self.holder.settle()
        if done:
            self.loop.stop()
        else:
            self.notifier.status(self.draining.status())

    def _connect_backend(self) -> tuple[Socket, Socket]:
        """A new connection to the backend under a new random routing id, and the monitor that
        says when it is up. ZMTP never drops it for silence (so it never comes back under this
        id while the session manager may still hold it): the link's heartbeats decide, and
        `_reconnect` replaces it."""
        routing_id = f"em:{self.node_name[:64]}:{secrets.token_hex(16)}".encode()
        sock = connect_dealer(
            self.backend_endpoint,
            routing_id,
            self.max_message_size,
            curve=self.backend_curve,
            zmtp_timeout=False,
            reconnect=self.reconnect,
            monitor=CONNECTION_UP,
        )
        return sock, sock.get_monitor_socket()

    def _on_backend_up(self) -> None:
        """The connection to the session manager is up (again): while registering, register on
        it now rather than at the next backoff try, so a node that is back in time (a session
        manager restarted, a freeze or a cut shorter than the drain) is confirmed at once."""
        ups = connections_up(self.backend_monitor)
        if not ups:
            return
        before, self._backend_ups = self._backend_ups, self._backend_ups + ups
        match self.link.connection_up(before, self._unanswered):
            case ConnectAction.register:
                log.info("node %s: connected to %s; registering now", self.node_name, self.backend_endpoint)
                self._register_timer.cancel()
                self._register()
            case ConnectAction.rejoin:
                self._reregister("the connection to the session manager was made again (it may have restarted)")
            case ConnectAction.nothing:
                pass

    def _reconnect(self) -> None:
        """Drop the backend connection and open a new one: what the old one still carries in
        either direction is lost, which the link's epoch and sequence numbers allow for."""
        self.loop.remove_reader(self.backend)
        self.loop.remove_reader(self.backend_monitor)
        close_monitored(self.backend, self.backend_monitor)
        self.backend, self.backend_monitor = self._connect_backend()
        self._backend_ups = 0
        self._unanswered = False
        self.loop.add_reader(self.backend, self._on_backend)
        self.loop.add_reader(self.backend_monitor, self._on_backend_up)

    def run(self) -> int:
        self.loop.add_reader(self.backend, self._on_backend)
        self.loop.add_reader(self.backend_monitor, self._on_backend_up)
        self.loop.add_reader(self.instances, self.holder.on_instances)
        self.loop.add_turn_end(self._flush)
        self.loop.add_turn_end(lambda: self.link.turn_ended(self.loop.now()))
        self.loop.call_every(_TICK, self._tick)
        self.notifier.ready(f"registering with {self.backend_endpoint}")
        if self.notifier.enabled:
            self.loop.call_every(self.notifier.alive_every(), lambda: self.notifier.alive(self.status_line()))
        log.info(
            "executor manager for node %s (%d slots, incarnation %s): backend %s, instances %s",
            self.node_name,
            self.slots,
            self.incarnation,
            self.backend_endpoint,
            self.instance_endpoint,
        )
        try:
            self.loop.run()
        except Fatal as exc:
            log.error("node %s: %s", self.node_name, exc)
            self.exit_code = 1
        finally:
            self.shutdown()
        return self.exit_code

    def stats(self) -> dict[str, float]:
        """Counters and gauges of this node for `--metrics`."""
        phases = {phase.lower(): 0.0 for phase in Phase}
        for executor in self.executors.values():
            phases[executor.phase.lower()] += 1
        stats = {f"node_executors_{phase}": count for phase, count in phases.items()}
        stats["node_slots"] = float(self.slots)
        stats["node_registered"] = 1.0 if self.link.registered else 0.0
        stats["node_draining"] = 0.0 if self.draining is None else 1.0
        stats["node_tasks_in_flight"] = float(sum(len(e.in_flight) for e in self.executors.values()))
        stats["node_tasks_queued"] = float(sum(len(e.queue) for e in self.executors.values()))
        stats["node_loop_turns_total"] = float(self.loop.turns)
        stats.update(self.holder.stats())
        return stats

    def status_line(self) -> str:
        if self.draining is not None:
            return f"draining: {self.draining.busy()} executors busy"
        if not self.link.registered:
            return f"registering with {self.backend_endpoint}"
        bound = sum(1 for e in self.executors.values() if e.phase is Phase.Bound)
        return f"connected to {self.backend_endpoint}, {len(self.executors)} executors ({bound} bound)"

    def shutdown(self) -> None:
        """Stop every instance (TERM, then KILL after `instance_stop_timeout`), say goodbye,
        close the sockets. Bounded: at most about twice the stop timeout."""
        running = self.holder.running()
        for instance in running:
            instance.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        killed = False
        while any(not i.exited() for i in running):
            if not killed and time.monotonic() >= deadline:
                for instance in running:
                    if instance.status is None:
                        instance.signal_group(signal.SIGKILL)
                killed = True
            time.sleep(0.01)
        if running:
            log.info("node %s: stopped %d instances", self.node_name, len(running))
        self.holder.zygote.close()
        if self.link.registered:
            goodbye = be.Goodbye(
                epoch=self.link.epoch,
                seq=self.link.next_seq(self.loop.now()),
                incarnation=self.incarnation,
                secret=self.secret,
            )
            try_send(self.backend, codec.encode(goodbye))
        self.signals.close()
        self.notifier.close()
        self.instances.close(linger=0)
        close_monitored(self.backend, self.backend_monitor, linger=1000)
        remove_instance_socket(self.socket_path, self.runtime_dir)
        shutil.rmtree(self.holder.work_root, ignore_errors=True)
        context().term()

    # ------------------------------------------------------------------ registration

    def _register(self) -> None:
        if self._unanswered:
            # The last try went out and nothing came back within the backoff: the connection
            # may be dead without either side having noticed (ZMTP does not watch it, see
            # `_connect_backend`). Try the next one on a new connection.
            self._reconnect()
        message = be.RegisterNode(
            protocol_version=codec.PROTOCOL_VERSION,
            node=node_info(self.node_name, self.slots),
            incarnation=self.incarnation,
            executors=sorted(self.executors),
            stopping=self.draining is not None,
            features=be.FEATURES,
            secret=self.secret,
        )
        sent = try_send(self.backend, codec.encode(message))
        self._unanswered = sent
        delay = self.link.next_backoff()
        log.log(
            logging.INFO if self.link.attempts <= 1 else logging.DEBUG,
            "node %s: registering with %s (%d executors held)%s; next try in %.1fs",
            self.node_name,
            self.backend_endpoint,
            len(self.executors),
            "" if sent else " - not connected yet",
            delay,
        )
        self._register_timer = self.loop.call_later(delay, self._register)

    def _reregister(self, why: str) -> None:
        """Our view of the link is stale or the session manager is gone: register again, on a
        new connection, keeping every instance running but starting no task until the session
        manager has confirmed our executors. The registration goes out as soon as the new
        connection is up (`_on_backend_up`); the backoff timer is the fallback."""
        if not self.link.registered:
            return
        log.warning("node %s: registering again (%s)", self.node_name, why)
        self.link.lost()
        self._reconnect()
        self._register_timer.cancel()
        self._register_timer = self.loop.call_later(self.link.next_backoff(), self._register)

    def _on_registered(self, message: be.Registered) -> None:
        self._register_timer.cancel()
        self.link.registered_with(message, self.loop.now())
        self._cache_env(message.cache_endpoint)
        if message.applications is not None:
            self.holder.keep_applications(message.applications)
        log.info(
            "node %s: registered (epoch %d, %d executors in snapshot)",
            self.node_name,
            message.epoch,
            len(message.executors),
        )
        # Completions not sent yet (an earlier registration of this turn asked to resend them)
        # are decided by this snapshot too; unreported recalls are void (converge.rejoin).
        self.holder.reports, known = rejoin(self.link, self.holder.reports, message.executors)
        if self.link.not_resent:
            log.info(
                "node %s: not resending %d completions the snapshot no longer lists (recorded already, "
                "or retried elsewhere): %s",
                self.node_name,
                len(self.link.not_resent),
                ", ".join(f"{c.session_id}/{c.task_id} attempt {c.attempt}" for c in self.link.not_resent[:5]),
            )
        self.holder.converge(message.executors, known)

    def _cache_env(self, endpoint: str) -> None:
        """What instances need to reach the object cache the session manager named, and the
        node-local copies they share (docs/object-cache.md): no configuration of their own."""
        env = self.holder.instance_env
        env.pop("FLAME_CACHE_ENDPOINT", None)
        if endpoint:
            env["FLAME_CACHE_ENDPOINT"] = endpoint
        # systemd's CacheDirectory= (on disk) when there is one, else the runtime dir
        root = Path(os.environ["CACHE_DIRECTORY"]) if os.environ.get("CACHE_DIRECTORY") else self.runtime_dir
        env["FLAME_CACHE_LOCAL_DIR"] = str(root / "objects")
        env["FLAME_CACHE_LOCAL_BYTES"] = str(self.config.cache.local_copy_bytes)

    # ------------------------------------------------------------------ backend

    def _on_backend(self) -> None:
        if why := self.link.suspicion(self.loop.now()):
            # Judged before reading: after a stand-still, messages queued meanwhile would look
            # fresh although the session manager may have written us off since.
            self._reregister(why)
        self._unanswered = False  # the session manager is heard on this connection
        messages: list[be.ManagerMessage] = []
        for frames in drain(self.backend):
            try:
                messages.append(self._manager_codec.decode(frames))
            except FrameError as exc:
                if exc.code is ErrorCode.VersionMismatch:
                    raise Fatal(f"the session manager speaks another protocol: {exc.message}") from None
                self.dropped.log("backend", exc.message)
        # Registrations sent while the session manager was away queue up and are all answered
        # when it is back; each answer supersedes the ones before it (a newer epoch), so only
        # the last `Registered` of a batch is acted on, with what follows it.
        last = max((i for i, m in enumerate(messages) if isinstance(m, be.Registered)), default=0)
        for message in messages[last:]:
            self._handle_manager(message)

    def _handle_manager(self, message: be.ManagerMessage) -> None:
        link = self.link
        match message:
            case be.Registered():
                self._on_registered(message)
            case be.Heartbeat() | be.Commands():
                if not link.registered:
                    return
                if why := link.accept(message.epoch, message.seq, message.ack, self.loop.now()):
                    self._reregister(why)
                    return
                if isinstance(message, be.Commands):
                    commands = message.commands
                    if self.draining is not None:
                        commands = self.draining.refuse_binds(commands)
                        self.holder.settle()
                    for command in commands:
                        self.holder.command(command)
            case be.Error(code=ErrorCode.Reregister):
                self._reregister(f"session manager: {message.message}")
            case be.Error(code=ErrorCode.DuplicateNode):
                # The next try is already scheduled by `_register`, with backoff and jitter: a
                # restarted executor manager gets its name back soon after the old one fell
                # silent (not only after reconnect_backoff_max); a real duplicate backs off to it.
                log.error("node %s: refused: %s; retrying with backoff", self.node_name, message.message)
                if self.executors:
                    # Another executor manager holds our name now: the session manager has
                    # cleaned up what we held and retried its tasks, so our instances are
                    # orphans (I5). Stop them; we start afresh if we get the name back.
                    log.warning("node %s: stopping %d executors we no longer own", self.node_name, len(self.executors))
                    self.holder.converge([], set())
            case be.Error(code=ErrorCode.Unauthorized):
                # Our key is not (or no longer) allowed for this node, or the session manager
                # took us for someone else: nothing we send counts. Register again (the next
                # try is already scheduled if we were not registered).
                log.error("node %s: refused (Unauthorized): %s", self.node_name, message.message)
                self._reregister(f"refused: {message.message}")
            case be.Error(code=ErrorCode.VersionMismatch):
                raise Fatal(f"registration refused: {message.message}; run the same flamed version on both sides")
            case be.Error():
                log.warning("node %s: session manager error %s: %s", self.node_name, message.code, message.message)

    def _tick(self) -> None:
        now = self.loop.now()
        match self.link.on_tick(now):
            case TickAction.rejoin, why:
                self._reregister(why)
            case TickAction.heartbeat, _:
                self._send_heartbeat(now)
            case _:
                pass
        self.holder.poll_exits()
        if self.draining is not None:
            self._drain_step()

    def _send_heartbeat(self, now: float) -> None:
        link = self.link
        heartbeat = be.Heartbeat(epoch=link.epoch, seq=link.next_seq(now), stopping=self.draining is not None)
        try_send(self.backend, codec.encode(heartbeat))

    def _flush(self) -> None:
        if not self.holder.reports:
            return
        reports, self.holder.reports = self.holder.reports, []
        completions = [r for r in reports if isinstance(r, be.TaskCompleted)]
        link = self.link
        if not link.registered:
            # The snapshot at the next registration says what the session manager still
            # needs; only completions are kept to be resent.
            link.keep(0, completions)
            return
        seq = link.next_seq(self.loop.now())
        link.keep(seq, completions)
        try_send(self.backend, codec.encode(be.Reports(epoch=link.epoch, seq=seq, reports=reports)))
