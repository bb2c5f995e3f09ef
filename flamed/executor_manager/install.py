"""Application packages on a node: an application with a `url` and `installer = "python"` is
downloaded, unpacked and given its dependencies before its instances start.

Rules:
- One install per (application, installer, url, Python version): the release directory
  `<root>/<app>/<release id>/` holds `src/` (the unpacked package), `venv/` (only when the
  package has dependencies or asks for another Python), `install.log` and, last, `env.json`
  (the instance environment). A release with `env.json` is installed: later binds, and the
  executor manager after a restart, use it as it is, without network.
- The work runs in a subprocess (`python -m flamed.executor_manager.install`), never in the
  executor manager's loop: its exit is watched through a pidfd, binds of the same release wait
  for the one install. A failed install answers every bind for `FAILED_RETRY_AFTER` seconds
  with its reason (the log's last lines and the log's path), then is tried again.
- Dependencies come from the package's `pyproject.toml` (`[project] dependencies`) and
  `requirements.txt`, installed with pip into a venv that sees the executor manager's
  site-packages (after its own): what is installed there already (flamed,
  cloudpickle, numpy, ...) is not downloaded again, so a package whose dependencies are all
  present installs offline; wheels shipped in the package's `wheels/` directory are used first.
  The package itself is not built: `src/` (and `src/src/` for a src layout) go on PYTHONPATH.
- Packages: `file://PATH`, `http(s)://...`, or the object cache (`tcp://host:port/<key>`, or
  `cache:///<key>` for the cache this executor manager names: what flamed.runner stores).
  A tar (gzipped or not) or zip archive is unpacked (no member may leave the directory);
  anything else is copied into `src/` as it is.
- Executor managers of one host share `<root>` (a release is the same wherever it is
  installed); a lock file per release makes one of them install it while the others wait.
- An application's releases (`<root>/<app>/`) are removed when the session manager says it was
  unregistered (`RemoveApplication`, or its absence from the application list of a
  registration), once no instance uses them and no install of them runs: an executor manager
  holds a shared lock on a release's lock file while an instance of it runs (`hold`), the
  installer an exclusive one, and a release whose lock cannot be taken is left for the next
  time (the next instance that ends here).
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import site
import subprocess
import sys
import tarfile
import time
import tomllib
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO
from urllib.parse import urlparse

from flamed.lifeline import parent_death_signal
from flamed.pythons import find_python
from protocol.backend import ApplicationContext
from protocol.errors import FlameBaseError

log = logging.getLogger("flamed.executor_manager")

#: Seconds a failed install answers binds with its failure before it is tried again.
FAILED_RETRY_AFTER = 60.0
#: Longest an install may take (seconds) before it is killed and fails.
INSTALL_TIMEOUT = float(os.environ.get("FLAME_INSTALL_TIMEOUT", "900"))
#: Lines of the install log quoted in a failure.
LOG_TAIL_LINES = 12
INSTALLERS = ("python", "binary")


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What an instance of the application needs: its environment, or why it cannot start."""

    env: dict[str, str] = dataclasses.field(default_factory=dict)
    error: str | None = None


def python_version(app: ApplicationContext) -> str:
    """The Python an application asks for (FLAME_PYTHON_VERSION), else this interpreter's."""
    asked = (app.environments.get("FLAME_PYTHON_VERSION") or "").strip().removeprefix("python")
    return asked or f"{sys.version_info.major}.{sys.version_info.minor}"


def release_id(app: ApplicationContext) -> str:
    digest = hashlib.sha256()
    for part in (app.name, app.installer or "", app.url or "", python_version(app)):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:24]


@dataclasses.dataclass
class _Install:
    release: Path
    process: subprocess.Popen[bytes] | None = None
    pidfd: int | None = None
    started: float = 0.0
    waiting: list[Callable[[], None]] = dataclasses.field(default_factory=list)
    failed: str | None = None
    failed_at: float = 0.0


