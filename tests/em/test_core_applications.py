"""The executor manager's core when applications are unregistered (`RemoveApplication`, or a
registration's application list): it asks its shell to remove their installed packages once no
executor here uses them, and again later when the shell found a release still held. Pure,
under a fake clock (tests/em/core_harness.py); the lock files that guard a release against the
instances of other executor managers are the shell's (tests/runner/test_pieces.py), the real
removal end to end is tests/runner/test_runner.py."""

from __future__ import annotations

import pytest

from protocol import backend as be
from tests.em.contexts import flmping_app, session, tasks
from tests.em.core_harness import FakeShell

pytestmark = pytest.mark.timeout(10)


def removed(shell: FakeShell) -> list[str]:
    names, shell.removed_apps = shell.removed_apps, []
    return names


def test_an_unused_application_is_removed_at_once() -> None:
    """Breaks if `RemoveApplication` of an application no executor here uses leaves its
    packages, or if the core keeps asking once they went."""
    shell = FakeShell()
    shell.command(be.RemoveApplication(executor_id="", application="gone"))
    assert removed(shell) == ["gone"]
    assert shell.core.doomed_apps == set()
    assert shell.take_reports() == [], "not about an executor: nothing to report"


def test_an_application_in_use_is_removed_once_its_executor_is_unbound() -> None:
    """The packages of an application a bound executor runs stay until its instance is gone.
    Breaks if an executor manager deletes the files of a running instance, or never deletes
    them after it ended."""
    shell = FakeShell()
    shell.bind("e1", "s1", tasks([b"x"]))
    shell.command(be.RemoveApplication(executor_id="", application="flmping"))
    assert removed(shell) == []
    shell.command(be.UnbindExecutor(executor_id="e1"))
    assert removed(shell) == [], "still there while the instance leaves"
    shell.exit("e1")
    assert removed(shell) == ["flmping"]
    assert shell.core.doomed_apps == set()


def test_an_application_about_to_be_bound_is_not_removed() -> None:
    """An executor stopping its old instance to bind another session of the application keeps
    the application's packages. Breaks if they are removed between the old instance's exit and
    the new bind's start."""
    shell = FakeShell()
    shell.bind("e1", "s1", tasks([b"x"]))
    shell.command(be.BindExecutor(executor_id="e1", session=session("s2"), application=flmping_app()))
    shell.core.doomed_apps.add("flmping")
    shell.exit("e1")
    assert removed(shell) == []


def test_a_release_held_elsewhere_is_tried_again_at_the_next_unbind() -> None:
    """The shell could not remove everything (an instance of another executor manager of the
    host holds a release): the application stays doomed and is asked for again when an executor
    here is next unbound. Breaks if one refusal leaves the packages forever."""
    shell = FakeShell()
    shell.held_apps.add("busy")
    shell.run(shell.core.applications_unregistered({"busy", "gone"}, shell.now))
    assert removed(shell) == ["gone"]
    assert shell.core.doomed_apps == {"busy"}
    shell.held_apps.clear()
    shell.bind("e1", "s1", tasks([b"x"]))
    shell.command(be.UnbindExecutor(executor_id="e1"))
    shell.exit("e1")
    assert removed(shell) == ["busy"]
    assert shell.core.doomed_apps == set()


def test_an_application_registered_again_is_not_removed() -> None:
    """An application unregistered while held, then registered again and bound, keeps its
    packages. Breaks if a bind is followed by the removal of the package it is about to run."""
    shell = FakeShell()
    shell.held_apps.add("flmping")
    shell.run(shell.core.applications_unregistered({"flmping"}, shell.now))
    assert shell.core.doomed_apps == {"flmping"}
    shell.held_apps.clear()
    shell.bind("e1", "s1", tasks([b"x"]))
    assert shell.core.doomed_apps == set()
    shell.command(be.UnbindExecutor(executor_id="e1"))
    shell.exit("e1")
    assert removed(shell) == []
