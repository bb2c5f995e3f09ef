"""A fork server (zygote) per executor manager: instances of Python services without an
interpreter start and imports each time.

An instance of a service run by `flamed.service.run` (`${FLAME_PYTHON} -m flamed.apps.flmping`
and the like) spends most of its start (about 0.1 s of a core) starting Python and importing
flamed, pyzmq and msgspec. The zygote is a process the executor manager starts once, with those
modules imported and no ZeroMQ context and no thread. It keeps two children forked ahead
(spares, named `flame-spare`: a node's two slots start theirs at once) waiting for the next
such instances; a spare becomes an instance, and the zygote forks the next. Every other
command is started by plain exec (instances.py), and so is every instance while the zygote is
down: it is restarted, with backoff, at a later start.

The child is the executor manager's child, not the zygote's: it is forked with `CLONE_PARENT`,
so the executor manager waits for it, gets its exit status and pidfd exactly as for an instance
it started itself, and the zygote never reaps anything. Before anything else the child becomes
the leader of its own session and process group (`setsid`, so the manager can kill the whole
group) and asks for SIGKILL when the executor manager dies (`PR_SET_PDEATHSIG`; its parent's
pid is checked again when a request comes). Then it takes its request (command, environment, working
directory, token) straight from the executor manager's socket: the zygote itself never reads a
request, so no tenant's environment ever passes through the memory later instances are forked
from. It reports its pid, waits for the manager's go (a signal; a child whose manager gave up
gets none, and exits) and runs the module as `python -m module` would (`runpy.run_module(module,
run_name="__main__", alter_sys=True)`; a preloaded module from the code the zygote loaded).
What does not depend on the request is done before it comes, in the zygote or in the waiting
spare: the instance codec's types are built, the heap frozen (`gc.freeze`), and the spare has
closed every inherited descriptor but 0-2 and started ZeroMQ's threads while it waited.

Only a command that `python -m` would run the same way from a fresh interpreter is forked:
the executable is this interpreter (the one the zygote runs; a package installed in a venv
runs another, so it gets plain exec), the arguments are `-m <module> ...`, the variables
Python reads at start (`PYTHON*`, the locale) are the zygote's, and the working directory (the
first entry of `sys.path` under `-m`) holds nothing named like a module the zygote imported.

Known differences from plain exec: `/proc/<pid>/environ` and `cmdline` show the zygote's (the
child's real environment is `os.environ`); the zygote's environment names the instance endpoint
and `FLAME_ZYGOTE=1`, and each child names itself `flame-instance` (`comm`), so tools can tell
them from other processes; and all children of one zygote share its `str` hash seed (it is
restarted with the executor manager).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import msgspec

from flamed.lifeline import parent_death_signal
from flamed.transport import start_context

log = logging.getLogger("flamed.executor_manager")

#: Seconds the executor manager waits for a forked child to report its pid.
SPAWN_TIMEOUT = 2.0
#: Restart delays of a zygote that died or failed: doubling from the first to the last.
RESTART_BACKOFF = (0.5, 30.0)
#: Milliseconds a forked instance's unsent ZeroMQ messages are given at exit.
_LINGER_MS = 2000
#: Largest request (bytes): the environment of an instance.
MAX_REQUEST = 1 << 20
#: The name (`comm`) of the zygote and of each child it forks.
ZYGOTE_NAME = b"flame-zygote"
SPARE_NAME = b"flame-spare"
CHILD_NAME = b"flame-instance"
#: Spares lost in a row (killed before they took a request) before the zygote gives up.
SPARES_LOST_LIMIT = 3
#: Spares kept forked ahead: the instances of a node's two slots start at once.
SPARES = 2
#: The manager's go to a child that reported its pid (a signal: see `_child`), and how long
#: the child waits for it (seconds) before it takes the manager for gone.
GO_SIGNAL = signal.SIGUSR1
GO_TIMEOUT = 30.0
#: Modules the zygote imports for its children.
PRELOAD = ("flamed.service", "flamed.apps.flmping", "flamed.apps.flmexec", "flamed.apps.flmrun", "runpy")

#: The code of each preloaded module a child may run, loaded once in the zygote (`load_code`).
_COMPILED: dict[str, tuple[importlib.machinery.ModuleSpec, types.CodeType]] = {}

_REQUEST = b"R"
_CLONE_PARENT = 0x00008000
_SYS_CLONE = {"x86_64": 56, "aarch64": 220}.get(os.uname().machine)
_PR_SET_NAME = 15
_PR_SET_PDEATHSIG = 1
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
# Variables Python reads when it starts (they shape sys.path, flags, encodings): a child is
# forked only if they are the zygote's.
_STARTUP_PREFIXES = ("PYTHON", "LC_")
_STARTUP_NAMES = frozenset({"LANG", "LANGUAGE", "HOME", "VIRTUAL_ENV"})


class Request(msgspec.Struct, frozen=True):
    module: str
    args: list[str]
    env: dict[str, str]
    cwd: str
    parent: int


def _startup_env(env: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(_STARTUP_PREFIXES) or k in _STARTUP_NAMES}


# ---------------------------------------------------------------------------- the zygote


def _libc() -> ctypes.PyDLL:
    # PyDLL: the GIL stays held across the call, as os.fork holds it across fork().
    return ctypes.PyDLL(None, use_errno=True)


def fork_sibling() -> int:
    """fork(), but the child is our parent's child (`CLONE_PARENT`); 0 in the child. With
    Python's before/after-fork work (locks, at-fork hooks: `random` is reseeded)."""
    if _SYS_CLONE is None:
        raise OSError("CLONE_PARENT: unsupported machine")
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = libc.syscall(
        ctypes.c_long(_SYS_CLONE),
        ctypes.c_ulong(_CLONE_PARENT | signal.SIGCHLD),
        ctypes.c_void_p(0),
        ctypes.c_void_p(0),
        ctypes.c_void_p(0),
        ctypes.c_ulong(0),
    )
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    errno = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(errno, os.strerror(errno))
    return int(pid)