class Packages:
    """The installs of one executor manager. `prepare` answers at once (installed, failed, or
    nothing to install) or returns None and calls back, on the loop, when the install ends."""

    def __init__(  # noqa: PLR0917 - the loop's three entry points, handed in
        self,
        root: Path,
        env: Callable[[], dict[str, str]],
        add_reader: Callable[[int, Callable[[], None]], None],
        remove_reader: Callable[[int], None],
        call_later: Callable[[float, Callable[[], None]], object],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = root
        self.env = env
        self.add_reader, self.remove_reader, self.call_later = add_reader, remove_reader, call_later
        self.clock = clock
        self.installs: dict[str, _Install] = {}

    def prepare(self, app: ApplicationContext, when_done: Callable[[], None]) -> Prepared | None:
        if not app.installer:
            return Prepared()
        if app.installer.lower() not in INSTALLERS:
            return Prepared(error=f"application {app.name!r}: unknown installer {app.installer!r}")
        if not app.url:
            return Prepared()  # nothing to fetch: the command runs as registered (Flame's base env)
        release = self.root / _safe(app.name) / release_id(app)
        env_file = release / "env.json"
        if env_file.exists():
            return _installed(env_file, app)
        key = str(release)
        install = self.installs.get(key)
        if install is not None and install.failed is not None:
            if self.clock() - install.failed_at < FAILED_RETRY_AFTER:
                return Prepared(error=install.failed)
            del self.installs[key]
            install = None
        if install is None:
            install = _Install(release)
            self.installs[key] = install
            self._start(install, app)
        if install.failed is not None:
            return Prepared(error=install.failed)
        install.waiting.append(when_done)
        return None

    def _start(self, install: _Install, app: ApplicationContext) -> None:
        release = install.release
        release.mkdir(parents=True, exist_ok=True)
        log_path = release / "install.log"
        argv = [
            sys.executable,
            "-c",
            "import sys; from flamed.executor_manager.install import main; sys.exit(main())",
            "--app",
            app.name,
            "--url",
            app.url or "",
            "--installer",
            (app.installer or "").lower(),
            "--python-version",
            python_version(app),
            "--release",
            str(release),
            "--pythonpath",
            app.environments.get("PYTHONPATH", ""),
        ]
        log.info("application %s: installing %s into %s (log %s)", app.name, app.url, release, log_path)
        try:
            with open(log_path, "ab") as out:
                process = subprocess.Popen(
                    argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, **self.env()},
                    start_new_session=True,
                    preexec_fn=parent_death_signal(signal.SIGKILL),  # noqa: PLW1509 - dies with the executor manager
                )
        except OSError as exc:
            self._failed(install, f"cannot start the installer: {exc}")
            return
        install.process, install.started = process, self.clock()
        try:
            install.pidfd = os.pidfd_open(process.pid)
        except (AttributeError, OSError):
            install.pidfd = None
        if install.pidfd is not None:
            self.add_reader(install.pidfd, lambda: self._exited(install))
        self._watch(install)

    def _watch(self, install: _Install) -> None:
        """Every second: a timeout, and (without pidfds) the exit."""

        def check() -> None:
            process = install.process
            if process is None or install.failed is not None:
                return
            if process.poll() is not None:
                self._exited(install)
            elif self.clock() - install.started > INSTALL_TIMEOUT:
                process.kill()
                process.wait()
                self._finish(install, f"timed out after {INSTALL_TIMEOUT:.0f}s")
            else:
                self.call_later(1.0, check)

        self.call_later(1.0, check)

    def _exited(self, install: _Install) -> None:
        process = install.process
        if process is None or process.poll() is None:
            return
        code = process.returncode
        self._finish(install, None if code == 0 else f"exited with code {code}")

    def _finish(self, install: _Install, problem: str | None) -> None:
        if install.pidfd is not None:
            self.remove_reader(install.pidfd)
            os.close(install.pidfd)
            install.pidfd = None
        install.process = None
        if problem is None and (install.release / "env.json").exists():
            log.info("installed %s", install.release)
            self.installs.pop(str(install.release), None)
        else:
            tail = _tail(install.release / "install.log")
            self._failed(
                install, f"{problem or 'wrote no environment'}: {tail} (log: {install.release / 'install.log'})"
            )
        waiting, install.waiting = install.waiting, []
        for callback in waiting:
            callback()

    def _failed(self, install: _Install, reason: str) -> None:
        install.failed = f"installing the application's package failed: {reason}"
        install.failed_at = self.clock()
        log.warning("%s: %s", install.release, install.failed)

    def hold(self, app: ApplicationContext) -> IO[str] | None:
        """A shared lock on the application's release while an instance of it runs (close the
        file to let go): no executor manager of the host removes a release held so. None when
        the application has no release."""
        if not app.installer or not app.url:
            return None
        release = self.root / _safe(app.name) / release_id(app)
        try:
            lock = open(release.parent / f"{release.name}.lock", "a")  # noqa: SIM115 - held until the instance is gone
        except OSError:
            return None
        fcntl.flock(lock, fcntl.LOCK_SH)  # waits only for a removal in progress
        return lock

    def installed_applications(self) -> set[str]:
        """The directory names under `<root>` (one per application with releases)."""
        try:
            return {p.name for p in self.root.iterdir() if p.is_dir()}
        except OSError:
            return set()

    def remove(self, name: str) -> bool:
        """Remove the releases of application `name` (the caller knows no instance uses them).
        False when something could not go yet (an install of it runs, here or in another
        executor manager): try again later."""
        app_dir = self.root / _safe(name)
        if any(i.release.parent == app_dir and i.process is not None for i in self.installs.values()):
            return False
        for key in [k for k, i in self.installs.items() if i.release.parent == app_dir]:
            del self.installs[key]  # failures remembered for it: a new registration starts afresh
        if not app_dir.is_dir():
            return True
        done = True
        for release in [p for p in app_dir.iterdir() if p.is_dir()]:
            lock_path = app_dir / f"{release.name}.lock"
            with open(lock_path, "a") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    done = False  # an instance runs it, or an executor manager installs it now
                    continue
                shutil.rmtree(release, ignore_errors=True)
        if done:
            shutil.rmtree(app_dir, ignore_errors=True)
            log.info("application %s: installed packages removed (%s)", name, app_dir)
        return done

    def close(self) -> None:
        """Stop installs in progress (the executor manager is stopping)."""
        for install in self.installs.values():
            if install.process is not None and install.process.poll() is None:
                install.process.kill()
                install.process.wait()


