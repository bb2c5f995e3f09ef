"""What an executor manager says about its node, and where it keeps its files on it.

Rules: the node is described as the machine is now (`NodeInfo`: hostname, memory, arch, os),
its capacity and its executors counted in slots; runtime files go to the user runtime dir
(`$XDG_RUNTIME_DIR/flame`) or a private `/tmp/flame-<uid>`, which must be this user's alone
(`flamed.private_dirs`: whoever can write it can replace the instance socket with a listener of
their own and receive every task), and the instance socket's path must fit a unix socket
address. Reads the machine, starts nothing, sends nothing.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import tempfile
from pathlib import Path

import platformdirs

from flamed.private_dirs import ensure_private_dir
from protocol.types import NodeInfo, ResourceRequirement

#: Longest unix socket path (sun_path is 108 bytes with the terminator).
_MAX_IPC_PATH = 100


def default_runtime_dir() -> Path:
    """The user runtime dir (`$XDG_RUNTIME_DIR/flame`); without XDG_RUNTIME_DIR (services,
    containers, CI) a private `/tmp/flame-<uid>` rather than platformdirs' warning and guess."""
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(platformdirs.user_runtime_dir("flame"))
    return Path(tempfile.gettempdir()) / f"flame-{os.getuid()}"


def prepare_runtime_dir(runtime_dir: Path) -> str | None:
    """Create the runtime dir (0700) or check that it is this user's alone; returns a line to
    log when its mode had to be tightened. Raises `UnsafeDirectory` with the fix to run."""
    return ensure_private_dir(runtime_dir, "runtime directory", hint="or give another --runtime-dir")


def instance_socket_path(runtime_dir: Path, node_name: str) -> Path:
    """Where this process's instance socket goes (a stale file there is removed). A runtime
    dir too deep for a socket address gets a fresh private directory under the temp dir
    (`mkdtemp`: 0700, unguessable), never a predictable name in a directory others can write."""
    path = runtime_dir / f"{node_name}-{os.getpid()}.sock"
    if len(str(path)) > _MAX_IPC_PATH:
        path = Path(tempfile.mkdtemp(prefix="flame-em-")) / "instances.sock"
    path.unlink(missing_ok=True)
    return path


def secure_socket(path: Path) -> None:
    """After the bind: only this user may connect to the instance socket (instances run as it)."""
    path.chmod(0o600)


def remove_instance_socket(path: Path, runtime_dir: Path) -> None:
    """At exit: the socket, and the private directory `instance_socket_path` made for it."""
    path.unlink(missing_ok=True)
    if path.parent != runtime_dir and path.parent.name.startswith("flame-em-"):
        with contextlib.suppress(OSError):
            path.parent.rmdir()


def node_info(node_name: str, slots: int) -> NodeInfo:
    """The node as the session manager sees it in `RegisterNode`."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = 0
    uname = platform.uname()
    return NodeInfo(
        name=node_name,
        hostname=socket.gethostname(),
        capacity=ResourceRequirement(cpu=slots, memory=memory, gpu=0),
        max_executors=slots,
        arch=uname.machine,
        os=uname.system.lower(),
    )
