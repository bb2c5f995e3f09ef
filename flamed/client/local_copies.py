"""Node-local copies of cached objects: one directory that the processes of a node share.

The executor manager gives its instances a directory (`FLAME_CACHE_LOCAL_DIR`, in its runtime
directory) and a byte budget (`FLAME_CACHE_LOCAL_BYTES`). A part of an object that one process
fetched (or wrote) is kept there as `<sha256(key)>/<stamp>-<b|d><version>.part` (b: a base,
d: a delta); another process on
the node that is told by the cache that this very part (stamp, version, size) is current reads
the file instead of the network, through a copy-on-write mmap: no copy until it writes.

These are disposable copies, not state: a file is complete because it is renamed into place
after it is written, it is only used when the cache has just named it current, and a file that
is missing or of the wrong size is simply fetched again. Past the budget the least recently
used files go. Nothing here is fsynced.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mmap
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("flamed.client")


class LocalCopies:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.hits = 0
        self.stores = 0

    def _dir(self, key: str) -> Path:
        return self.root / hashlib.sha256(key.encode()).hexdigest()[:32]

    def path(self, key: str, stamp: int, version: int, base: bool) -> Path:
        return self._dir(key) / f"{stamp:x}-{'b' if base else 'd'}{version}.part"

    def open(self, key: str, stamp: int, version: int, size: int, base: bool) -> memoryview | None:
        """The part's bytes as a writable copy-on-write view, or None if there is no good copy."""
        path = self.path(key, stamp, version, base)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            if os.fstat(fd).st_size != size:
                return None
            os.utime(fd)  # most recently used
            self.hits += 1
            if size == 0:
                return memoryview(bytearray())
            return memoryview(mmap.mmap(fd, size, access=mmap.ACCESS_COPY))
        except OSError:
            return None
        finally:
            os.close(fd)

    def store(
        self, key: str, stamp: int, version: int, base: bool, pieces: Iterable[memoryview | bytes | bytearray]
    ) -> None:
        """Keep a copy of a part (best effort: a full disk only costs the next reader a fetch).
        Copies it supersedes go (another stamp; for a base, older parts), then the least
        recently used files past the budget."""
        directory = self._dir(key)
        path = self.path(key, stamp, version, base)
        tmp = directory / f".{secrets.token_hex(6)}.tmp"
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            with tmp.open("wb") as f:
                for piece in pieces:
                    f.write(piece)
            tmp.rename(path)
        except OSError as exc:
            log.debug("no local copy of %s: %s", key, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
            return
        self.stores += 1
        for other in directory.iterdir():
            if other.suffix == ".part" and other != path and _superseded(other.name, stamp, version if base else 0):
                with contextlib.suppress(OSError):
                    other.unlink()
        self._trim()

    def _trim(self) -> None:
        files = []
        total = 0
        with contextlib.suppress(OSError):
            for directory in self.root.iterdir():
                for path in directory.glob("*.part"):
                    with contextlib.suppress(OSError):
                        stat = path.stat()
                        files.append((stat.st_mtime, stat.st_size, path))
                        total += stat.st_size
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            with contextlib.suppress(OSError):
                path.unlink()
                total -= size


def _superseded(name: str, stamp: int, base_version: int) -> bool:
    """A copy of another incarnation of the key, or a part older than a new base."""
    head, _, tail = name.removesuffix(".part").partition("-")
    try:
        return int(head, 16) != stamp or int(tail[1:]) < base_version
    except ValueError:
        return False