def _safe(name: str) -> str:
    return name.replace("/", "_").replace("..", "_") or "_"


def _installed(env_file: Path, app: ApplicationContext) -> Prepared:
    try:
        env = json.loads(env_file.read_text())
    except (OSError, ValueError) as exc:
        return Prepared(error=f"installed package of {app.name!r} is unreadable ({env_file}: {exc})")
    return Prepared(env={str(k): str(v) for k, v in env.items()})


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(line.strip() for line in lines[-LOG_TAIL_LINES:] if line.strip()) or "(empty log)"


# ---------------------------------------------------------------------- the installer process


class InstallError(FlameBaseError):
    """The installer process cannot install a package (the message says why)."""


def download(url: str, dest_dir: Path) -> Path:
    parsed = urlparse(url)
    name = os.path.basename(parsed.path.rstrip("/")) or "package"
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / name
    if parsed.scheme == "file":
        source = Path(parsed.path)
        if not source.exists():
            raise InstallError(f"package {url} does not exist")
        shutil.copyfile(source, target)
    elif parsed.scheme in ("http", "https"):
        with urllib.request.urlopen(url, timeout=300) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out)
    elif parsed.scheme in ("tcp", "cache"):
        from flamed.client.cache import ObjectRef, get_object  # only the installer process needs the SDK

        # cache:///<key>: the cache the executor manager names (FLAME_CACHE_ENDPOINT)
        endpoint = f"tcp://{parsed.netloc}" if parsed.scheme == "tcp" else ""
        data = get_object(ObjectRef(endpoint=endpoint, key=parsed.path.lstrip("/"), version=0))
        if not isinstance(data, bytes | bytearray):
            raise InstallError(f"object {url} is a {type(data).__name__}, not a package")
        target.write_bytes(data)
    else:
        raise InstallError(f"unsupported package url {url!r} (file://, http(s):// or the object cache's tcp://)")
    print(f"downloaded {url} ({target.stat().st_size} bytes)", flush=True)
    return target


def unpack(archive: Path, src: Path) -> None:
    src.mkdir(parents=True, exist_ok=True)
    if tarfile.is_tarfile(archive):  # by content: a package in the object cache has no file name
        with tarfile.open(archive) as tar:
            tar.extractall(src, filter="data")  # refuses members that leave `src`, links out, devices
    elif zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                if not (src / member).resolve().is_relative_to(src.resolve()):
                    raise InstallError(f"{archive.name}: member {member!r} leaves the package directory")
            zf.extractall(src)
    else:
        shutil.copy2(archive, src / archive.name)
    print(f"unpacked into {src}", flush=True)


def dependencies(src: Path) -> list[str]:
    deps: list[str] = []
    pyproject = src / "pyproject.toml"
    if pyproject.exists():
        try:
            project = tomllib.loads(pyproject.read_text()).get("project", {})
        except tomllib.TOMLDecodeError as exc:
            raise InstallError(f"pyproject.toml: {exc}") from None
        deps += [str(d) for d in project.get("dependencies", [])]
    requirements = src / "requirements.txt"
    if requirements.exists():
        for raw in requirements.read_text().splitlines():
            line = raw.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                deps.append(line)
    return deps


