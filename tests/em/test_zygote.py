"""Instances forked by the executor manager's zygote (flamed/executor_manager/zygote.py), as
real processes against a fake session manager: they serve sessions, their groups are killed,
they die with the executor manager, and a dead zygote is replaced."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from protocol import backend as be
from protocol.types import TaskState
from tests.em.contexts import bind, completed, flmping_app, new_id, of_type, probe_app, tasks
from tests.support.daemons import ExecutorManagerProcess
from tests.support.fake_backend import FakeSessionManager
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


def flmexec_app() -> be.ApplicationContext:
    return be.ApplicationContext(name="flmexec", command="${FLAME_PYTHON}", arguments=["-m", "flamed.apps.flmexec"])


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1])


def zygotes(em: ExecutorManagerProcess) -> list[int]:
    """Live zygotes of `em`: its children named flame-zygote that lead their session (a spare
    just forked has the zygote's name until it renames itself, first thing, in its session)."""
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and comm(int(p.name)) == "flame-zygote" and alive(int(p.name))
        if parent_of(int(p.name)) == em.process.pid and leads_its_session(int(p.name))
    ]


def leads_its_session(pid: int) -> bool:
    try:
        return os.getsid(pid) == pid
    except OSError:
        return False


def unbind(sm: FakeSessionManager, em: ExecutorManagerProcess, executor_id: str, pid: int) -> be.ExecutorUnbound:
    sm.reports.clear()
    sm.command(be.UnbindExecutor(executor_id=executor_id))
    unbound: be.ExecutorUnbound = sm.wait_reports("ExecutorUnbound", lambda rs: of_type(be.ExecutorUnbound, rs))[0]
    wait_for("the instance to exit", lambda: not alive(pid))
    sm.command(be.ReleaseExecutor(executor_id=executor_id))
    sm.wait_reports("ExecutorReleased", lambda rs: of_type(be.ExecutorReleased, rs))
    return unbound


def forked_instance(
    sm: FakeSessionManager, em: ExecutorManagerProcess, app: be.ApplicationContext, session_id: str
) -> tuple[str, int]:
    """Bind executors of `app` to `session_id` until one's instance is forked by the zygote (the
    first ones start by exec while the zygote starts); (executor id, instance pid)."""

    def attempt() -> tuple[str, int] | None:
        executor_id = new_id()
        sm.reports.clear()
        bind(sm, executor_id, session_id, app)
        assert of_type(be.ExecutorBound, sm.reports), sm.reports
        (pid,) = em.instances()
        if comm(pid) == "flame-instance":
            return executor_id, pid
        unbind(sm, em, executor_id, pid)
        return None

    return wait_for("an instance forked by the zygote", attempt)


@pytest.mark.timeout(90)
def test_a_forked_instance_serves_its_session_and_its_group_dies_at_unbind(
    sm: FakeSessionManager, em: ExecutorManagerProcess
) -> None:
    """A forked instance is the executor manager's child, leads its own session and group,
    runs tasks; at unbind it leaves, and what it started in its group is killed."""
    sm.register()
    executor_id, pid = forked_instance(sm, em, flmexec_app(), "s1")
    assert parent_of(pid) == em.process.pid
    assert os.getpgid(pid) == pid
    assert os.getsid(pid) == pid
    script = {"language": "shell", "code": "sleep 300 >/dev/null 2>&1 & echo $!"}
    sm.reports.clear()
    sm.command(be.LaunchTasks(executor_id=executor_id, session_id="s1", tasks=tasks([json.dumps(script).encode()])))
    (done,) = sm.wait_reports("the task", completed)
    assert done.state is TaskState.Succeed, done
    sleeper = int(bytes(json.loads(done.output or b"")["data"]))
    assert alive(sleeper)
    assert os.getpgid(sleeper) == pid
    unbound = unbind(sm, em, executor_id, pid)
    assert unbound.session_id == "s1"
    wait_for("the instance's group to be killed", lambda: not alive(sleeper))


