"""Instance processes: start one per bound executor, watch it through a pidfd, stop it.

Each instance runs in its own process group (so stopping it stops whatever it started) and
gets SIGKILL if the executor manager dies (`PR_SET_PDEATHSIG`), so no instance outlives its
executor manager, even one killed with SIGKILL. Exit is noticed through `os.pidfd_open`, a
readable fd in the loop; the group is killed before the leader is reaped, so the group id
cannot have been reused when we signal it.

Each start gets a fresh unguessable token (`FLAME_INSTANCE_TOKEN`), the routing id the instance
must use on the instance socket: an executor id can be learned by other tenants (ListExecutors),
a token cannot, and a token is never reused, so an instance of an earlier bind cannot speak for
a later one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from flamed.executor_manager.zygote import Zygote
from flamed.lifeline import parent_death_signal
from protocol.backend import ApplicationContext
from protocol.errors import FlameBaseError


def expand(text: str, python: str | None = None) -> str:
    """Replace `${FLAME_PYTHON}` with `python`: this interpreter (which has flamed installed),
    or the environment an application package was installed into."""
    return text.replace("${FLAME_PYTHON}", python or sys.executable)


class InstanceStartError(FlameBaseError):
    """The instance process could not be started; the message says why."""


class Instance:
    """One running instance process (the leader of its own process group)."""

    def __init__(self, pid: int, token: bytes, process: subprocess.Popen[bytes] | None = None) -> None:
        #: the Popen of an instance started by exec; None for one forked by the zygote (zygote.py),
        #: which is our child all the same
        self.process = process
        self.pid = pid
        #: the routing id the instance was told to use (FLAME_INSTANCE_TOKEN)
        self.token = token
        self.pidfd: int | None
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # old kernel: the manager polls `exited()` instead
            self.pidfd = None
        self.status: int | None = None

    @classmethod
    def start(  # noqa: PLR0917 - install_env joined the positional extra_env
        cls,
        executor_id: str,
        app: ApplicationContext,
        endpoint: str,
        work_dir: Path,
        extra_env: dict[str, str] | None = None,
        install_env: dict[str, str] | None = None,
        zygote: Zygote | None = None,
    ) -> Instance:
        """`extra_env` comes before the application's environments (they may override it);
        `install_env` (its installed package: FLAME_PYTHON, PYTHONPATH, ...) after them.
        With a `zygote`, a Python service it can run is forked from it (zygote.py)."""
        if not app.command:
            raise InstanceStartError(f"application {app.name!r} has no command")
        install_env = install_env or {}
        python = install_env.get("FLAME_PYTHON") or sys.executable
        argv = [expand(app.command, python), *(expand(a, python) for a in app.arguments)]
        env = dict(os.environ)
        env.update(extra_env or {})
        env.update({key: expand(value, python) for key, value in app.environments.items()})
        env.update(install_env)
        env["FLAME_PYTHON"] = python
        env["FLAME_INSTANCE_ENDPOINT"] = endpoint
        env["FLAME_EXECUTOR_ID"] = executor_id
        token = "i-" + secrets.token_hex(16)
        env["FLAME_INSTANCE_TOKEN"] = token
        cwd = Path(app.working_directory) if app.working_directory else work_dir
        try:
            cwd.mkdir(parents=True, exist_ok=True)
            pid = zygote.spawn(argv, env, cwd) if zygote is not None else None
            if pid is not None:
                return cls(pid, token.encode())
            process = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=parent_death_signal(signal.SIGKILL),  # noqa: PLW1509 - one C call, libc preloaded
            )
        except OSError as exc:
            raise InstanceStartError(f"cannot start {argv[0]!r}: {exc}") from None
        return cls(process.pid, token.encode(), process)

    def signal_group(self, sig: int) -> None:
        """Signal the instance's process group; a group already gone is fine."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def exited(self) -> bool:
        """True once the leader has exited; then the group is killed and the leader reaped.
        Never blocks."""
        if self.status is not None:
            return True
        try:
            # WNOWAIT: look without reaping, so that the pid (and so the group id) is still
            # ours while we kill what is left of the group.
            gone = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:  # reaped already
            gone = True
        if not gone:
            return False
        self.signal_group(signal.SIGKILL)
        if self.process is not None:
            self.status = self.process.wait()
        else:
            try:
                self.status = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
            except ChildProcessError:  # reaped by someone else: its status is lost (as Popen)
                self.status = 0
        if self.pidfd is not None:
            os.close(self.pidfd)
        return True

    def describe_exit(self) -> str:
        status = self.status
        if status is None:
            return f"instance (pid {self.pid}) is running"
        if status < 0:
            try:
                name = signal.Signals(-status).name
            except ValueError:
                name = f"signal {-status}"
            return f"instance (pid {self.pid}) was killed by signal {name}"
        return f"instance (pid {self.pid}) exited with code {status}"
