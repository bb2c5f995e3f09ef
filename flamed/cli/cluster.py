"""`flamed cluster`: a session manager, an object cache and N executor managers on this host,
in the foreground.

The cluster process supervises its daemons: it starts the session manager, waits until it
answers, starts the object cache and the executor managers, restarts either that dies after it
has run a while (with backoff), and on Ctrl-C / SIGTERM stops the executor managers first (they
stop their instances and say goodbye), then the object cache, then the session manager. Every child gets SIGKILL if the
cluster process itself dies, so nothing is ever left behind.

Rules that keep it from hanging or failing silently:
- it never blocks on anything but one `select` over the stop signal, the children's exit
  (pidfds) and their stderr, so Ctrl-C and SIGTERM work at every moment; a second one during
  the stop kills what is left at once;
- a child that fails to start (the session manager before it answers, an object cache or an
  executor manager that exits non-zero within `START_GRACE` seconds) stops the whole cluster, which exits 1 and names
  the child and its last error line; so does the session manager dying at any time;
- children's stderr passes through the supervisor unchanged (their logs stay on the terminal),
  which keeps each child's last lines to name the reason when it fails.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from flamed.config import DEFAULT_CACHE, DEFAULT_FRONTEND, Config
from flamed.lifeline import parent_death_signal
from flamed.transport import close, connect_dealer, context, drain, try_send
from protocol import codec, frontend
from protocol.errors import FlameBaseError

STOP_TIMEOUT = 15.0
READY_TIMEOUT = 30.0
#: An executor manager or object cache that exits non-zero this soon after its start failed to start.
START_GRACE = 10.0


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    pidfd: int = -1
    restarts: int = 0
    restart_at: float | None = None
    started: float = field(default=0.0)
    #: its last lines of stderr, to name the reason when it fails
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=20))
    _partial: bytes = b""

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv,
            stderr=subprocess.PIPE,
            preexec_fn=parent_death_signal(signal.SIGKILL),  # noqa: PLW1509 - one C call, libc preloaded
        )
        assert self.process.stderr is not None
        os.set_blocking(self.process.stderr.fileno(), False)
        self.pidfd = os.pidfd_open(self.process.pid)
        self.started = time.monotonic()
        self.restart_at = None
        self._partial = b""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def reap(self) -> int | None:
        code = self.process.poll() if self.process else None
        if code is not None and self.pidfd >= 0:
            self.relay()  # what it said last, before its pipe is forgotten
            os.close(self.pidfd)
            self.pidfd = -1
        return code

    def stderr_fd(self) -> int | None:
        stream = self.process.stderr if self.process is not None else None
        return None if stream is None or stream.closed else stream.fileno()

    def relay(self) -> None:
        """Copy what the child wrote to stderr to ours; remember its last lines."""
        stream = self.process.stderr if self.process is not None else None
        if stream is None or stream.closed:
            return
        while True:
            try:
                chunk = os.read(stream.fileno(), 65536)
            except BlockingIOError:
                return
            if not chunk:  # the child closed it (it exited)
                if self._partial:
                    self._keep(self._partial)
                    self._partial = b""
                stream.close()
                return
            with contextlib.suppress(OSError):  # our own stderr gone: keep supervising
                os.write(sys.stderr.fileno(), chunk)
            *lines, self._partial = (self._partial + chunk).split(b"\n")
            for line in lines:
                self._keep(line)

    def _keep(self, line: bytes) -> None:
        text = line.decode(errors="replace").strip()
        if text:
            self.tail.append(text)

    def reason(self) -> str:
        """Its last error line (or its last line): why it failed, as it said it."""
        for line in reversed(self.tail):
            if "error" in line.lower() or "Traceback" in line:
                return line
        return self.tail[-1] if self.tail else "it said nothing on stderr"


class Stopped(FlameBaseError):
    """Ctrl-C or SIGTERM arrived while the cluster was starting."""


def wait_ready(endpoint: str, deadline: float, child: Child, stop: socket.socket, others: list[Child]) -> bool:
    """True once the session manager at `endpoint` answers a Hello; False if it exits or does
    not answer by `deadline`. Raises `Stopped` on Ctrl-C or SIGTERM. Never blocks on the socket:
    a send to a session manager that is not there would wait for ever."""
    sock = connect_dealer(endpoint, b"cluster-" + os.urandom(6).hex().encode())
    decoder = codec.server_reply_codec()
    hello = codec.encode(frontend.Hello(request_id=1, protocol_version=codec.PROTOCOL_VERSION))
    try:
        while time.monotonic() < deadline and child.alive():
            try_send(sock, hello)  # False while not connected yet (IMMEDIATE): again next round
            fds: list[int] = [stop.fileno(), *_stderr_fds([child, *others])]
            readable, _, _ = select.select(fds, [], [], 0.2)
            _relay_all([child, *others])
            if stop.fileno() in readable:
                raise Stopped
            for frames in drain(sock):
                try:
                    reply = decoder.decode(frames)
                except codec.FrameError:
                    continue
                if isinstance(reply, frontend.Welcome):
                    return True
        return False
    finally:
        close(sock)


def cache_endpoint_for(frontend: str, config: Config) -> str:
    """The object cache's endpoint when neither --cache nor the config names one: next to the
    frontend (tcp port + 2, or an ipc path beside it), so that clusters started side by side
    with their own --frontend/--backend do not fight over the cache's default port."""
    if config.cache.endpoint != DEFAULT_CACHE or frontend == DEFAULT_FRONTEND:
        return config.cache.endpoint
    if frontend.startswith("ipc://"):
        return frontend + "-cache"
    host, _, port = frontend.rpartition(":")
    return f"{host}:{int(port) + 2}"