@pytest.mark.timeout(90)
def test_exit_signals_of_forked_instances_are_reported(sm: FakeSessionManager, em: ExecutorManagerProcess) -> None:
    """A forked instance that dies is reported as a plain one is: killed by which signal."""
    sm.register()
    _, pid = forked_instance(sm, em, flmping_app(), "s1")
    sm.reports.clear()
    os.kill(pid, signal.SIGKILL)
    unbound = sm.wait_reports("ExecutorUnbound", lambda rs: of_type(be.ExecutorUnbound, rs))[0]
    assert f"instance (pid {pid}) was killed by signal SIGKILL" in unbound.reason, unbound.reason


@pytest.mark.timeout(90)
def test_sigkill_of_the_executor_manager_kills_forked_instances_and_the_zygote(
    sm: FakeSessionManager, em: ExecutorManagerProcess
) -> None:
    """PDEATHSIG holds for forked instances: nothing outlives an executor manager killed with
    SIGKILL, neither its instances nor its zygote."""
    sm.register()
    _, pid = forked_instance(sm, em, flmping_app(), "s1")
    (zygote,) = zygotes(em)
    em.stop(signal.SIGKILL)
    wait_for("the forked instance to die with its executor manager", lambda: not alive(pid))
    wait_for("the zygote to die with its executor manager", lambda: not alive(zygote))


@pytest.mark.timeout(120)
def test_a_killed_zygote_is_replaced_and_binds_go_on(sm: FakeSessionManager, em: ExecutorManagerProcess) -> None:
    """Killing the zygote leaves its instances running; the next binds still work (by exec
    while it is down) and a new zygote forks instances again."""
    sm.register()
    executor_id, pid = forked_instance(sm, em, flmping_app(), "s1")
    (zygote,) = zygotes(em)
    os.kill(zygote, signal.SIGKILL)
    wait_for("the zygote to be gone", lambda: not alive(zygote) or None)
    assert alive(pid)
    sm.reports.clear()
    sm.command(be.LaunchTasks(executor_id=executor_id, session_id="s1", tasks=tasks([b"still here"])))
    (done,) = sm.wait_reports("the task", completed)
    assert done.output == b"still here"
    unbind(sm, em, executor_id, pid)
    _, again = forked_instance(sm, em, flmping_app(), "s2")
    assert again != pid
    assert zygotes(em) not in ([], [zygote])


@pytest.mark.timeout(60)
def test_a_service_script_is_started_by_exec(sm: FakeSessionManager, em: ExecutorManagerProcess) -> None:
    """Only `${FLAME_PYTHON} -m module` is forked: a service file runs by plain exec."""
    sm.register()
    forked_instance(sm, em, flmping_app(), "s1")  # the zygote is up
    sm.reports.clear()
    bind(sm, new_id(), "s2", probe_app())
    assert of_type(be.ExecutorBound, sm.reports), sm.reports
    plain = [pid for pid in em.instances() if comm(pid) != "flame-instance"]
    assert len(plain) == 1
    assert parent_of(plain[0]) == em.process.pid


@pytest.mark.timeout(90)
def test_exit_codes_of_forked_instances_are_reported(sm: FakeSessionManager, em: ExecutorManagerProcess) -> None:
    """A forked module that exits (`SystemExit` with a message: status 1, as from a fresh
    interpreter) before it entered the session fails its bind with that exit code."""
    sm.register()
    forked_instance(sm, em, flmping_app(), "s1")  # the zygote is up: the next start is forked
    sm.reports.clear()
    bind(sm, new_id(), "s2", be.ApplicationContext(name="j", command="${FLAME_PYTHON}", arguments=["-m", "json.tool"]))
    (failed,) = of_type(be.ExecutorBindFailed, sm.reports)
    assert "exited with code 1 before it entered the session" in failed.message, failed.message
    assert "Expecting value" in em.log()
