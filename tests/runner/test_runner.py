"""The Runner against a real cluster: a package of the working directory installed by the
executor manager, calls as tasks of the built-in `flmrun`, results and chained arguments through
the object cache."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from concurrent.futures import wait
from pathlib import Path
from types import ModuleType

import pytest

from flamed import client as flame
from flamed.runner import ObjectFuture, Runner
from tests.integration.daemons import Daemons, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def app_names() -> set[str]:
    return {a.name for a in flame.list_applications()}


def test_chaining_and_fan_in(runner_cluster: Daemons, project: ModuleType) -> None:
    """Results feed later calls: a chain (add(square(3), square(2))), a fan-in (total of a list
    of futures) and a large result (through the cache, by reference). Breaks if ObjectFutures
    given as arguments (top level, keyword, or inside a list) are not resolved on the executor,
    or a small result's ref() is not a real cache object."""
    with Runner("chain") as rr:
        square, add, total = rr.service(project.square), rr.service(project.add), rr.service(project.total)
        squares = [square(i) for i in range(6)]
        assert all(isinstance(f, ObjectFuture) for f in squares)
        assert total(squares).get() == 55
        assert add(square(3), b=square(2)).get() == 13
        assert [f.get() for f in rr.select(squares)] != []
        assert sorted(rr.get(squares)) == [0, 1, 4, 9, 16, 25]
        # a large result travels through the object cache, by reference, to the next call
        large = rr.service(project.big)(300_000)
        assert rr.service(project.length)(large).get() == 300_000
        assert large.ref().key.startswith("chain/")
        # a small one comes in its task's output; ref() puts it in the cache when asked
        ref = squares[3].ref()
        assert isinstance(ref, flame.ObjectRef)
        assert flame.get_object(ref) == 9
    assert "chain" not in app_names()


def test_flamepy_clients_get_an_object_ref_as_output(runner_cluster: Daemons, project: ModuleType) -> None:
    """A session opened by hand with flamepy's RunnerContext (as Flame's e2e tests do) gets the
    encoded ObjectRef of the result as the task's output, small or not: only flamed.runner's
    own services ask for small results inline. Breaks flamepy code that decodes outputs."""
    import cloudpickle  # type: ignore[import-untyped]

    from flamed.runner import RunnerContext, RunnerRequest

    with Runner("byhand") as rr:
        ref = flame.put_object("byhand/ctx", cloudpickle.dumps(RunnerContext(execution_object=project.square)))
        with flame.create_session("byhand", ref.encode()) as session:
            output = session.invoke(cloudpickle.dumps(RunnerRequest(args=(7,))))
        assert output is not None
        assert flame.get_object(flame.ObjectRef.decode(output)) == 49
        assert rr.service(project.square)(7).get() == 49


def test_remote_exception_carries_the_remote_traceback(runner_cluster: Daemons, project: ModuleType) -> None:
    """A call that raises fails with the exception's type, its text and where it was raised on
    the executor (the inner function's frame). Breaks if only the last line travels back."""
    with Runner("boom") as rr:
        future = rr.service(project.fails)(7)
        with pytest.raises(flame.FlameError) as caught:
            future.get()
    message = str(caught.value)
    assert message.startswith("ValueError: bad value 7"), message
    assert "Traceback (most recent call last)" in message
    assert "in _inner" in message
    assert "tasks.py" in message


def test_runner_inside_a_task(runner_cluster: Daemons, project: ModuleType) -> None:
    """A call that starts a Runner of its own: the instance finds the cluster (FLAME_ENDPOINT
    from its executor manager) and its inner application is cleaned up. Breaks if code run by
    the cluster cannot use the cluster."""
    with Runner("outer") as rr:
        assert rr.service(project.nested)(6).get() == 7
    assert not {"outer", "inner"} & app_names()


def test_missing_dependency_is_named(runner_cluster: Daemons, project: ModuleType) -> None:
    """Code that imports a module the node does not have fails its call with the import error
    and its traceback (not a hung call or a bare "task failed")."""
    with Runner("missing") as rr, pytest.raises(flame.FlameError) as caught:
        rr.service(project.needs_missing_module)().get()
    assert "ModuleNotFoundError" in str(caught.value)
    assert "flame_no_such_module" in str(caught.value)