def run_cluster(args: argparse.Namespace, config: Config) -> int:
    frontend_ep = args.frontend or config.cluster.frontend
    backend_ep = args.backend or config.cluster.backend
    cache_ep = args.cache or cache_endpoint_for(frontend_ep, config)
    common = [
        "--log-level",
        args.log_level or config.log.level,
        "--log-format",
        args.log_format or config.log.format,
    ]
    if args.config:
        common += ["--config", args.config]
    base = [sys.executable, "-m", "flamed"]
    sm_argv = [*base, "session-manager", "--frontend", frontend_ep, "--backend", backend_ep, "--cache", cache_ep]
    sm_argv += common
    cache_argv = [*base, "object-cache", "--bind", args.cache or config.cache.bind or cache_ep]
    cache_argv += ["--frontend", frontend_ep, *common]
    if args.state_dir:
        sm_argv += ["--state-dir", args.state_dir]
        cache_argv += ["--state-dir", os.path.join(args.state_dir, "object-cache")]
    # Instances inherit the executor managers' environment: a task that is itself a client
    # (a Runner inside a task, a flmexec script) finds this cluster's frontend.
    os.environ["FLAME_ENDPOINT"] = frontend_ep
    host = socket.gethostname()
    slots = args.slots or os.cpu_count() or 1
    names = [host] if args.executors == 1 else [f"{host}-{i}" for i in range(1, args.executors + 1)]
    executors = [
        Child(
            f"executor manager {name}",
            [*base, "executor-manager", "--backend", backend_ep, "--node-name", name, "--slots", str(slots), *common],
        )
        for name in names
    ]
    manager = Child("session-manager", sm_argv)
    cache = Child("object cache", cache_argv)
    helpers = [cache, *executors]  # restarted when they die

    stop = _install_stop_signals()
    try:
        manager.start()
        if not wait_ready(frontend_ep, time.monotonic() + READY_TIMEOUT, manager, stop, []):
            code = manager.reap()
            why = (
                f"exited with code {code}: {manager.reason()}"
                if code is not None
                else f"did not answer at {frontend_ep} within {READY_TIMEOUT:.0f}s"
            )
            _say(f"the session manager failed to start ({why}); stopping")
            _stop_all([[manager]], stop)
            return 1
        for child in helpers:
            child.start()
    except Stopped:
        _say("stopping")
        _stop_all([executors, [cache], [manager]], stop)
        context().term()
        return 0
    _say(
        f"session manager at {frontend_ep} (backend {backend_ep}), object cache at {cache_ep}, "
        f"{len(executors)} executor manager(s) [{', '.join(names)}] with {slots} slots each. Ctrl-C stops it."
    )
    try:
        code = _supervise(manager, helpers, stop)
    finally:
        _stop_all([executors, [cache], [manager]], stop)
        context().term()
    return code


