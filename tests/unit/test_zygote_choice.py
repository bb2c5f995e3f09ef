"""Which commands the zygote forks (flamed/executor_manager/zygote.py `Zygote.module_of`): only
those a forked child runs as `python -m module` from a fresh interpreter would. No process is
started here."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from flamed.executor_manager.zygote import Zygote

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def zygote() -> Zygote:
    return Zygote("ipc:///nowhere")


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "FLAME_INSTANCE_TOKEN": "i-x", **extra}


def test_this_interpreter_running_a_module_is_forked(zygote: Zygote, tmp_path: Path) -> None:
    """`${FLAME_PYTHON} -m flamed.apps.flmping` (arguments after the module kept) is forked."""
    assert zygote.module_of([sys.executable, "-m", "flamed.apps.flmping"], env(), tmp_path) == "flamed.apps.flmping"
    assert zygote.module_of([sys.executable, "-m", "svc", "--flag"], env(), tmp_path) == "svc"


@pytest.mark.parametrize(
    "argv",
    [
        ["/usr/bin/env", "-m", "svc"],  # another program
        [sys.executable + "-other", "-m", "svc"],  # another interpreter (a venv's)
        [sys.executable, "service.py"],  # a service file
        [sys.executable, "-X", "dev", "-m", "svc"],  # interpreter options
        [sys.executable, "-m", "svc; rm"],  # not a module name
        [sys.executable, "-m"],
    ],
)
def test_other_commands_are_started_by_exec(zygote: Zygote, tmp_path: Path, argv: list[str]) -> None:
    """Anything but this interpreter with `-m <module>` goes to plain exec."""
    assert zygote.module_of(argv, env(), tmp_path) is None


@pytest.mark.parametrize("name", ["PYTHONPATH", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "LC_ALL", "LANG"])
def test_another_startup_environment_is_started_by_exec(zygote: Zygote, tmp_path: Path, name: str) -> None:
    """A variable Python reads at start that differs from the zygote's (an installed package's
    PYTHONPATH, a locale) means plain exec: the zygote's interpreter did not start that way."""
    assert zygote.module_of([sys.executable, "-m", "svc"], env(**{name: "/elsewhere"}), tmp_path) is None


@pytest.mark.parametrize("entry", ["zmq.py", "flamed", "msgspec.cpython-311-x86_64-linux-gnu.so"])
def test_a_working_directory_shadowing_a_preloaded_module_is_started_by_exec(
    zygote: Zygote, tmp_path: Path, entry: str
) -> None:
    """Under `-m` the working directory comes first on sys.path: one that holds a module the
    zygote imported would be imported by a fresh interpreter instead, so it gets exec."""
    (tmp_path / entry).touch()
    assert zygote.module_of([sys.executable, "-m", "svc"], env(), tmp_path) is None


def test_a_disabled_zygote_forks_nothing(tmp_path: Path) -> None:
    """`enabled=False`: every start is plain exec, and no zygote process is started."""
    zygote = Zygote("ipc:///nowhere", enabled=False)
    assert zygote.spawn([sys.executable, "-m", "flamed.apps.flmping"], env(), tmp_path) is None
    assert zygote.process is None