def _set_name(name: bytes) -> None:
    _libc().prctl(_PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


def serve(fd: int, spares: int = SPARES) -> Request | None:
    """The zygote's loop: keep `spares` children forked ahead (spares), each waiting for a
    request; fork another as soon as one took one. Returns None (exit) in the zygote when the
    executor manager closed its end; returns its request in each child."""
    import threading

    for name in PRELOAD:
        __import__(name)
    _warm()
    sock = socket.socket(fileno=fd)
    if threading.active_count() != 1:  # a preloaded module started a thread: forking is unsafe
        sock.send(b"threads")
        return None
    _set_name(ZYGOTE_NAME)
    sock.send(b"ready")
    told: dict[int, bytes] = {}  # the progress pipe of each spare -> what it wrote so far
    lost = 0
    while lost < SPARES_LOST_LIMIT:
        while len(told) < spares:
            progress_r, progress_w = os.pipe()
            if fork_sibling() == 0:
                os.close(progress_r)  # (the other spares' pipes: closed by _child)
                return _child(sock, progress_w)
            os.close(progress_w)
            told[progress_r] = b""
        # A spare writes a byte once it took a request and one once it had its go: the next
        # is forked then, not while the instance starts (a fork competes with it for the CPU).
        # At EOF without a request it saw the manager close its end, or it was killed (then
        # fork another, a few times at most).
        for progress in select.select(list(told), [], [])[0]:
            more = os.read(progress, 1)
            told[progress] += more
            if more and len(told[progress]) < 2:
                continue
            lost = 0 if told.pop(progress) else lost + 1
            os.close(progress)
        with contextlib.suppress(BlockingIOError):
            if not sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                return None  # the executor manager closed its end
    return None


def _warm() -> None:
    """Do once here what every instance of a Python service does at its start, so each child
    inherits it done: msgspec builds a decoder's type information at its first use (1-3 ms of
    each start otherwise), and `runpy` finds and loads a module's code (about 1 ms)."""
    from protocol import codec
    from protocol import instance as im

    codec.instance_command_codec()
    codec.encode(im.InstanceReady(executor_id="", protocol_version=codec.PROTOCOL_VERSION, pid=0))
    load_code(PRELOAD)
    # What is here now stays: out of the collector's sight, so a child's collections do not
    # write to (and so copy) the pages it shares with the zygote.
    gc.freeze()


def load_code(modules: tuple[str, ...]) -> None:
    """Load the code of each of `modules` that `python -m` would run (not a package), for
    `run_module`."""
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.submodule_search_locations is not None:  # a package runs its __main__
            continue
        if isinstance(spec.loader, importlib.abc.InspectLoader) and (code := spec.loader.get_code(name)):
            _COMPILED[name] = (spec, code)


def _child(sock: socket.socket, progress: int) -> Request:
    """In the forked child: a spare until a request comes, then the instance's process.

    A spare does ahead what does not depend on the request (unless a request waits already):
    it closes what it inherited but its socket and progress pipe, and starts the ZeroMQ
    context (its I/O thread) the service will connect with. Its go is a signal (`GO_SIGNAL`
    from the manager, which knows its pid), not a message: the socket is shared by every
    spare, and a message could go to another."""
    _set_name(SPARE_NAME)  # first: a process named flame-zygote that leads its session is the zygote
    os.setsid()
    _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {GO_SIGNAL})  # before any thread: blocked in theirs too
    _close_inherited(keep=(sock.fileno(), progress))
    if not _readable(sock):
        start_context()
    while True:
        data = sock.recv(MAX_REQUEST)
        if not data:  # the executor manager closed its end
            os._exit(0)
        if data[:1] == _REQUEST:
            break
    _tell(progress, b"1")
    try:
        request = msgspec.msgpack.decode(data[1:], type=Request)
    except msgspec.DecodeError:
        os._exit(1)
    if os.getppid() != request.parent:  # the manager died (CLONE_PARENT: it is our parent)
        os._exit(1)
    sock.send(str(os.getpid()).encode())
    if signal.sigtimedwait({GO_SIGNAL}, GO_TIMEOUT) is None:  # the manager gave up on us
        os._exit(1)
    _tell(progress, b"2")
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # the mask an exec'd instance starts with
    _set_name(CHILD_NAME)
    sock.close()
    os.close(progress)
    os.chdir(request.cwd)
    os.environ.clear()
    os.environ.update(request.env)
    sys.path[0] = request.cwd
    sys.argv = ["-m", *request.args]
    sys.modules.pop(request.module, None)  # preloaded: run afresh as __main__, as `-m` would
    return request


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def _close_inherited(keep: tuple[int, ...]) -> None:
    """Close every descriptor but 0-2 and `keep`."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 16)


def _tell(fd: int, what: bytes) -> None:
    with contextlib.suppress(OSError):  # the zygote is gone: nothing waits
        os.write(fd, what)


def main() -> None:
    """`python -m flamed.executor_manager.zygote FD`: serve; a child runs its module."""
    request = serve(int(sys.argv[1]))
    if request is None:
        return
    try:
        run_module(request.module)
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except Exception:
        import traceback

        traceback.print_exc()
        code = 1
    _quick_exit(code)


def run_module(module: str) -> None:
    """Run `module` as `python -m` does; a preloaded one with the code the zygote loaded (the
    same `python -m` would find: `Zygote.module_of` forks a child only if the working directory
    holds no module named like a preloaded one)."""
    import runpy

    compiled = _COMPILED.get(module)
    run_code = getattr(runpy, "_run_module_code", None)  # what run_module(alter_sys=True) runs
    if compiled is None or run_code is None:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return
    spec, code = compiled
    run_code(code, None, "__main__", spec)


def _exit_code(code: object) -> int:
    """The process exit status for `SystemExit(code)`, as the interpreter computes it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _quick_exit(code: int) -> None:
    """Exit without the interpreter's teardown (tens of milliseconds, and the executor is busy
    until the instance is gone): atexit handlers run, stdio is flushed and ZeroMQ's queued
    messages are sent (up to `_LINGER_MS`), as at a normal exit; objects are not finalized."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    zmq = sys.modules.get("zmq")
    shared = getattr(getattr(zmq, "Context", None), "_instance", None)
    if shared is not None and not shared.closed:
        shared.destroy(linger=_LINGER_MS)
    os._exit(code)


# ---------------------------------------------------------------------------- the manager's side


class Zygote:
    """The executor manager's handle on its zygote: started at the first request it could
    serve (that instance is started by plain exec), restarted with backoff when it died."""

    def __init__(self, instance_endpoint: str, *, enabled: bool = True) -> None:
        self.instance_endpoint = instance_endpoint
        self.enabled = enabled and _SYS_CLONE is not None and hasattr(os, "pidfd_open")
        self.process: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.ready = False
        self.startup = _startup_env(os.environ)
        self.preloaded = frozenset(name.split(".")[0] for name in (*PRELOAD, "zmq", "msgspec", "cloudpickle"))
        self.restart_at = 0.0
        self.backoff = RESTART_BACKOFF[0]
        #: instances forked, and starts that fell back to exec while the zygote was down
        self.forked = 0
        self.fallbacks = 0
        self.failures = 0

    def module_of(self, argv: list[str], env: dict[str, str], cwd: Path) -> str | None:
        """The module `argv` runs if a forked child would run it as plain exec does, else None."""
        if len(argv) < 3 or argv[0] != sys.executable or argv[1] != "-m" or not _MODULE.fullmatch(argv[2]):
            return None
        if _startup_env(env) != self.startup:
            return None
        try:
            names = {entry.split(".")[0] for entry in os.listdir(cwd)}
        except OSError:
            return None
        if names & self.preloaded:
            return None
        return argv[2]

    def spawn(self, argv: list[str], env: dict[str, str], cwd: Path) -> int | None:
        """The pid of a child running `argv` (the executor manager's child), or None: start it
        by plain exec (not a command for the zygote, or the zygote is not up)."""
        if not self.enabled:
            return None
        module = self.module_of(argv, env, cwd)
        if module is None:
            return None
        if not self._up():
            self.fallbacks += 1
            return None
        assert self.sock is not None
        request = Request(module=module, args=argv[3:], env=env, cwd=str(cwd), parent=os.getpid())
        try:
            self.sock.send(_REQUEST + msgspec.msgpack.encode(request))
            if not select.select([self.sock], [], [], SPAWN_TIMEOUT)[0]:
                raise TimeoutError(f"no pid within {SPAWN_TIMEOUT}s")
            reply = self.sock.recv(64)
            pid = int(reply)
            os.kill(pid, GO_SIGNAL)  # our child, not reaped: its pid is its own
        except (OSError, ValueError) as exc:
            self._failed(f"spawn failed: {exc}")
            self.fallbacks += 1
            return None
        self.forked += 1
        self.backoff = RESTART_BACKOFF[0]
        return pid

    def _up(self) -> bool:
        """Is the zygote ready for a request? Starts or restarts it when due (without waiting)."""
        if self.process is not None and self.process.poll() is not None:
            self._failed(f"exited with {self.process.returncode}")
        if self.process is None:
            if time.monotonic() >= self.restart_at:
                self._start()
            return False
        if not self.ready:
            assert self.sock is not None
            try:
                said = self.sock.recv(16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return False
            except OSError as exc:
                self._failed(str(exc))
                return False
            if said != b"ready":
                self._failed(f"said {said!r}")
                return False
            self.ready = True
        return True

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {**os.environ, "FLAME_INSTANCE_ENDPOINT": self.instance_endpoint, "FLAME_ZYGOTE": "1"}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "flamed.executor_manager.zygote", str(theirs.fileno())],
                env=env,
                stdin=subprocess.DEVNULL,
                pass_fds=[theirs.fileno()],
                start_new_session=True,  # not in the manager's group: a ^C is the manager's to handle
                preexec_fn=parent_death_signal(signal.SIGKILL),  # noqa: PLW1509 - one C call, libc preloaded
            )
        except OSError:
            ours.close()
            self._failed("cannot start")
            return
        finally:
            theirs.close()
        self.sock, self.ready = ours, False

    def _failed(self, why: str) -> None:
        """Kill the zygote; the next start is due after the backoff, doubled each time."""
        log.warning("zygote: %s; instances start by exec for %.1fs", why, self.backoff)
        self.failures += 1
        self.close()
        self.restart_at = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, RESTART_BACKOFF[1])

    def close(self) -> None:
        """Stop the zygote (it exits when its socket closes; killed to be sure)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait()
            self.process = None
        self.ready = False

    def stats(self) -> dict[str, Any]:
        return {
            "node_instances_forked_total": float(self.forked),
            "node_instances_exec_fallback_total": float(self.fallbacks),
            "node_zygote_failures_total": float(self.failures),
        }


if __name__ == "__main__":
    main()
