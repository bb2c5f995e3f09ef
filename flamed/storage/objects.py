"""The object cache's files: one file per base or delta, written atomically, found again at start.

Layout of the state directory (mode 0700, one `flamed object-cache` per directory: `LOCK`):

    objects/<h[:2]>/<h>-base-<version>.obj     h = sha256(key) in hex (32 chars)
    objects/<h[:2]>/<h>-delta-<version>.obj
    live/<sha256(prefix) in hex>               a session prefix seen alive (holds the prefix)

A part file is

    b"FLMOBJ1\\n" | u32 key length | key (UTF-8) | payload
    | u8 kind (0 base, 1 delta) | u64 version | u64 stamp | u64 payload size | u32 crc32 | b"FLMEND1\\n"

Rules: a part is written to `<bucket>/<random>.tmp` chunk by chunk (never held whole in
memory), then the trailer is appended, the file fsynced, renamed to its final name and the
bucket directory fsynced (and `objects/` when the bucket is new): a part file that exists is
complete, and a write is acknowledged only after that. Parts sit flat in 256 buckets, not in a
directory per key, so a new object costs two fsyncs, not four. At
start (`scan`) leftover `.tmp` files are removed; a part whose structure is wrong (short, bad
magic or trailer, a size that does not match, a key of another directory) is a torn or damaged
file: it is renamed to `*.broken` (kept for inspection, never read again) and the rest of the
object stands. A base replaced by a newer one and deltas older than the base are leftovers of an
update interrupted between its two steps (the new base is durable before the old parts go):
they are removed. The payload's CRC is checked by the reader, end to end.

Errors are `OSError` from the primitives, wrapped into `StorageError` naming the file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from flamed.storage.durable import FILE_MODE, TMP_SUFFIX, fsync_dir, unused_name, write_fully
from flamed.storage.errors import StorageError
from flamed.storage.lock import StateLock

log = logging.getLogger("flamed.storage")

PART_MAGIC = b"FLMOBJ1\n"
END_MAGIC = b"FLMEND1\n"
_HEAD = struct.Struct("<8sI")
_TAIL = struct.Struct("<BQQQI8s")
BASE, DELTA = 0, 1
_NAME = re.compile(r"^([0-9a-f]{32})-(base|delta)-(\d{20})\.obj$")
_KINDS = {"base": BASE, "delta": DELTA}


def key_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class StoredPart:
    """One part file as found on disk (or just written)."""

    key: str
    kind: int
    version: int
    stamp: int
    size: int
    crc: int
    path: Path
    #: offset of the payload in the file
    offset: int
    mtime: float = 0.0


@dataclass
class ScanResult:
    parts: list[StoredPart]
    live: set[str]
    broken: list[Path]
    removed: int


class PartWriter:
    """A part being written: `append` chunks, then `commit` (durable) or `abort`."""

    def __init__(self, directory: Path, key: str) -> None:
        self.directory = directory
        self.key = key
        self.prefix = key_hash(key)
        self.tmp = directory / f"{secrets.token_hex(8)}{TMP_SUFFIX}"
        self.size = 0
        self.crc = 0
        encoded = key.encode()
        self.offset = _HEAD.size + len(encoded)
        #: the bucket is new: its creation must be made durable too
        self.new_dir = not directory.exists()
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.fd: int | None = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            write_fully(self.fd, _HEAD.pack(PART_MAGIC, len(encoded)) + encoded)
        except OSError as exc:
            self.abort()
            raise StorageError(f"cannot start writing {self.tmp}: {exc.strerror}") from exc

    def append(self, data: bytes) -> None:
        assert self.fd is not None, "append after commit or abort"
        try:
            write_fully(self.fd, data)
        except OSError as exc:
            self.abort()
            raise StorageError(f"cannot write {self.tmp}: {exc.strerror}") from exc
        self.size += len(data)
        self.crc = zlib.crc32(data, self.crc)

    def commit(self, kind: int, version: int, stamp: int) -> StoredPart:
        """Trailer, fsync, rename to the final name, fsync the directory (and its parents when
        they were made for this part). After this returns the part survives a crash."""
        assert self.fd is not None, "commit after commit or abort"
        name = f"{self.prefix}-{'base' if kind == BASE else 'delta'}-{version:020d}.obj"
        path = self.directory / name
        try:
            write_fully(self.fd, _TAIL.pack(kind, version, stamp, self.size, self.crc, END_MAGIC))
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = None
            os.rename(self.tmp, path)
            fsync_dir(self.directory)
            if self.new_dir:
                fsync_dir(self.directory.parent)
        except OSError as exc:
            self.abort()
            raise StorageError(f"cannot store {path}: {exc.strerror}") from exc
        return StoredPart(self.key, kind, version, stamp, self.size, self.crc, path, self.offset)

    def abort(self) -> None:
        if getattr(self, "fd", None) is not None:
            assert self.fd is not None
            os.close(self.fd)
            self.fd = None
        self.tmp.unlink(missing_ok=True)


class ObjectFiles:
    """The object cache's state directory. `open` takes the lock; `close` releases it."""

    def __init__(self, state_dir: Path, lock: StateLock) -> None:
        self.state_dir = state_dir
        self.objects = state_dir / "objects"
        self.live_dir = state_dir / "live"
        self._lock = lock

    @classmethod
    def open(cls, state_dir: Path) -> ObjectFiles:
        """Create the directory (0700) if needed and lock it; raises StorageError / LockedError."""
        try:
            if not state_dir.exists():
                state_dir.mkdir(mode=0o700, parents=True)
                state_dir.chmod(0o700)
            lock = StateLock.acquire(state_dir)
        except OSError as exc:
            raise StorageError(f"cannot create state directory {state_dir}: {exc.strerror}") from exc
        files = cls(state_dir, lock)
        try:
            for directory in (files.objects, files.live_dir):
                directory.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            lock.release()
            raise StorageError(f"cannot create {directory}: {exc.strerror}") from exc
        return files

    def close(self) -> None:
        self._lock.release()

    def bucket(self, key: str) -> Path:
        return self.objects / key_hash(key)[:2]

    def part_paths(self, key: str) -> list[Path]:
        """The files of `key` now on disk (for tests and tools)."""
        return sorted(self.bucket(key).glob(f"{key_hash(key)}-*.obj"))

    # ------------------------------------------------------------------ writes

    def writer(self, key: str) -> PartWriter:
        return PartWriter(self.bucket(key), key)

    def remove_part(self, part: StoredPart) -> None:
        """Remove a superseded part (no fsync: if it comes back after a crash, `scan` drops it)."""
        try:
            part.path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot remove {part.path}: {exc.strerror}") from exc

    def remove_key(self, key: str) -> None:
        """Remove every part of `key`, durably."""
        bucket = self.bucket(key)
        try:
            paths = self.part_paths(key)
            for path in paths:
                path.unlink(missing_ok=True)
            if paths:
                fsync_dir(bucket)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(f"cannot remove the files of {key!r} in {bucket}: {exc.strerror}") from exc

    def mark_live(self, prefix: str) -> None:
        path = self.live_dir / key_hash(prefix)
        try:
            path.write_text(prefix)
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc.strerror}") from exc

    def unmark_live(self, prefix: str) -> None:
        try:
            (self.live_dir / key_hash(prefix)).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot remove a marker in {self.live_dir}: {exc.strerror}") from exc

    # ------------------------------------------------------------------ reads

    @staticmethod
    def read(part: StoredPart, offset: int, length: int) -> bytes:
        """`length` bytes of the payload at `offset` (fewer at the end); raises StorageError."""
        length = max(0, min(length, part.size - offset))
        try:
            fd = os.open(part.path, os.O_RDONLY)
        except OSError as exc:
            raise StorageError(f"cannot open {part.path}: {exc.strerror}") from exc
        try:
            data = os.pread(fd, length, part.offset + offset)
        except OSError as exc:
            raise StorageError(f"cannot read {part.path}: {exc.strerror}") from exc
        finally:
            os.close(fd)
        if len(data) != length:
            raise StorageError(f"{part.path} is shorter than its trailer says (read {len(data)} of {length} bytes)")
        return data

    # ------------------------------------------------------------------ start-up

    def scan(self) -> ScanResult:
        """Every good part, the live markers, the files set aside as broken."""
        result = ScanResult(parts=[], live=set(), broken=[], removed=0)
        try:
            for marker in self.live_dir.iterdir():
                result.live.add(marker.read_text())
            for bucket in sorted(self.objects.iterdir()):
                by_key: dict[str, list[Path]] = {}
                for path in sorted(bucket.iterdir()):
                    if path.name.endswith(TMP_SUFFIX):
                        path.unlink()
                        result.removed += 1
                    elif (match := _NAME.match(path.name)) is not None:
                        by_key.setdefault(match.group(1), []).append(path)
                    # else: *.broken and anything else an operator left
                for digest, paths in by_key.items():
                    self._scan_key(digest, paths, result)
        except OSError as exc:
            raise StorageError(f"cannot read the object files in {self.state_dir}: {exc}") from exc
        return result

    def _scan_key(self, digest: str, paths: list[Path], result: ScanResult) -> None:
        found: list[StoredPart] = []
        for path in paths:
            match = _NAME.match(path.name)
            assert match is not None
            part, problem = _read_part(path, _KINDS[match.group(2)], int(match.group(3)))
            if part is not None and key_hash(part.key) != digest:
                problem = f"it holds key {part.key!r}, whose files are named otherwise"
                part = None
            if part is None:
                broken = unused_name(path, ".broken")
                path.rename(broken)
                result.broken.append(broken)
                log.error("object file %s is torn or damaged (%s); set aside as %s", path, problem, broken.name)
                continue
            found.append(part)
        bases = sorted((p for p in found if p.kind == BASE), key=lambda p: p.version)
        if not bases:
            for part in found:  # deltas without a base cannot be read: the object is gone
                log.error("object file %s has no base; removing it", part.path)
                part.path.unlink()
                result.removed += 1
            return
        base = bases[-1]
        for part in found:
            stale = part.version < base.version or part.stamp != base.stamp
            if part is not base and (part.kind == BASE or stale):
                part.path.unlink()  # left by an update interrupted between its two steps
                result.removed += 1
            else:
                result.parts.append(part)


