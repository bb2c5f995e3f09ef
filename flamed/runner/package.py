"""A Runner's package: the working directory as a `.tar.gz` (flamepy's default excludes plus the
user's), with a generated `pyproject.toml` naming `dependencies` when the directory has no
Python package metadata, stored where the executor managers can fetch it.

Storage: `file://DIR` (a directory every node sees, `FLAME_PACKAGE_STORAGE`) or, by default,
the object cache under `<app>/pkg/<id>`; the application's `url` is then the cache's endpoint
followed by the key (`tcp://host:port/<app>/pkg/<id>`; `cache:///<key>` for a cache on an
ipc:// endpoint: the one the executor manager knows), which the executor manager's installer
reads (flamed/executor_manager/install.py). The archive is built in a temporary file, never in
the user's directory.
"""

from __future__ import annotations

import fnmatch
import io
import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from flamed.client import FlameError, FlameErrorCode, delete_objects, put_object
from flamed.client.cache import cache_endpoint
from flamed.client.types import DEFAULT_PACKAGE_EXCLUDES

log = logging.getLogger("flamed.runner")


def should_exclude(name: str, patterns: list[str]) -> bool:
    base = os.path.basename(name.rstrip("/"))
    return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(base, p) for p in patterns)


def generated_pyproject(name: str, source: Path, dependencies: list[str] | None) -> str | None:
    """The pyproject.toml to add, or None when `source` has its own package metadata."""
    if (source / "pyproject.toml").exists():
        return None
    if (source / "setup.py").exists() or (source / "setup.cfg").exists():
        if dependencies:
            log.warning(
                "%s has setup.py/setup.cfg: the Runner's dependencies=%s are not added; name them there",
                source,
                dependencies,
            )
        return None
    deps = sorted(dependencies or [])
    listed = "".join(f'    "{d}",\n' for d in deps)
    block = f"dependencies = [\n{listed}]" if deps else "dependencies = []"
    return (
        '[build-system]\nrequires = ["setuptools>=61.0", "wheel"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "{name}"\nversion = "0.1.0"\nrequires-python = ">=3.9"\n{block}\n\n'
        "[tool.setuptools]\npy-modules = []\n"
    )


def build(name: str, source: Path, dependencies: list[str] | None, excludes: list[str]) -> Path:
    """Archive `source` into a temporary `<name>.tar.gz`; the caller removes it."""
    patterns = sorted({*DEFAULT_PACKAGE_EXCLUDES, *excludes, "dist"})
    pyproject = generated_pyproject(name, source, dependencies)
    out_dir = Path(tempfile.mkdtemp(prefix="flame-runner-"))
    path = out_dir / f"{name}.tar.gz"

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if should_exclude(info.name, patterns) else info

    try:
        with tarfile.open(path, "w:gz") as tar:
            for item in sorted(os.listdir(source)):
                if should_exclude(item, patterns):
                    continue
                tar.add(source / item, arcname=item, recursive=True, filter=keep)
            if pyproject is not None:
                data = pyproject.encode()
                info = tarfile.TarInfo("pyproject.toml")
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    except OSError as exc:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise FlameError(FlameErrorCode.INTERNAL, f"Failed to create package: {exc}") from None
    return path


def upload(name: str, archive: Path, storage: str | None) -> str:
    """Store the archive; returns the application's `url`."""
    if storage is not None:
        parsed = urlparse(storage)
        if parsed.scheme != "file":
            raise FlameError(FlameErrorCode.INVALID_CONFIG, f"package storage must be file://DIR, not {storage!r}")
        directory = Path(parsed.path)
        if not directory.is_dir():
            raise FlameError(FlameErrorCode.INVALID_CONFIG, f"Storage directory does not exist: {directory}")
        target = directory / archive.name
        shutil.copyfile(archive, target)
        return f"file://{target}"
    endpoint = cache_endpoint()
    ref = put_object(f"{name}/pkg", archive.read_bytes())
    if endpoint.startswith("tcp://"):
        return f"{endpoint}/{ref.key}"
    return f"cache:///{ref.key}"  # an ipc:// cache: the one the executor manager names


def remove(url: str | None) -> None:
    """Delete a stored package (a file, or its object in the cache); missing is fine."""
    if not url:
        return
    parsed = urlparse(url)
    if parsed.scheme == "file":
        Path(parsed.path).unlink(missing_ok=True)
    elif parsed.scheme in ("tcp", "cache"):
        delete_objects(parsed.path.lstrip("/"))
