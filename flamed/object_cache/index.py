"""The object cache's index: which objects exist, at which version, in which parts, and which
ones to evict. Pure: no files, no sockets, no clock (DESIGN 2); the daemon does the I/O.

A write goes through three steps, the daemon doing the file work between them:

    admit(key, kind, size)       may this write happen? Reserves `size` bytes, evicting the
                                 least recently used objects if the cap needs it; returns the
                                 keys evicted (their files must go). Raises `CacheError`.
    next_version(key, kind)      the version and stamp the part is written with
    stored(part) / release(size) the part is durable: it becomes the object's newest part and
                                 the parts it supersedes are returned (to delete); or the write
                                 failed and its reservation is given back

Rules: versions of an object only grow (the first write is 1; every put, update and patch adds
one); a put or update replaces the base and clears the deltas; a patch appends a delta and
needs the object to exist; at most `max_deltas` deltas; no part larger than `max_object_size`;
the bytes stored plus those reserved by writes in progress never exceed `max_bytes`. Every get
and write makes an object the most recently used.
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from flamed.storage.objects import BASE, DELTA, StoredPart
from protocol.cache import WriteKind, matches
from protocol.errors import ErrorCode, FlameBaseError


class CacheError(FlameBaseError):
    """A request the cache refuses; `code` and `message` go back to the client."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Entry:
    key: str
    stamp: int
    base: StoredPart
    deltas: list[StoredPart] = field(default_factory=list)

    @property
    def version(self) -> int:
        return self.deltas[-1].version if self.deltas else self.base.version

    @property
    def size(self) -> int:
        return self.base.size + sum(d.size for d in self.deltas)

    def parts(self) -> list[StoredPart]:
        return [self.base, *self.deltas]

    def part(self, version: int) -> StoredPart | None:
        for part in self.parts():
            if part.version == version:
                return part
        return None


def session_prefix(key: str) -> str:
    """`<application>/<session>` of a key."""
    return key.rsplit("/", 1)[0]


class Index:
    def __init__(
        self, max_bytes: int, max_object_size: int, max_deltas: int, new_stamp: Callable[[], int] | None = None
    ) -> None:
        self.max_bytes = max_bytes
        self.max_object_size = max_object_size
        self.max_deltas = max_deltas
        self.new_stamp = new_stamp or (lambda: secrets.randbits(63) or 1)
        #: least recently used first
        self.entries: collections.OrderedDict[str, Entry] = collections.OrderedDict()
        self.bytes = 0
        self.reserved = 0
        #: session prefixes (`app/session`) the session manager has said exist
        self.live: set[str] = set()
        self.counters: collections.Counter[str] = collections.Counter()

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, parts: Iterable[StoredPart]) -> None:
        """Rebuild from the parts found at start (`ObjectFiles.scan`): least recently written
        objects first in the eviction order."""
        by_key: dict[str, list[StoredPart]] = {}
        for part in parts:
            by_key.setdefault(part.key, []).append(part)
        loaded = []
        for key, found in by_key.items():
            found.sort(key=lambda p: (p.kind != BASE, p.version))
            base, deltas = found[0], found[1:]
            loaded.append((max(p.mtime for p in found), Entry(key, base.stamp, base, deltas)))
        for _, entry in sorted(loaded, key=lambda item: item[0]):
            self.entries[entry.key] = entry
            self.bytes += entry.size

    # ------------------------------------------------------------------ reads

    def get(self, key: str) -> Entry | None:
        """The object, made the most recently used."""
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def peek(self, key: str) -> Entry | None:
        return self.entries.get(key)

    def sessions(self) -> set[str]:
        """Every `app/session` that holds an object."""
        return {session_prefix(key) for key in self.entries}

    # ------------------------------------------------------------------ writes

    def admit(self, key: str, kind: WriteKind, size: int) -> list[str]:
        """Check a write of `size` bytes and reserve room for it; returns the keys evicted to
        make that room (most stale first). Raises CacheError."""
        if size > self.max_object_size:
            raise CacheError(
                ErrorCode.TooLarge,
                f"object of {size:,} bytes is larger than the cache's limit of {self.max_object_size:,} bytes "
                "(cache.max_object_size)",
            )
        if size > self.max_bytes:
            raise CacheError(
                ErrorCode.TooLarge,
                f"object of {size:,} bytes is larger than the whole cache ({self.max_bytes:,} bytes, cache.max_bytes)",
            )
        entry = self.entries.get(key)
        if kind is WriteKind.Patch:
            self._check_patch(key, entry)
        evicted: list[str] = []
        while self.bytes + self.reserved + size > self.max_bytes:
            victim = next((k for k in self.entries if k != key), None)
            if victim is None:
                raise CacheError(
                    ErrorCode.LimitExceeded,
                    f"no room for {size:,} bytes: writes in progress hold {self.reserved:,} of the cache's "
                    f"{self.max_bytes:,} bytes (cache.max_bytes); try again when they are done",
                )
            self.remove(victim)
            self.counters["evictions"] += 1
            evicted.append(victim)
        self.reserved += size
        return evicted

    def _check_patch(self, key: str, entry: Entry | None) -> None:
        if entry is None:
            raise CacheError(ErrorCode.NotFound, f"object {key!r} not found; put it before patching it")
        if len(entry.deltas) >= self.max_deltas:
            raise CacheError(
                ErrorCode.LimitExceeded,
                f"object {key!r} has {len(entry.deltas)} deltas, the most it may hold (cache.max_deltas); "
                "update_object it to fold them into a new base",
            )

    def release(self, size: int) -> None:
        """A write admitted with `size` bytes ended (stored or failed)."""
        self.reserved -= size

    def next_version(self, key: str, kind: WriteKind) -> tuple[int, int]:
        """(version, stamp) for the part a write of `kind` to `key` commits now; raises
        CacheError if a patch's object went away (deleted or evicted) meanwhile."""
        entry = self.entries.get(key)
        if kind is WriteKind.Patch:
            self._check_patch(key, entry)
        if entry is None:
            return 1, self.new_stamp()
        return entry.version + 1, entry.stamp

    def stored(self, part: StoredPart) -> list[StoredPart]:
        """Record a durable part; returns the parts it supersedes (their files must go)."""
        entry = self.entries.get(part.key)
        superseded: list[StoredPart] = []
        if part.kind == DELTA:
            assert entry is not None and part.version == entry.version + 1, "patch committed out of order"
            entry.deltas.append(part)
            self.counters["patches"] += 1
        elif entry is None:
            self.entries[part.key] = Entry(part.key, part.stamp, part)
            self.counters["puts"] += 1
        else:
            superseded = entry.parts()
            self.bytes -= entry.size
            self.entries[part.key] = Entry(part.key, part.stamp, part)
            self.counters["updates"] += 1
        self.bytes += part.size
        self.entries.move_to_end(part.key)
        return superseded

    def remove(self, key: str) -> Entry | None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry.size
        return entry

    def matching(self, prefix: str) -> list[str]:
        """Keys named by a checked prefix (`app/*`, `app/session` or a key)."""
        return [key for key in self.entries if matches(prefix, key)]
