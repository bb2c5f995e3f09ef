"""A fake session manager (a ROUTER speaking protocol/backend.py) and a real executor manager
started as a subprocess against it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flamed.transport import bind_router, close
from protocol import backend as be
from protocol import codec
from protocol.types import ResourceRequirement

SERVICES = Path(__file__).parent / "services"


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class FakeSessionManager:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.sock = bind_router(endpoint)
        self.codec = codec.node_message_codec()
        self.peer = b""
        self.epoch = 0
        self.seq = 0
        self.recv_seq = 0
        self.reports: list[be.ExecutorReport] = []
        self.other: list[be.NodeMessage] = []

    def close(self) -> None:
        close(self.sock)

    def recv(self, timeout: float) -> be.NodeMessage | None:
        if not self.sock.poll(int(timeout * 1000)):
            return None
        frames = self.sock.recv_multipart()
        self.peer = frames[0]
        message = self.codec.decode(frames[1:])
        if isinstance(message, be.Reports):
            self.reports.extend(message.reports)
            self.recv_seq = message.seq
        elif not isinstance(message, be.Heartbeat):
            self.other.append(message)
        return message

    def send(self, message: be.Message) -> None:
        self.sock.send_multipart([self.peer, *codec.encode(message)])

    def register(self, executors: list[be.ExecutorAssignment] | None = None, timeout: float = 20.0) -> be.RegisterNode:
        """Wait for a RegisterNode and accept it with a snapshot."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.recv(0.1)
            if isinstance(message, be.RegisterNode):
                self.epoch += 1
                self.seq = 0
                self.send(
                    be.Registered(
                        epoch=self.epoch, executors=executors or [], heartbeat_interval=0.5, heartbeat_liveness=40
                    )
                )
                return message
        raise AssertionError("no RegisterNode arrived")

    def command(self, *commands: be.ExecutorCommand) -> None:
        self.seq += 1
        self.send(be.Commands(epoch=self.epoch, seq=self.seq, ack=self.recv_seq, commands=list(commands)))

    def wait_reports(
        self, what: str, condition: Callable[[list[be.ExecutorReport]], Any], timeout: float = 20.0
    ) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition(self.reports)
            if value:
                return value
            self.recv(0.05)
        raise AssertionError(f"timed out waiting for {what}; reports: {self.reports[-10:]}")

    def wait_message(self, kind: type, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for m in self.other if isinstance(m, kind)]
            if found:
                return found[-1]
            self.recv(0.05)
        raise AssertionError(f"timed out waiting for {kind.__name__}")


class ExecutorManagerProcess:
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
        for item in environ.split(b"\0"):
            if item.startswith(b"FLAME_INSTANCE_ENDPOINT=") and marker in item:
                pids.append(int(entry.name))
    return pids


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Short, so that ipc:// paths stay well under the 107-byte unix socket limit.
    path = Path(tempfile.mkdtemp(prefix="flem-", dir="/tmp"))
    yield path
    for pid in instance_pids(str(path).encode()):
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sm(workdir: Path) -> Iterator[FakeSessionManager]:
    fake = FakeSessionManager(f"ipc://{workdir}/backend.sock")
    yield fake
    fake.close()


@pytest.fixture
def em(workdir: Path, sm: FakeSessionManager) -> Iterator[ExecutorManagerProcess]:
    process = ExecutorManagerProcess(workdir, sm.endpoint)
    yield process
    if process.process.poll() is None:
        process.process.kill()
        process.process.wait(10)
    print(process.log())


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def session(session_id: str, common_data: bytes | None = None) -> be.SessionContext:
    return be.SessionContext(session_id=session_id, application="app", common_data=common_data)


def flmping_app() -> be.ApplicationContext:
    return be.ApplicationContext(name="flmping", command="${FLAME_PYTHON}", arguments=["-m", "flamed.apps.flmping"])


def probe_app() -> be.ApplicationContext:
    return be.ApplicationContext(
        name="probe", command="${FLAME_PYTHON}", arguments=[str(SERVICES / "probe_service.py")]
    )


def tasks(inputs: list[bytes | None], first: int = 1) -> list[be.TaskAssignment]:
    return [be.TaskAssignment(task_id=first + i, attempt=1, input=data) for i, data in enumerate(inputs)]


RESREQ = ResourceRequirement(cpu=1, memory=1 << 20)
