"""Real daemons as subprocesses for integration tests, and a raw protocol client.

Every process `Daemons` starts carries `FLAME_TEST_MARKER=<unique>` in its environment, which
instances inherit, so `leftovers()` can find anything still alive after a test by reading
`/proc/*/environ` — the check behind "no process is left behind". `ExecutorManagerProcess` is
one executor manager against a fake session manager (tests/em); `instance_pids` finds the
instances it started by their endpoint under its directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import zmq

from protocol.codec import HEADER
from tests.support.waiting import wait_for

#: the repository's root (PYTHONPATH of every daemon a test starts)
REPO = Path(__file__).resolve().parents[2]


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on at `address` now (for a daemon to bind next)."""
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def processes_with(marker: str) -> list[int]:
    found = []
    needle = f"FLAME_TEST_MARKER={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            status = (entry / "stat").read_text()
        except OSError:
            continue
        if needle in environ.split(b"\0") and status.split(") ", 1)[-1][:1] != "Z":
            found.append(int(entry.name))
    return found


class Daemons:
    """Session manager and executor managers of one test, on ipc:// endpoints of their own."""

    def __init__(self) -> None:
        # Short path: ipc:// socket paths must fit in 107 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="flt-", dir="/tmp"))
        self.frontend = f"ipc://{self.dir}/fe"
        self.backend = f"ipc://{self.dir}/be"
        self.cache = f"ipc://{self.dir}/oc"
        self.marker = uuid.uuid4().hex
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = dict(os.environ)
        self.env.update(
            FLAME_TEST_MARKER=self.marker,
            FLAME_ENDPOINT=self.frontend,
            PYTHONPATH=str(REPO),
            PYTHONUNBUFFERED="1",
        )
        self.env.pop("FLAME_CONF", None)
        self.config = self.dir / "flame.toml"
        self.config.write_text(
            "[recovery]\nheartbeat_interval = 0.5\nheartbeat_liveness = 4\ndrain_timeout = 5.0\n"
            "[client]\ntimeout = 20.0\n"
        )

    def spawn(self, name: str, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        """Start `flamed ARGS` as process `name`; `prefix` runs it through a command that
        execs it (e.g. `ip netns exec NS`), so the pid is still the daemon's."""
        with open(self.dir / f"{name}.log", "ab") as log:  # the child has its own copy
            proc = subprocess.Popen(
                [*prefix, sys.executable, "-m", "flamed", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.dir,
            )
        self.procs[name] = proc
        return proc

    def start_session_manager(self, *extra: str) -> subprocess.Popen[bytes]:
        return self.spawn(
            "sm",
            "session-manager",
            "--frontend",
            self.frontend,
            "--backend",
            self.backend,
            "--state-dir",
            str(self.dir / "state"),
            "--config",
            str(self.config),
            "--cache",
            self.cache,
            *extra,
        )

    def start_object_cache(self, *extra: str) -> subprocess.Popen[bytes]:
        """`flamed object-cache` on `self.cache`, state in `<dir>/cache-state`, asking this
        test's session manager about deleted sessions."""
        return self.spawn(
            "cache",
            "object-cache",
            "--bind",
            self.cache,
            "--state-dir",
            str(self.dir / "cache-state"),
            "--frontend",
            self.frontend,
            "--config",
            str(self.config),
            *extra,
        )

    def start_executor_manager(self, node: str, slots: int = 2, *extra: str) -> subprocess.Popen[bytes]:
        return self.spawn(
            node,
            "executor-manager",
            "--backend",
            self.backend,
            "--node-name",
            node,
            "--slots",
            str(slots),
            "--runtime-dir",
            str(self.dir / f"rt-{node}"),
            "--config",
            str(self.config),
            *extra,
        )

    def client(self) -> RawClient:
        return RawClient(self.frontend)

    def wait_answering(self, timeout: float = 30.0) -> None:
        """Wait until the session manager answers a Ping on the frontend (a restart replays its
        log before it binds, which takes seconds on a loaded machine)."""
        with self.client() as client:

            def pong() -> bool:
                client.send({"type": "Ping"})
                try:
                    return client.receive(0.2).get("type") == "Pong"
                except AssertionError:  # no answer within 0.2 s: ask again
                    return False

            wait_for("the session manager to answer", pong, timeout)

    def wait_ready_nodes(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        with self.client() as client:

            def ready() -> list[dict[str, Any]] | None:
                nodes = client.call({"type": "ListNodes"}).get("nodes", [])
                ready = [n for n in nodes if n.get("state") == "Ready"]
                return ready if len(ready) >= count else None

            return wait_for(f"{count} Ready nodes", ready, timeout)

    def log(self, name: str) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def stop(self, name: str, timeout: float = 15.0) -> int:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            tail = self.log(name)[-3000:]
            raise AssertionError(f"{name} did not stop within {timeout}s of SIGTERM\n{tail}") from None

    def stop_all(self) -> dict[str, int]:
        """Executor managers first, then the session manager, as an operator would."""
        codes = {}
        for name in sorted(self.procs, key=lambda n: n == "sm"):
            codes[name] = self.stop(name)
        return codes

    def leftovers(self) -> list[int]:
        return processes_with(self.marker)

    def cleanup(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for pid in self.leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)

    def dump_logs(self) -> str:
        return "\n".join(f"----- {name}.log -----\n{self.log(name)[-4000:]}" for name in self.procs)


class RawClient:
    """The protocol spoken by hand: a DEALER, a header frame and a MessagePack map."""

    def __init__(self, endpoint: str, timeout: float = 20.0, curve: tuple[bytes, bytes, bytes] | None = None) -> None:
        """`curve`: (server public, own public, own secret) Z85 keys for a CURVE session manager."""
        self.sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            server, public, secret = curve
            self.sock.setsockopt(zmq.CURVE_SERVERKEY, server)
            self.sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
            self.sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
        self.sock.connect(endpoint)
        self.timeout = timeout
        self.next_id = 1

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close(0)

    def send_frames(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def send(self, message: dict[str, Any]) -> int:
        if "request_id" not in message:
            message = {**message, "request_id": self.next_id}
            self.next_id += 1
        self.sock.send_multipart([HEADER, msgspec.msgpack.encode(message)])
        return int(message["request_id"])

    def receive(self, timeout: float | None = None) -> dict[str, Any]:
        if not self.sock.poll(int((timeout or self.timeout) * 1000)):
            raise AssertionError(f"no reply within {timeout or self.timeout}s")
        frames = self.sock.recv_multipart()
        assert frames[0] == HEADER, frames
        reply: dict[str, Any] = msgspec.msgpack.decode(frames[1])
        return reply

    def call(self, message: dict[str, Any]) -> dict[str, Any]:
        request_id = self.send(message)
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self.receive(max(0.01, deadline - time.monotonic()))
            if reply.get("request_id", 0) == request_id:
                return reply

    def list_tasks(self, session_id: str, **fields: Any) -> list[dict[str, Any]]:
        """Every task of a session: `ListTasks` pages, following `next_cursor`."""
        tasks: list[dict[str, Any]] = []
        cursor = 0
        while True:
            reply = self.call({"type": "ListTasks", "session_id": session_id, "cursor": cursor, **fields})
            assert reply["type"] == "TasksReply", reply
            tasks.extend(reply["tasks"])
            cursor = reply.get("next_cursor", 0)
            if not cursor:
                return tasks


class ExecutorManagerProcess:
    """`flamed executor-manager` against `backend` (a fake session manager of tests/em), its
    runtime directory, config and log under `workdir`. The `em` fixture kills it afterwards."""

    def __init__(self, workdir: Path, backend: str, node_name: str = "n1", slots: int = 2) -> None:
        self.workdir = workdir
        self.runtime_dir = workdir / "rt"
        self.log_path = workdir / f"em-{node_name}.log"
        config = workdir / "flame.toml"
        config.write_text(
            "[recovery]\nreconnect_backoff_min = 0.1\nreconnect_backoff_max = 1.0\n"
            "[executor_manager]\ninstance_stop_timeout = 2.0\n"
        )
        env = dict(os.environ, FLAME_CONF=str(config))
        command = [
            sys.executable,
            "-m",
            "flamed",
            "executor-manager",
            "--backend",
            backend,
            "--node-name",
            node_name,
            "--slots",
            str(slots),
            "--runtime-dir",
            str(self.runtime_dir),
            "--log-level",
            "debug",
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def instances(self) -> list[int]:
        """Pids of live processes started with an instance endpoint under our runtime dir."""
        return instance_pids(str(self.workdir).encode())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


def instance_pids(marker: bytes) -> list[int]:
    """Pids of live (not zombie) processes whose `FLAME_INSTANCE_ENDPOINT` contains `marker`:
    instances, by exec or forked by a zygote (whose environment, and so its children's
    /proc environ, names the endpoint; the zygote itself is not counted)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if "State:\tZ" in status:
            continue
        if b"\0FLAME_ZYGOTE=1\0" in b"\0" + environ and not status.startswith("Name:\tflame-instance\n"):
            continue  # the zygote itself
        for item in environ.split(b"\0"):
            if item.startswith(b"FLAME_INSTANCE_ENDPOINT=") and marker in item:
                pids.append(int(entry.name))
    return pids
