"""`flamed cluster`: a session manager and N executor managers on this host, in the foreground.

The cluster process supervises its daemons: it starts the session manager, waits until it
answers, starts the executor managers, restarts an executor manager that dies (with backoff),
and on Ctrl-C / SIGTERM stops the executor managers first (they stop their instances and say
goodbye), then the session manager. Every child gets SIGKILL if the cluster process itself
dies, so nothing is ever left behind.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from flamed.config import Config
from flamed.lifeline import parent_death_signal
from flamed.transport import close, connect_dealer, context
from protocol import codec, frontend

STOP_TIMEOUT = 15.0
READY_TIMEOUT = 30.0


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    pidfd: int = -1
    restarts: int = 0
    restart_at: float | None = None
    started: float = field(default=0.0)

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, preexec_fn=parent_death_signal(signal.SIGKILL))  # noqa: PLW1509
        self.pidfd = os.pidfd_open(self.process.pid)
        self.started = time.monotonic()
        self.restart_at = None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def reap(self) -> int | None:
        code = self.process.poll() if self.process else None
        if code is not None and self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        return code


def wait_ready(endpoint: str, deadline: float, child: Child) -> bool:
    """True once the session manager at `endpoint` answers a Hello."""
    sock = connect_dealer(endpoint, b"cluster-" + os.urandom(6).hex().encode())
    decoder = codec.server_reply_codec()
    try:
        while time.monotonic() < deadline and child.alive():
            sock.send_multipart(codec.encode(frontend.Hello(request_id=1, protocol_version=codec.PROTOCOL_VERSION)))
            if sock.poll(500):
                reply = decoder.decode(sock.recv_multipart())
                return isinstance(reply, frontend.Welcome)
        return False
    finally:
        close(sock)


def run_cluster(args: argparse.Namespace, config: Config) -> int:
    frontend_ep = args.frontend or config.cluster.frontend
    backend_ep = args.backend or config.cluster.backend
    common = [
        "--log-level",
        args.log_level or config.log.level,
        "--log-format",
        args.log_format or config.log.format,
    ]
    if args.config:
        common += ["--config", args.config]
    base = [sys.executable, "-m", "flamed"]
    sm_argv = [*base, "session-manager", "--frontend", frontend_ep, "--backend", backend_ep, *common]
    if args.state_dir:
        sm_argv += ["--state-dir", args.state_dir]
    host = socket.gethostname()
    slots = args.slots or os.cpu_count() or 1
    names = [host] if args.executors == 1 else [f"{host}-{i}" for i in range(1, args.executors + 1)]
    executors = [
        Child(
            name,
            [*base, "executor-manager", "--backend", backend_ep, "--node-name", name, "--slots", str(slots), *common],
        )
        for name in names
    ]
    manager = Child("session-manager", sm_argv)

    stop = _install_stop_signals()
    manager.start()
    if not wait_ready(frontend_ep, time.monotonic() + READY_TIMEOUT, manager):
        print(f"flamed cluster: the session manager did not come up at {frontend_ep}", file=sys.stderr)
        _stop_all([[manager]])
        return 1
    for child in executors:
        child.start()
    print(
        f"flamed cluster: session manager at {frontend_ep} (backend {backend_ep}), "
        f"{len(executors)} executor manager(s) [{', '.join(names)}] with {slots} slots each. Ctrl-C stops it.",
        file=sys.stderr,
        flush=True,
    )
    try:
        code = _supervise(manager, executors, stop)
    finally:
        _stop_all([executors, [manager]])
        context().term()
    return code


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


def _supervise(manager: Child, executors: list[Child], stop: socket.socket) -> int:
    while True:
        now = time.monotonic()
        for child in executors:
            if child.restart_at is not None and now >= child.restart_at:
                print(f"flamed cluster: restarting executor manager {child.name}", file=sys.stderr, flush=True)
                child.start()
        fds = [stop.fileno()] + [c.pidfd for c in [manager, *executors] if c.pidfd >= 0]
        waits = [c.restart_at - now for c in executors if c.restart_at is not None]
        readable, _, _ = select.select(fds, [], [], max(0.0, min(waits)) if waits else None)
        if stop.fileno() in readable:
            print("flamed cluster: stopping", file=sys.stderr, flush=True)
            return 0
        code = manager.reap()
        if code is not None:
            print(f"flamed cluster: the session manager exited with code {code}; stopping", file=sys.stderr)
            return 1
        for child in executors:
            code = child.reap() if child.restart_at is None else None
            if code is not None:
                child.restarts += 1
                delay = min(30.0, 2.0 ** min(child.restarts, 5) / 2)
                print(
                    f"flamed cluster: executor manager {child.name} exited with code {code}; "
                    f"restarting in {delay:.0f}s",
                    file=sys.stderr,
                    flush=True,
                )
                child.restart_at = time.monotonic() + delay


def _stop_all(groups: list[list[Child]]) -> None:
    """Stop group by group (executor managers together, then the session manager): SIGTERM,
    wait up to STOP_TIMEOUT for the group, then SIGKILL what is left."""
    for group in groups:
        running = [c for c in group if c.alive()]
        for child in running:
            assert child.process is not None
            child.process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"flamed cluster: {child.name} did not stop in {STOP_TIMEOUT:.0f}s; killing it", file=sys.stderr)
                child.process.kill()
                child.process.wait()
        for child in group:
            child.reap()