def write_wheel(directory: Path, name: str, value: int) -> None:
    """A minimal pure-Python wheel `name` 1.0 whose module has VALUE = value."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        f"{name}.py": f"VALUE = {value}\n".encode(),
        f"{name}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
        f"{name}-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{name}-1.0.dist-info/RECORD,,")
    with zipfile.ZipFile(directory / f"{name}-1.0-py3-none-any.whl", "w") as whl:
        for path, data in files.items():
            whl.writestr(path, data)
        whl.writestr(f"{name}-1.0.dist-info/RECORD", "\n".join(record) + "\n")


def test_dependencies_install_offline_from_local_wheels(runner_cluster: Daemons, project: ModuleType) -> None:
    """`dependencies=[...]` are installed once per package on the node, without an index
    (PIP_NO_INDEX) when the package ships them as wheels in `wheels/`; the install log is kept.
    Breaks if dependencies are ignored, or need the network."""
    write_wheel(Path.cwd() / "wheels", "tinydep", 42)
    with Runner("withdeps", dependencies=["tinydep"]) as rr:
        service = rr.service(project.uses_tinydep)
        assert rr.get([service(), service()]) == [42, 42]
    logs = list((runner_cluster.dir / "rt-n1" / "apps" / "withdeps").glob("*/install.log"))
    assert len(logs) == 1
    assert "installed withdeps" in logs[0].read_text()


def test_failing_package_install_fails_the_calls_with_its_reason(runner_cluster: Daemons, project: ModuleType) -> None:
    """A dependency that cannot be installed fails the bind (code 10, the install log's tail)
    and, after the session's bind retries, the calls, with that reason. Breaks if the calls
    hang, or fail without saying the install failed."""
    with Runner("baddeps", dependencies=["flame-no-such-package==9.9"]) as rr:
        future = rr.service(project.square)(3)
        with pytest.raises(flame.FlameError) as caught:
            future.get()
    message = str(caught.value)
    assert "installing the application's package failed" in message, message
    assert "flame-no-such-package" in message
    assert "install.log" in message


def test_installed_package_removed_when_the_application_is_unregistered(
    runner_cluster: Daemons, project: ModuleType
) -> None:
    """A call installs the Runner's package on the node (<runtime>/apps/<app>); closing the
    Runner unregisters the application, and the node removes the install once its instance has
    gone. Breaks if releases stay on the node forever after their application is gone."""
    apps = runner_cluster.dir / "rt-n1" / "apps"
    with Runner("tidy") as rr:
        assert rr.service(project.square)(4).get() == 16
        assert (apps / "tidy").is_dir()
        assert any((apps / "tidy").glob("*/env.json"))
    assert "tidy" not in app_names()
    wait_for("the install of an unregistered application to be removed", lambda: not (apps / "tidy").exists())


def test_runner_closed_while_calls_run(runner_cluster: Daemons, project: ModuleType) -> None:
    """Closing a Runner with calls running and queued: close waits for the calls in flight (the
    session manager refuses to close a session while tasks run), then unregisters the
    application and deletes its objects. Breaks if close gives up early and leaves the
    application registered, or a call's future never completes."""
    rr = Runner("closing")
    slow = rr.service(project.slow)
    futures = [slow(0.5, i) for i in range(8)]
    wait_for("a call to run", lambda: any(s.running for s in flame.list_sessions() if s.application == "closing"))
    rr.close()
    assert "closing" not in app_names()
    _, not_done = wait([f._future for f in futures], timeout=30)
    assert not not_done
    finished = [i for i, f in enumerate(futures) if f._future.exception() is None]
    assert finished, "the running calls finish"
    assert [futures[i].get() for i in finished] == finished  # small results came with their tasks
    rr.close()  # again: nothing to do


def test_runner_close_gives_up_after_its_timeout_and_can_be_called_again(
    runner_cluster: Daemons, project: ModuleType
) -> None:
    """A call still running when close's timeout passes: close logs it and leaves the session,
    the application and its objects in place (the call finishes, its future completes), and
    a later close does the rest. Breaks if close waits unbounded, deletes what a running call
    needs, or gives up for good and leaves the application registered."""
    rr = Runner("patient")
    call = rr.service(project.slow)(3.0, "done")
    wait_for("the call to run", lambda: any(s.running for s in flame.list_sessions() if s.application == "patient"))
    rr.close(timeout=0.2)
    assert "patient" in app_names()
    assert call.get() == "done"
    rr.close()
    assert "patient" not in app_names()
