"""The daemons of a chaos run as real subprocesses: one session manager and N executor
managers, each restartable, freezable and killable, with what the checks need to see of them
(exits, CPU time, metrics, instance processes, log lines).

Every process carries `FLAME_TEST_MARKER=<run marker>` in its environment, inherited by the
instances, so a scan of /proc finds all of them, orphans included. Each executor manager also
gets `FLAME_CHAOS_NODE` and `FLAME_CHAOS_JOURNAL` (its node's journal), which reach its
instances (the test service). Logs are appended per daemon name across restarts, each start
marked by a `=== chaos: start` line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.chaos.hosts import Hosts
from tests.chaos.plan import SESSION_MANAGER, Settings
from tests.support.daemons import REPO, processes_with

SERVICE = Path(__file__).resolve().parent / "services" / "journal_service.py"
APPLICATION = "chaos"


@dataclass
class Exit:
    name: str
    time: float
    code: int
    expected: bool


@dataclass
class Daemon:
    name: str
    proc: subprocess.Popen[bytes] | None = None
    #: we killed or stopped it on purpose: its exit is not a crash
    expected_exit: bool = False
    stopped: bool = False
    starts: int = 0
    pids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class InstanceProcess:
    pid: int
    ppid: int
    executor: str
    node: str


class ChaosCluster:
    def __init__(self, workdir: Path, settings: Settings, hosts: Hosts) -> None:
        self.dir = workdir
        self.settings = settings
        self.hosts = hosts
        self.marker = uuid.uuid4().hex
        self.frontend = f"ipc://{workdir}/fe"
        self.port = hosts.free_backend_port()
        self.config = workdir / "flame.toml"
        self.config.write_text(config_text(settings))
        self.daemons: dict[str, Daemon] = {n: Daemon(n) for n in [SESSION_MANAGER, *settings.node_names]}
        self.exits: list[Exit] = []
        self.env = dict(os.environ)
        self.env.pop("FLAME_CONF", None)
        self.env.update(
            FLAME_TEST_MARKER=self.marker,
            FLAME_ENDPOINT=self.frontend,
            PYTHONPATH=str(REPO),
            PYTHONUNBUFFERED="1",
        )

    def journal(self, node: str) -> Path:
        return self.dir / f"journal-{node}"

    def log_path(self, name: str) -> Path:
        return self.dir / f"{name}.log"

    # ------------------------------------------------------------------ processes

    def _spawn(self, name: str, args: list[str], env: dict[str, str], prefix: tuple[str, ...] = ()) -> None:
        daemon = self.daemons[name]
        path = self.log_path(name)
        with path.open("ab") as log:
            log.write(f"=== chaos: start {daemon.starts + 1} of {name} at {time.time():.3f}\n".encode())
            log.flush()
            daemon.proc = subprocess.Popen(
                [*prefix, sys.executable, "-m", "flamed", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.dir,
            )
        daemon.starts += 1
        daemon.expected_exit = False
        daemon.stopped = False
        daemon.pids.append(daemon.proc.pid)

    def start_sm(self) -> None:
        args = [
            "session-manager",
            "--frontend",
            self.frontend,
            "--backend",
            self.hosts.backend_bind(self.port),
            "--state-dir",
            str(self.dir / "state"),
            "--config",
            str(self.config),
        ]
        self._spawn(SESSION_MANAGER, args, self.env)

    def start_em(self, node: str) -> None:
        args = [
            "executor-manager",
            "--backend",
            self.hosts.backend_for(node, self.port),
            "--node-name",
            node,
            "--slots",
            str(self.settings.slots),
            "--runtime-dir",
            str(self.dir / f"rt-{node}"),
            "--config",
            str(self.config),
            "--metrics",
            self.hosts.metrics_for(node),
        ]
        env = dict(self.env, FLAME_CHAOS_NODE=node, FLAME_CHAOS_JOURNAL=str(self.journal(node)))
        self._spawn(node, args, env, self.hosts.prefix(node))

    def start(self, name: str) -> None:
        if name == SESSION_MANAGER:
            self.start_sm()
        else:
            self.start_em(name)

    def pid(self, name: str) -> int | None:
        proc = self.daemons[name].proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def kill(self, name: str) -> None:
        """SIGKILL and reap (a frozen process dies too)."""
        daemon = self.daemons[name]
        if daemon.proc is None or daemon.proc.poll() is not None:
            return
        daemon.expected_exit = True
        daemon.proc.kill()
        code = daemon.proc.wait(30)
        daemon.stopped = False
        self.exits.append(Exit(name, time.time(), code, True))

    def freeze(self, name: str) -> None:
        pid = self.pid(name)
        if pid is not None:
            os.kill(pid, signal.SIGSTOP)
            self.daemons[name].stopped = True

    def thaw(self, name: str) -> None:
        pid = self.pid(name)
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        self.daemons[name].stopped = False

    def unexpected_exits(self) -> list[Exit]:
        """Daemons that exited without being asked to (crashes); recorded once each."""
        found = []
        for name, daemon in self.daemons.items():
            proc = daemon.proc
            if proc is None or daemon.expected_exit:
                continue
            code = proc.poll()
            if code is not None:
                daemon.expected_exit = True  # recorded; the runner restarts it
                exit_ = Exit(name, time.time(), code, False)
                self.exits.append(exit_)
                found.append(exit_)
        return found

    def stop_all(self, timeout: float = 30.0) -> dict[str, int | None]:
        """SIGCONT anything frozen, then SIGTERM the executor managers, then the session
        manager, as an operator would; exit codes (None: had to be killed)."""
        codes: dict[str, int | None] = {}
        for name in self.daemons:
            if self.daemons[name].stopped:
                self.thaw(name)
        for name in [*self.settings.node_names, SESSION_MANAGER]:
            proc = self.daemons[name].proc
            if proc is None or proc.poll() is not None:
                continue
            self.daemons[name].expected_exit = True
            proc.send_signal(signal.SIGTERM)
            try:
                codes[name] = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                codes[name] = None
            code = codes[name]
            self.exits.append(Exit(name, time.time(), -1 if code is None else code, True))
        return codes

    def cleanup(self) -> None:
        for daemon in self.daemons.values():
            proc = daemon.proc
            if proc is not None and proc.poll() is None:
                daemon.expected_exit = True
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        for pid in self.leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # ------------------------------------------------------------------ what we see of them

    def leftovers(self) -> list[int]:
        """Every live process of this run (daemons and instances)."""
        return processes_with(self.marker)

    def instances(self) -> list[InstanceProcess]:
        """Live instance processes of this run: whose executor, started by whom."""
        found = []
        daemons = {pid for d in self.daemons.values() for pid in d.pids}
        for pid in self.leftovers():
            if pid in daemons:
                continue
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            env = dict(item.decode(errors="replace").partition("=")[::2] for item in environ if b"=" in item)
            if "FLAME_EXECUTOR_ID" not in env:
                continue
            ppid = int(stat.rsplit(") ", 1)[1].split()[1])
            found.append(InstanceProcess(pid, ppid, env["FLAME_EXECUTOR_ID"], env.get("FLAME_CHAOS_NODE", "")))
        return found

    def cpu_seconds(self, name: str) -> float | None:
        """User + system CPU time of the daemon so far; None if it is not running."""
        pid = self.pid(name)
        if pid is None:
            return None
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def metrics(self, node: str, timeout: float = 2.0) -> dict[str, float] | None:
        """The executor manager's `--metrics` figures; None if it does not answer."""
        url = f"http://{self.hosts.metrics_for(node)}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as reply:
                text = reply.read().decode()
        except OSError:
            return None
        figures = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    figures[name] = float(value)
        return figures

    def log(self, name: str) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""


def config_text(settings: Settings) -> str:
    return f"""[recovery]
heartbeat_interval = {settings.heartbeat}
heartbeat_liveness = {settings.liveness}
drain_timeout = {settings.drain}
reconnect_backoff_min = {settings.backoff_min}
reconnect_backoff_max = {settings.backoff_max}
task_retry_limit = {settings.retry_limit}
[executor_manager]
instance_stop_timeout = 3.0
stop_grace = 20.0
[client]
timeout = {settings.client_timeout}
"""