def interpreter(version: str) -> str:
    found = find_python(version)
    if found is None:
        raise InstallError(f"Python {version} is not installed on this node")
    return found


def install_python(release: Path, src: Path, version: str, pythonpath: str) -> dict[str, str]:
    base = interpreter(version)
    deps = dependencies(src)
    python = base
    if deps or base != sys.executable:
        venv = release / "venv"
        subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        if base == sys.executable:
            _see_site_packages(venv)
        probe = subprocess.run([python, "-c", "import flamed.service"], capture_output=True, check=False)
        if probe.returncode != 0:
            raise InstallError(
                f"Python {version} ({base}) cannot run flamed: install flamed for it on this node, "
                "or leave python_version unset"
            )
    if deps:
        argv = [sys.executable, "-m", "pip", "--python", python, "install", "--disable-pip-version-check"]
        wheels = src / "wheels"
        if wheels.is_dir():
            argv += ["--find-links", str(wheels)]
        print("installing dependencies:", " ".join(deps), flush=True)
        done = subprocess.run([*argv, *deps], check=False)
        if done.returncode != 0:
            raise InstallError(f"pip could not install {', '.join(deps)} (pip exited with {done.returncode})")
    paths = [str(src)]
    if (src / "src").is_dir():
        paths.append(str(src / "src"))
    # the application's PYTHONPATH, then the executor manager's (instances inherit its env)
    paths += [p for p in (pythonpath, os.environ.get("PYTHONPATH", "")) if p]
    return {
        "FLAME_PYTHON": python,
        "FLAME_PYTHON_VERSION": version,
        "FLAME_APP_DIR": str(src),
        "PYTHONPATH": os.pathsep.join(paths),
    }


def _see_site_packages(venv: Path) -> None:
    """Let the venv see this interpreter's site-packages after its own (with their .pth files:
    editable installs), so what is installed here already is neither downloaded nor copied.
    (`venv --system-site-packages` would show the base interpreter's, not a venv's.)"""
    purelib = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dirs = [d for d in site.getsitepackages() if os.path.isdir(d)]
    lines = "".join(f"import site; site.addsitedir({d!r})\n" for d in dirs)
    Path(purelib, "_flame_node_site.pth").write_text(lines)


def install_binary(src: Path) -> dict[str, str]:
    path = [str(src / "bin"), str(src), os.environ.get("PATH", "")]
    env = {"FLAME_APP_DIR": str(src), "PATH": os.pathsep.join(p for p in path if p)}
    libs = [str(d) for d in (src / "libs", src / "lib") if d.is_dir()]
    if libs:
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, os.environ.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flamed.executor_manager.install")
    parser.add_argument("--app", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--installer", required=True, choices=INSTALLERS)
    parser.add_argument("--python-version", required=True)
    parser.add_argument("--release", required=True, type=Path)
    parser.add_argument("--pythonpath", default="")
    args = parser.parse_args(argv)
    release: Path = args.release
    src = release / "src"
    # Executor managers of one host share the releases: one installs, the others wait for it.
    with open(release.parent / f"{release.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (release / "env.json").exists():
            print(f"installed {args.app} (by another executor manager)", flush=True)
            return 0
        for leftover in ("download", "src", "venv"):  # a half-done install of an earlier run
            shutil.rmtree(release / leftover, ignore_errors=True)
        return _install(args, release, src)


def _install(args: argparse.Namespace, release: Path, src: Path) -> int:
    try:
        archive = download(args.url, release / "download")
        unpack(archive, src)
        if args.installer == "python":
            env = install_python(release, src, args.python_version, args.pythonpath)
        else:
            env = install_binary(src)
    except (InstallError, OSError, subprocess.CalledProcessError, tarfile.TarError, zipfile.BadZipFile) as exc:
        print(f"install of {args.app} failed: {exc}", flush=True)
        return 1
    except Exception as exc:  # e.g. the object cache: say it in the log, one line
        print(f"install of {args.app} failed: {type(exc).__name__}: {exc}", flush=True)
        return 1
    tmp = release / "env.json.tmp"
    tmp.write_text(json.dumps(env, indent=1))
    os.replace(tmp, release / "env.json")
    print(f"installed {args.app}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
