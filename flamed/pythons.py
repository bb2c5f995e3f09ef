"""Find a Python interpreter of a given version on this host (for flmexec's `runtime` and an
application's `FLAME_PYTHON_VERSION`): this interpreter when the version is its own, else
`python<version>` on PATH, in pyenv's versions or the usual prefixes, whichever actually runs
(a pyenv shim for a version that is not selected is on PATH but fails)."""

from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
import sys

#: Seconds a candidate interpreter gets to prove it runs.
PROBE_TIMEOUT = 10.0


def normalize(version: str | None) -> str:
    """ "python3.12", " 3.12 " -> "3.12"; None or "" -> this interpreter's major.minor."""
    text = (version or "").strip().removeprefix("python")
    return text or f"{sys.version_info.major}.{sys.version_info.minor}"


def is_current(version: str | None) -> bool:
    return normalize(version) in (f"{sys.version_info.major}.{sys.version_info.minor}", str(sys.version_info.major))


@functools.cache
def find_python(version: str | None) -> str | None:
    """The path of a working interpreter of `version`, or None."""
    if is_current(version):
        return sys.executable
    wanted = normalize(version)
    name = f"python{wanted}"
    pyenv = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates = [shutil.which(name)]
    candidates += sorted(glob.glob(os.path.join(pyenv, "versions", f"{wanted}*", "bin", name)), reverse=True)
    candidates += [os.path.join(prefix, name) for prefix in ("/usr/local/bin", "/usr/bin")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and _runs(candidate):
            return candidate
    return None


def _runs(path: str) -> bool:
    try:
        done = subprocess.run([path, "-c", "pass"], capture_output=True, timeout=PROBE_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