def _read_part(path: Path, kind: int, version: int) -> tuple[StoredPart | None, str]:
    """The part in `path`, or None and what is wrong with it."""
    try:
        with path.open("rb") as f:
            stat = os.fstat(f.fileno())
            head = f.read(_HEAD.size)
            if len(head) < _HEAD.size:
                return None, f"file is {stat.st_size} bytes, shorter than a header"
            magic, key_length = _HEAD.unpack(head)
            if magic != PART_MAGIC:
                return None, f"bad magic {magic!r}"
            key_bytes = f.read(key_length)
            offset = _HEAD.size + key_length
            if len(key_bytes) != key_length or stat.st_size < offset + _TAIL.size:
                return None, f"file is {stat.st_size} bytes, too short for its header and trailer"
            f.seek(stat.st_size - _TAIL.size)
            t_kind, t_version, stamp, size, crc, end = _TAIL.unpack(f.read(_TAIL.size))
    except OSError as exc:
        return None, f"cannot read it: {exc.strerror}"
    if end != END_MAGIC:
        return None, "no trailer (the write was cut short)"
    if offset + size + _TAIL.size != stat.st_size:
        return None, f"trailer says {size} payload bytes but the file holds {stat.st_size - offset - _TAIL.size}"
    if (t_kind, t_version) != (kind, version):
        return None, f"trailer says kind {t_kind} version {t_version}, the name says kind {kind} version {version}"
    try:
        key = key_bytes.decode()
    except UnicodeDecodeError:
        return None, "the key is not UTF-8"
    return StoredPart(key, kind, version, stamp, size, crc, path, offset, stat.st_mtime), ""
