"""The Runner's and the installer's pure pieces, without a cluster: flamepy's scaling rules,
package contents, archive safety, dependency lists, remote errors."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import cast

import pytest

from flamed.executor_manager.install import InstallError, Packages, dependencies, release_id, unpack
from flamed.executor_manager.lifecycle import Executors, log
from flamed.runner import RunnerContext, SessionContext
from flamed.runner.package import build, generated_pyproject
from flamed.runner.runpy import MAX_TRACEBACK, RemoteError, remote_error, resolve_arguments
from flamed.transport import Loop, Socket
from flamed.transport.dropped import DroppedFrames
from protocol.backend import ApplicationContext


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def add(self, n: int) -> int:
        self.count += n
        return self.count


def test_runner_context_follows_flamepy_defaults_and_errors() -> None:
    """Functions and classes autoscale from 0 (or warmup) without a maximum; fixed services run
    warmup or 1; instances are stateful and fixed. Breaks if sessions get other min/max
    instances than flamepy's or a bad combination is accepted."""
    fn = RunnerContext(execution_object=len)
    assert (fn.stateful, fn.autoscale, fn.min_instances, fn.max_instances) == (False, True, 0, None)
    fixed = RunnerContext(execution_object=Counter, autoscale=False, warmup=3)
    assert (fixed.min_instances, fixed.max_instances) == (3, 3)
    inst = RunnerContext(execution_object=Counter())
    assert (inst.stateful, inst.autoscale, inst.min_instances, inst.max_instances) == (True, False, 1, 1)
    with pytest.raises(ValueError, match="always fixed"):
        RunnerContext(execution_object=Counter(), autoscale=True)
    with pytest.raises(ValueError, match="always stateless"):
        RunnerContext(execution_object=Counter, stateful=True)
    with pytest.raises(ValueError, match="cannot be empty"):
        SessionContext(session_id="")


def test_package_leaves_out_the_default_excludes_and_adds_dependencies(tmp_path: Path) -> None:
    """The archive has the user's files, not .venv/__pycache__/*.pyc/.git, and a generated
    pyproject.toml naming the dependencies. Breaks if a venv is shipped or dependencies lost."""
    (tmp_path / "main.py").write_text("x = 1\n")
    for junk in (".venv/bin", "__pycache__", ".git"):
        (tmp_path / junk).mkdir(parents=True)
    (tmp_path / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "stale.pyc").write_bytes(b"\0")
    archive = build("app", tmp_path, ["numpy>=2"], [])
    try:
        with tarfile.open(archive) as tar:
            names = set(tar.getnames())
            pyproject = tar.extractfile("pyproject.toml")
            assert pyproject is not None
            text = pyproject.read().decode()
    finally:
        archive.unlink()
        archive.parent.rmdir()
    assert names == {"main.py", "pyproject.toml"}
    assert '"numpy>=2"' in text
    (tmp_path / "setup.py").write_text("")
    assert generated_pyproject("app", tmp_path, ["numpy"]) is None  # its own metadata wins