def _say(text: str) -> None:
    print(f"flamed cluster: {text}", file=sys.stderr, flush=True)


_wakeup_sockets: list[socket.socket] = []  # kept alive while signals may arrive


def _install_stop_signals() -> socket.socket:
    reader, writer = socket.socketpair()
    _wakeup_sockets.extend((reader, writer))
    reader.setblocking(False)
    writer.setblocking(False)
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)
    return reader


def _signalled(stop: socket.socket) -> bool:
    """Consume a pending stop signal; True if there was one."""
    try:
        return bool(stop.recv(4096))
    except BlockingIOError:
        return False


def _stderr_fds(children: list[Child]) -> list[int]:
    return [fd for fd in (c.stderr_fd() for c in children) if fd is not None]


def _relay_all(children: list[Child]) -> None:
    for child in children:
        child.relay()


def _supervise(manager: Child, executors: list[Child], stop: socket.socket) -> int:
    children = [manager, *executors]
    while True:
        now = time.monotonic()
        for child in executors:
            if child.restart_at is not None and now >= child.restart_at:
                _say(f"restarting {child.name}")
                child.start()
        fds = [stop.fileno(), *(c.pidfd for c in children if c.pidfd >= 0), *_stderr_fds(children)]
        waits = [c.restart_at - now for c in executors if c.restart_at is not None]
        readable, _, _ = select.select(fds, [], [], max(0.0, min(waits)) if waits else None)
        _relay_all(children)
        if stop.fileno() in readable:
            _signalled(stop)
            _say("stopping")
            return 0
        code = manager.reap()
        if code is not None:
            _say(f"the session manager exited with code {code} ({manager.reason()}); stopping")
            return 1
        for child in executors:
            code = child.reap() if child.restart_at is None else None
            if code is None:
                continue
            if code != 0 and time.monotonic() - child.started < START_GRACE:
                _say(f"{child.name} failed to start (exit code {code}: {child.reason()}); stopping")
                return 1
            child.restarts += 1
            delay = min(30.0, 2.0 ** min(child.restarts, 5) / 2)
            _say(f"{child.name} exited with code {code}; restarting in {delay:.0f}s")
            child.restart_at = time.monotonic() + delay


def _stop_all(groups: list[list[Child]], stop: socket.socket) -> None:
    """Stop group by group (executor managers together, then the session manager): SIGTERM,
    wait up to STOP_TIMEOUT for the group, then SIGKILL what is left. Their stderr keeps being
    relayed meanwhile (a child blocked writing it would never stop), and another Ctrl-C or
    SIGTERM kills what is left at once."""
    _signalled(stop)
    hurry = False
    for group in groups:
        running = [c for c in group if c.alive()]
        for child in running:
            assert child.process is not None
            child.process.send_signal(signal.SIGKILL if hurry else signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(c.alive() for c in running):
            left = deadline - time.monotonic()
            if left <= 0 or hurry:
                for child in running:
                    if child.alive():
                        assert child.process is not None
                        if not hurry:
                            _say(f"{child.name} did not stop in {STOP_TIMEOUT:.0f}s; killing it")
                        child.process.kill()
                break
            fds = [stop.fileno(), *(c.pidfd for c in running if c.pidfd >= 0), *_stderr_fds(running)]
            readable, _, _ = select.select(fds, [], [], left)
            _relay_all(running)
            if stop.fileno() in readable and _signalled(stop):
                _say("stopping at once")
                hurry = True
        for child in group:
            if child.process is not None:
                child.process.wait()
            child.reap()
