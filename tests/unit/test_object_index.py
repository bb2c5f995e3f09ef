"""The object cache's index, alone (no files, no sockets): versions, deltas, the size cap and the
order of eviction. Each rule in flamed/object_cache/index.py has its case here."""

from __future__ import annotations

from pathlib import Path

import pytest

from flamed.object_cache.index import CacheError, Index
from flamed.storage.objects import BASE, DELTA, StoredPart
from protocol.cache import WriteKind
from protocol.errors import ErrorCode

pytestmark = pytest.mark.timeout(10)


def write(index: Index, key: str, kind: WriteKind, size: int) -> tuple[StoredPart, list[str]]:
    """What the daemon does around the index: admit, take a version, store."""
    evicted = index.admit(key, kind, size)
    version, stamp = index.next_version(key, kind)
    part = StoredPart(key, DELTA if kind is WriteKind.Patch else BASE, version, stamp, size, 0, Path("/x"), 0)
    index.release(size)
    index.stored(part)
    return part, evicted


def test_versions_grow_with_every_write_and_a_put_clears_the_deltas() -> None:
    """Would break if an update restarted at 1 (readers would take the new object for their
    copy) or left old deltas behind."""
    index = Index(max_bytes=1000, max_object_size=100, max_deltas=10)
    first, _ = write(index, "a/s/o", WriteKind.Put, 10)
    assert first.version == 1
    write(index, "a/s/o", WriteKind.Patch, 1)
    write(index, "a/s/o", WriteKind.Patch, 1)
    entry = index.peek("a/s/o")
    assert entry is not None
    assert entry.version == 3
    assert len(entry.deltas) == 2
    assert entry.size == 12
    update, _ = write(index, "a/s/o", WriteKind.Update, 20)
    entry = index.peek("a/s/o")
    assert entry is not None
    assert update.version == 4
    assert entry.deltas == []
    assert index.bytes == 20
    assert update.stamp == first.stamp  # the same object, a newer version


def test_a_patch_needs_the_object_and_stops_at_the_delta_limit() -> None:
    """Breaks if a patch of a missing object is accepted, or patches go past cache.max_deltas (an update must
    fold them so patching works again)."""
    index = Index(max_bytes=1000, max_object_size=100, max_deltas=2)
    with pytest.raises(CacheError) as missing:
        index.admit("a/s/none", WriteKind.Patch, 1)
    assert missing.value.code is ErrorCode.NotFound
    assert "put it before patching" in missing.value.message
    write(index, "a/s/o", WriteKind.Put, 1)
    write(index, "a/s/o", WriteKind.Patch, 1)
    write(index, "a/s/o", WriteKind.Patch, 1)
    with pytest.raises(CacheError) as full:
        index.admit("a/s/o", WriteKind.Patch, 1)
    assert full.value.code is ErrorCode.LimitExceeded
    assert "cache.max_deltas" in full.value.message
    write(index, "a/s/o", WriteKind.Update, 1)  # an update folds them: patches work again
    write(index, "a/s/o", WriteKind.Patch, 1)


def test_the_least_recently_used_objects_are_evicted_to_stay_under_the_cap() -> None:
    """Would break if eviction ignored reads (a hot object would go first) or let the cache grow
    past max_bytes."""
    index = Index(max_bytes=100, max_object_size=100, max_deltas=10)
    for name in "abcd":
        write(index, f"a/s/{name}", WriteKind.Put, 25)
    assert index.get("a/s/a") is not None  # read: now the most recently used
    _, evicted = write(index, "a/s/e", WriteKind.Put, 40)
    assert evicted == ["a/s/b", "a/s/c"]
    assert sorted(index.entries) == ["a/s/a", "a/s/d", "a/s/e"]
    assert index.bytes == 90 <= index.max_bytes
    assert index.counters["evictions"] == 2


def test_writes_in_progress_hold_their_room() -> None:
    """Two uploads admitted together must not overfill the cache when both complete."""
    index = Index(max_bytes=100, max_object_size=100, max_deltas=10)
    index.admit("a/s/x", WriteKind.Put, 60)
    with pytest.raises(CacheError) as caught:
        index.admit("a/s/y", WriteKind.Put, 60)
    assert caught.value.code is ErrorCode.LimitExceeded
    assert "in progress" in caught.value.message
    index.release(60)
    index.admit("a/s/y", WriteKind.Put, 60)


def test_objects_larger_than_the_limits_are_refused_with_the_key_to_change() -> None:
    """Breaks if an object over cache.max_object_size or cache.max_bytes is accepted, or refused without naming
    the key to change."""
    index = Index(max_bytes=1000, max_object_size=100, max_deltas=10)
    with pytest.raises(CacheError) as caught:
        index.admit("a/s/big", WriteKind.Put, 101)
    assert caught.value.code is ErrorCode.TooLarge
    assert "cache.max_object_size" in caught.value.message
    small = Index(max_bytes=50, max_object_size=100, max_deltas=10)
    with pytest.raises(CacheError) as whole:
        small.admit("a/s/big", WriteKind.Put, 60)
    assert whole.value.code is ErrorCode.TooLarge
    assert "cache.max_bytes" in whole.value.message


def test_a_patch_whose_object_was_evicted_meanwhile_is_refused_at_commit() -> None:
    """An upload of a delta outlived its object: committing it would make a delta without a base."""
    index = Index(max_bytes=1000, max_object_size=100, max_deltas=10)
    write(index, "a/s/o", WriteKind.Put, 1)
    index.admit("a/s/o", WriteKind.Patch, 1)
    index.remove("a/s/o")
    with pytest.raises(CacheError):
        index.next_version("a/s/o", WriteKind.Patch)


def test_loading_keeps_the_newest_writes_last_to_evict_and_prefixes_match() -> None:
    """Breaks if loading parts from disk loses the eviction order (oldest write first), an object's latest
    version or size, or prefix matching."""
    index = Index(max_bytes=1000, max_object_size=100, max_deltas=10)
    parts = [
        StoredPart("a/s1/new", BASE, 1, 7, 5, 0, Path("/x"), 0, mtime=30.0),
        StoredPart("a/s1/old", BASE, 3, 8, 5, 0, Path("/x"), 0, mtime=10.0),
        StoredPart("a/s1/old", DELTA, 4, 8, 2, 0, Path("/x"), 0, mtime=20.0),
        StoredPart("b/s2/x", BASE, 1, 9, 1, 0, Path("/x"), 0, mtime=25.0),
    ]
    index.load(parts)
    assert list(index.entries) == ["a/s1/old", "b/s2/x", "a/s1/new"]
    old = index.peek("a/s1/old")
    assert old is not None
    assert old.version == 4
    assert index.bytes == 13
    assert sorted(index.matching("a/*")) == ["a/s1/new", "a/s1/old"]
    assert index.matching("b/s2") == ["b/s2/x"]
    assert index.matching("a/s1/new") == ["a/s1/new"]
    assert index.sessions() == {"a/s1", "b/s2"}