def test_unpack_refuses_members_outside_the_package(tmp_path: Path) -> None:
    """A package is untrusted input to the node: a member named ../x must not be written
    outside the release directory. Breaks if a package can overwrite the node's files."""
    archive = tmp_path / "evil"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"owned"
        info = tarfile.TarInfo("../escaped.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(tarfile.TarError):
        unpack(archive, tmp_path / "src")
    assert not (tmp_path / "escaped.txt").exists()


def test_dependencies_come_from_pyproject_and_requirements(tmp_path: Path) -> None:
    """Breaks if the installer misses a dependency source, or fails quietly on a broken file."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["a>=1"]\n')
    (tmp_path / "requirements.txt").write_text("b==2  # pinned\n-r other.txt\n\n")
    assert dependencies(tmp_path) == ["a>=1", "b==2"]
    (tmp_path / "pyproject.toml").write_text("[project\n")
    with pytest.raises(InstallError, match=r"pyproject\.toml"):
        dependencies(tmp_path)


def test_remote_error_keeps_the_type_name_text_and_traceback() -> None:
    """The task's failure reads `<Type>: <text>` then the remote traceback. Breaks if the
    caller loses the type or where it was raised."""

    def deep() -> None:
        raise KeyError("missing")

    try:
        deep()
    except KeyError as exc:
        error = remote_error(exc)
    assert isinstance(error, RemoteError)
    assert type(error).__name__ == "KeyError"
    assert str(error).startswith("'missing'")
    assert "in deep" in str(error)


def test_arguments_without_refs_pass_through() -> None:
    """No ObjectRef among the arguments: nothing is fetched, nothing changes."""
    args, kwargs = resolve_arguments((1, [2, 3]), {"k": {"x": 4}})
    assert args == (1, [2, 3])
    assert kwargs == {"k": {"x": 4}}


def test_a_deep_traceback_is_cut_in_the_middle() -> None:
    """A RecursionError's traceback is thousands of frames; the task's failure keeps its start
    and its end within MAX_TRACEBACK. Breaks if one failure can bloat the session manager."""

    def ping(n: int) -> int:  # alternating frames: Python cannot fold them into one line
        return pong(n + 1)

    def pong(n: int) -> int:
        return ping(n + 1)

    try:
        ping(0)
    except RecursionError as exc:
        error = remote_error(exc)
    text = str(error)
    assert len(text) < MAX_TRACEBACK + 500
    assert "characters left out" in text
    assert text.rstrip().endswith("maximum recursion depth exceeded")


def _installed(root: Path, app: ApplicationContext) -> Path:
    release = root / app.name / release_id(app)
    release.mkdir(parents=True)
    (release / "env.json").write_text("{}")
    return release


def test_a_release_is_removed_only_once_no_instance_holds_it(tmp_path: Path) -> None:
    """An unregistered application's release stays while an instance of it runs (a shared lock
    on its lock file, from this or another executor manager of the host) and goes after.
    Breaks if an executor manager deletes the files of a running instance, or never deletes."""
    packages = Packages(tmp_path, dict, lambda fd, cb: None, lambda fd: None, lambda delay, cb: None)
    app = ApplicationContext(name="gone", installer="python", url="file:///pkg.tar")
    release = _installed(tmp_path, app)
    held = packages.hold(app)
    assert held is not None
    assert not packages.remove("gone")
    assert release.is_dir()
    held.close()
    assert packages.remove("gone")
    assert not (tmp_path / "gone").exists()
    assert packages.remove("never-installed")
    assert packages.hold(ApplicationContext(name="plain", command="true")) is None


def test_a_registration_list_removes_what_was_unregistered_while_away(tmp_path: Path) -> None:
    """The application list of a registration: the shell removes the installs of applications
    not in it, except a release an instance holds (here or in another executor manager of the
    host), which stays for later; the others stay. Breaks if a node that missed
    `RemoveApplication` keeps the releases forever, removes a registered one, or one in use.
    (Which applications the executors here use is the core's decision:
    tests/em/test_core_applications.py.)"""
    loop = Loop()
    holder = Executors(
        loop,
        cast(Socket, None),
        "ipc://none",
        work_root=tmp_path / "rt" / "work" / "x",
        stop_timeout=1.0,
        dropped=DroppedFrames(loop, log),
    )
    root = holder.packages.root
    kept, gone, busy = (
        ApplicationContext(name=n, installer="python", url=f"file:///{n}") for n in ("kept", "gone", "busy")
    )
    for app in (kept, gone, busy):
        _installed(root, app)
    held = holder.packages.hold(busy)
    assert held is not None
    holder.keep_applications(["kept"])
    assert sorted(p.name for p in root.iterdir()) == ["busy", "kept"]
    assert holder.core.doomed_apps == {"busy"}
    held.close()
    holder.keep_applications(["kept"])
    assert sorted(p.name for p in root.iterdir()) == ["kept"]
    assert holder.core.doomed_apps == set()
