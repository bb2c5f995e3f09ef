"""Finding 8: a daemon's private directories must be its user's alone.

The executor manager started silently in a runtime directory that another user owned with
mode 0777, and that user replaced the instance socket with a listener of their own (receiving
every task); a pre-existing state directory with mode 0755 was used without a word. Now each
daemon refuses, before it binds or writes anything, a directory that is owned by someone else
or writable by group or others (or under a parent that is), with one line that gives the
command to run; a directory others may only read is tightened to 0700 with a warning; what the
daemons create is 0700 (directories) and 0600 (state files, the instance socket).

What would break: `mkdir(exist_ok=True)` on an existing directory (it keeps the owner and the
mode it found), a check of the directory but not of its parents, a check that follows a symlink
planted by another user.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from flamed.executor_manager.node import instance_socket_path, remove_instance_socket
from flamed.private_dirs import UnsafeDirectory, ensure_private_dir
from tests.support.daemons import Daemons
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NOBODY = 65534
UNITS = Path(__file__).resolve().parents[2] / "systemd"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root (chown)")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def refused(d: Daemons, name: str, proc: subprocess.Popen[bytes]) -> str:
    """The daemon exits non-zero on its own, quickly; its log."""
    try:
        code = proc.wait(30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{name} started instead of refusing:\n{d.log(name)}") from None
    assert code != 0, d.log(name)
    return d.log(name)


def loose_dir(path: Path, mode_bits: int, owner: int | None = None) -> Path:
    path.mkdir()
    path.chmod(mode_bits)
    if owner is not None:
        os.chown(path, owner, owner)
    return path


def test_executor_manager_refuses_a_runtime_dir_others_can_write(daemons: Daemons) -> None:
    """A 0777 runtime dir: anyone could replace the instance socket. Refused with the chmod."""
    runtime = loose_dir(daemons.dir / "rt-n1", 0o777)
    log = refused(daemons, "n1", daemons.start_executor_manager("n1"))
    assert f"runtime directory {runtime} is writable by group or others (mode 0777)" in log
    assert f"run: chmod 700 {runtime}" in log
    assert list(runtime.iterdir()) == []  # no socket was bound there


@needs_root
def test_executor_manager_refuses_a_runtime_dir_owned_by_another_user(daemons: Daemons) -> None:
    """The finding itself: owned by another user, mode 0777. Even 0700 is refused, since its
    owner can chmod it at will."""
    runtime = loose_dir(daemons.dir / "rt-n1", 0o700, owner=NOBODY)
    log = refused(daemons, "n1", daemons.start_executor_manager("n1"))
    assert f"runtime directory {runtime} is owned by nobody (uid {NOBODY}), not by this daemon's user" in log
    assert f"run: chown root {runtime} && chmod 700 {runtime}" in log


def test_executor_manager_refuses_a_runtime_dir_under_a_parent_others_can_write(daemons: Daemons) -> None:
    """A private runtime dir in a 0777 parent without the sticky bit can be renamed away and
    replaced by anyone; the same parent with the sticky bit (as /tmp) is fine."""
    parent = loose_dir(daemons.dir / "shared", 0o777)
    proc = daemons.start_executor_manager("n1", 2, "--runtime-dir", str(parent / "rt"))
    log = refused(daemons, "n1", proc)
    assert f"{parent}, a parent of runtime directory {parent / 'rt'}, is writable by group or others" in log
    assert f"run: chmod go-w {parent}" in log
    parent.chmod(0o1777)
    assert ensure_private_dir(parent / "rt", "runtime directory") is None


def test_session_manager_refuses_a_state_dir_others_can_write(daemons: Daemons) -> None:
    """Breaks if the session manager starts on a state directory group or others can write, or does not say to
    chmod 700 it (and writes nothing there)."""
    state = loose_dir(daemons.dir / "state", 0o770)
    log = refused(daemons, "sm", daemons.start_session_manager())
    assert f"flamed: error: state directory {state} is writable by group or others (mode 0770)" in log
    assert f"run: chmod 700 {state}" in log
    assert list(state.iterdir()) == []  # not even a LOCK


@needs_root
def test_session_manager_refuses_a_state_dir_owned_by_another_user(daemons: Daemons) -> None:
    """Breaks if the session manager starts on a state directory owned by another user, or does not say how to
    fix it."""
    state = loose_dir(daemons.dir / "state", 0o700, owner=NOBODY)
    log = refused(daemons, "sm", daemons.start_session_manager())
    assert f"uid {NOBODY}" in log
    assert f"run: chown root {state} && chmod 700 {state}" in log


@needs_root
def test_a_symlink_planted_by_another_user_is_refused(tmp_path: Path) -> None:
    """A link in a shared directory, owned by someone else, pointing at a directory of ours:
    following it would put our socket wherever they chose."""
    target = loose_dir(tmp_path / "ours", 0o700)
    link = tmp_path / "flame-0"
    link.symlink_to(target)
    os.lchown(link, NOBODY, NOBODY)
    with pytest.raises(UnsafeDirectory, match=r"is a symlink owned by nobody \(uid 65534\)"):
        ensure_private_dir(link, "runtime directory")
    os.lchown(link, 0, 0)
    assert ensure_private_dir(link, "runtime directory") is None


def test_readable_state_dir_is_tightened_with_a_warning_and_everything_created_is_private(daemons: Daemons) -> None:
    """A 0755 state dir (systemd's StateDirectory= default) becomes 0700 with a log line; a
    fresh runtime dir is 0700; state files and the instance socket are 0600."""
    state = loose_dir(daemons.dir / "state", 0o755)
    daemons.start_session_manager()
    daemons.start_executor_manager("n1")
    daemons.wait_ready_nodes(1)
    assert f"state directory {state} was open to group or others (mode 0755); tightened to 0700" in daemons.log("sm")
    assert mode(state) == 0o700
    files = list(state.iterdir())
    assert files, {f.name: oct(mode(f)) for f in files}
    assert all(mode(f) & 0o077 == 0 for f in files), {f.name: oct(mode(f)) for f in files}
    runtime = daemons.dir / "rt-n1"
    assert mode(runtime) == 0o700
    sockets = wait_for("the instance socket", lambda: [p for p in runtime.iterdir() if p.is_socket()])
    assert [mode(s) for s in sockets] == [0o600]


def test_a_runtime_dir_too_deep_for_a_socket_gets_a_private_one(tmp_path: Path) -> None:
    """The fallback for a long path is a fresh 0700 directory, not a predictable name in /tmp."""
    deep = tmp_path / ("d" * 120)
    path = instance_socket_path(deep, "n1")
    assert len(str(path)) <= 100
    assert path.parent != deep
    assert mode(path.parent) == 0o700
    assert path.parent.stat().st_uid == os.geteuid()
    remove_instance_socket(path, deep)
    assert not path.parent.exists()


def test_systemd_units_create_private_directories() -> None:
    """Without `StateDirectoryMode=` systemd makes the state dir 0755, and the daemon would
    tighten it (and say so) at every start."""
    sm = (UNITS / "flame-session-manager.service").read_text()
    em = (UNITS / "flame-executor-manager.service").read_text()
    assert "StateDirectoryMode=0700" in sm
    assert "RuntimeDirectoryMode=0700" in sm
    assert "UMask=0077" in sm
    assert "RuntimeDirectoryMode=0700" in em
    assert "CacheDirectoryMode=0700" in em
    assert "UMask=0077" in em
