"""Directories a daemon keeps private: the session manager's state directory (the log, the
snapshots, task inputs) and the executor manager's runtime directory (the instance socket,
the instances' work directories).

Whoever can write such a directory can replace what is in it: put their own listener where the
instance socket was, and receive every task and the common data of every session. So, before a
daemon uses one, `ensure_private_dir` checks, as ssh's StrictModes does:

- the directory is owned by the daemon's user and neither group nor others can write it;
  otherwise the daemon refuses to start with one line that gives the command to run;
- a directory others can only read or enter (0755: what `mkdir` gives under the usual umask and
  what systemd's `StateDirectory=` makes without `StateDirectoryMode=`) is tightened to 0700
  and the caller logs that it was;
- every directory above it is owned by root or the daemon's user and is not writable by group
  or others unless it has the sticky bit (as `/tmp`): otherwise its owner or writers could
  rename the whole directory away and put another in its place;
- the directory itself may be a symlink only if root or the daemon's user owns the link
  (a link planted in `/tmp` by someone else is refused).

A directory that does not exist is created with mode 0700 (its missing parents as the umask
says). Pure filesystem checks, no daemon state: `UnsafeDirectory` carries the message.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from protocol.errors import FlameBaseError

PRIVATE_MODE = 0o700


class UnsafeDirectory(FlameBaseError):
    """The directory cannot be trusted; the message says why and what to run."""


def _name(uid: int) -> str:
    """The user name of `uid` for a command line, or the number when it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _user(uid: int) -> str:
    name = _name(uid)
    return f"uid {uid}" if name == str(uid) else f"{name} (uid {uid})"


def ensure_private_dir(path: Path, what: str, *, hint: str = "") -> str | None:
    """Create `path` (0700) or check it as the module says. Returns a line to log when it had
    to tighten the mode, else None; raises `UnsafeDirectory` when it cannot be used.
    `what` names the directory in messages ("state directory"); `hint` is appended to a
    refusal (e.g. "or start with another --state-dir")."""
    uid = os.geteuid()
    path = Path(os.path.abspath(path))
    tail = f" ({hint})" if hint else ""
    try:
        path.mkdir(mode=PRIVATE_MODE, parents=True)
        path.chmod(PRIVATE_MODE)  # mkdir's mode is filtered by the umask: this only narrows it
    except FileExistsError:
        pass
    except OSError as exc:
        raise UnsafeDirectory(f"cannot create {what} {path}: {exc.strerror}{tail}") from None
    try:
        link = path.lstat()
        st = path.stat()
    except OSError as exc:
        raise UnsafeDirectory(f"cannot read {what} {path}: {exc.strerror}{tail}") from None
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in (0, uid):
        raise UnsafeDirectory(
            f"{what} {path} is a symlink owned by {_user(link.st_uid)}, who can point it anywhere; "
            f"remove it (rm {path}) and start again{tail}"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeDirectory(f"{what} {path} is not a directory{tail}")
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != uid:
        raise UnsafeDirectory(
            f"{what} {path} is owned by {_user(st.st_uid)}, not by this daemon's user {_user(uid)}, "
            f"who could replace what is in it; run: chown {_name(uid)} {path} && chmod 700 {path}{tail}"
        )
    if mode & 0o022:
        raise UnsafeDirectory(
            f"{what} {path} is writable by group or others (mode {mode:04o}), who could replace what is "
            f"in it; run: chmod 700 {path}{tail}"
        )
    _check_parents(path.resolve(), what, uid, tail)
    if mode & 0o077:
        try:
            path.chmod(PRIVATE_MODE)
        except OSError as exc:
            raise UnsafeDirectory(
                f"{what} {path} is open to group or others (mode {mode:04o}) and cannot be closed: "
                f"{exc.strerror}; run: chmod 700 {path}{tail}"
            ) from None
        return f"{what} {path} was open to group or others (mode {mode:04o}); tightened to 0700"
    return None


def _check_parents(path: Path, what: str, uid: int, tail: str) -> None:
    for parent in path.parents:
        try:
            st = parent.stat()
        except OSError as exc:
            raise UnsafeDirectory(f"cannot read {parent}, a parent of {what} {path}: {exc.strerror}{tail}") from None
        mode = stat.S_IMODE(st.st_mode)
        if st.st_uid not in (0, uid):
            raise UnsafeDirectory(
                f"{parent}, a parent of {what} {path}, is owned by {_user(st.st_uid)}, who could put another "
                f"directory in its place; use a {what} under directories owned by root or this daemon's user{tail}"
            )
        if mode & 0o022 and not mode & stat.S_ISVTX:
            raise UnsafeDirectory(
                f"{parent}, a parent of {what} {path}, is writable by group or others (mode {mode:04o}) without "
                f"the sticky bit, so they could put another directory in its place; run: chmod go-w {parent}{tail}"
            )
