"""`flamed object-cache` as a real process, through the SDK and raw sockets: nothing it
acknowledged is lost to a crash, torn files are handled, the size cap evicts the least recently
used, concurrent writers each get their own version, and bad requests get clear errors."""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import msgspec
import numpy as np
import pytest

from flamed.client import FlameError, FlameErrorCode
from flamed.client.cache import ObjectRef, get_object, patch_object, put_object, update_object
from flamed.storage.objects import ObjectFiles
from protocol.codec import HEADER
from tests.cache.conftest import CHUNK, cache_stats, configure, fresh, wait_cache_ready
from tests.support.daemons import Daemons, RawClient
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def start(daemons: Daemons, **keys: object) -> None:
    configure(daemons, **keys)
    daemons.start_object_cache()
    wait_cache_ready(daemons)


def kill_and_restart(daemons: Daemons) -> None:
    proc = daemons.procs["cache"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    daemons.start_object_cache()
    wait_cache_ready(daemons)


def test_a_crash_loses_nothing_the_cache_acknowledged(cache_daemons: Daemons, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writers run while the cache is killed with SIGKILL; every put and update whose reply
    arrived before the kill is there after the restart, at its version. Would break if a reply
    were sent before its part was durable."""
    monkeypatch.setenv("FLAME_CACHE_TIMEOUT", "2")  # the writers notice the kill quickly
    start(cache_daemons)
    acked: dict[str, tuple[ObjectRef, object]] = {}
    stop = threading.Event()

    def writer(n: int) -> None:
        i = 0
        while not stop.is_set():
            value = {"writer": n, "i": i, "blob": os.urandom(CHUNK * 3 if i % 4 == 0 else 100)}  # some streamed
            try:
                ref = put_object(f"app/s{n}", value)
                if i % 3 == 0:
                    ref = update_object(ref, value | {"updated": True})
                    value = value | {"updated": True}
            except FlameError:
                return  # the kill: a write in flight may or may not have happened
            acked[ref.key] = (ref, value)
            i += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    wait_for("some writes", lambda: len(acked) >= 30, timeout=60)
    os.kill(cache_daemons.procs["cache"].pid, signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join(60)
    snapshot = dict(acked)
    cache_daemons.procs["cache"].wait()
    cache_daemons.start_object_cache()
    wait_cache_ready(cache_daemons)
    first = next(iter(snapshot.values()))[0]
    wait_for("this process's channel to reconnect (its backoff grew while the cache was down)", lambda: reads(first))
    for ref, value in snapshot.values():
        assert get_object(fresh(ref)) == value, ref
    assert cache_stats(cache_daemons)["objects"] >= len(snapshot)


def reads(ref: ObjectRef) -> bool:
    try:
        get_object(fresh(ref))
    except FlameError:
        return False
    return True


def test_a_torn_file_is_set_aside_at_restart_and_the_rest_is_served(cache_daemons: Daemons) -> None:
    """Would break if start-up died on (or served) a part whose bytes were cut short."""
    start(cache_daemons)
    kept = put_object("app/torn", {"kept": True})
    torn = put_object("app/torn", np.arange(100_000))
    files_dir = cache_daemons.dir / "cache-state"
    cache_daemons.stop("cache")
    files = ObjectFiles.open(files_dir)
    [path] = files.part_paths(torn.key)
    files.close()
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)
    cache_daemons.start_object_cache()
    wait_cache_ready(cache_daemons)
    assert get_object(fresh(kept)) == {"kept": True}
    with pytest.raises(FlameError) as caught:
        get_object(fresh(torn))
    assert caught.value.code is FlameErrorCode.NOT_FOUND
    assert cache_stats(cache_daemons)["broken_files_total"] == 1
    assert "torn or damaged" in cache_daemons.log("cache")
    assert list(path.parent.glob("*.broken"))


def test_the_size_cap_evicts_the_least_recently_used(cache_daemons: Daemons) -> None:
    """Six objects of 100 KB in a cache of 450 KB: the ones not read lately go first, the cap
    holds, and an evicted object reads as NotFound."""
    start(cache_daemons, max_bytes=450 * 1024)
    refs = [put_object("app/cap", os.urandom(100 * 1024)) for _ in range(4)]
    get_object(refs[0])  # the oldest is now the most recently used
    refs += [put_object("app/cap", os.urandom(100 * 1024)) for _ in range(2)]
    stats = cache_stats(cache_daemons)
    assert stats["bytes"] <= 450 * 1024
    assert stats["evictions_total"] == 2
    for gone in refs[1:3]:
        with pytest.raises(FlameError) as caught:
            get_object(fresh(gone))
        assert caught.value.code is FlameErrorCode.NOT_FOUND
        assert "evicted" in caught.value.message
    for ref in [refs[0], *refs[3:]]:
        assert len(get_object(fresh(ref))) == 100 * 1024


def test_concurrent_writers_each_get_their_own_version(cache_daemons: Daemons) -> None:
    """Eight threads patch one object while others put: every delta is kept, in the order of
    the versions its writers got back, and no version is handed out twice."""
    start(cache_daemons)
    ref = put_object("app/concurrent", [])
    versions: list[int] = []
    lock = threading.Lock()

    def patcher(n: int) -> None:
        for i in range(10):
            new = patch_object(ref, (n, i))
            with lock:
                versions.append(new.version)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(patcher, range(8)))
        puts = list(pool.map(lambda i: put_object("app/concurrent", i), range(20)))
    assert sorted(versions) == list(range(2, 82))
    deltas = get_object(fresh(ref), deserializer=lambda base, d: d)
    assert sorted(deltas) == sorted((n, i) for n in range(8) for i in range(10))
    for n in range(8):  # each writer's deltas in its own order
        assert [i for w, i in deltas if w == n] == list(range(10))
    assert [get_object(p) for p in puts] == list(range(20))


def test_bad_keys_and_oversized_objects_get_clear_errors(cache_daemons: Daemons) -> None:
    """Checked before anything is sent (the SDK) and again by the cache (a raw client)."""
    start(cache_daemons, max_object_size=200 * 1024, max_deltas=2)
    for bad in ("no-session", "a/b/c", "a/*", "../x/s", "a/", "a/s\x00"):
        with pytest.raises(ValueError, match=r"invalid|must not") as caught:
            put_object(bad, 1)
        assert isinstance(caught.value, FlameError)
        assert caught.value.code is FlameErrorCode.INVALID_ARGUMENT
    with pytest.raises(FlameError) as big:
        put_object("app/big", os.urandom(300 * 1024))
    assert "cache.max_object_size" in big.value.message
    assert "307,2" in big.value.message
    ref = put_object("app/deltas", 0)
    patch_object(ref, 1)
    patch_object(ref, 2)
    with pytest.raises(FlameError) as full:
        patch_object(ref, 3)
    assert "cache.max_deltas" in full.value.message
    assert "update_object" in full.value.message
    with pytest.raises(FlameError) as missing:
        patch_object(ObjectRef(cache_daemons.cache, "app/none/none"), 1)
    assert missing.value.code is FlameErrorCode.NOT_FOUND
    with RawClient(cache_daemons.cache) as raw:
        reply = raw.call({"type": "PutObject", "key": "a/../b", "data": b"x"})
        assert reply["type"] == "Error"
        assert reply["code"] == "InvalidArgument"
        assert ".." in reply["message"]
        reply = raw.call({"type": "PutObject", "key": "a/s/o", "data": b"x", "size": 300 * 1024})
        assert reply["code"] == "TooLarge"
        assert "cache.max_object_size" in reply["message"]
        reply = raw.call({"type": "ReadChunk", "key": "a/s/o", "version": 1, "offset": 0, "length": 10})
        assert reply["code"] == "NotFound"
        raw.send_frames([HEADER, b"\x82\xa4type\xa9PutObject\xa3key\x91" + b"\x91" * 50 + b"\xc0"])
        assert raw.receive()["code"] == "BadMessage"
        raw.send_frames([HEADER, msgspec.msgpack.encode({"type": "PutChunk", "upload_id": 99, "offset": 0})])
        assert raw.receive()["code"] == "BadMessage"
        # nested 100,000 deep in a field the cache skips: it used to end the daemon (RecursionError)
        raw.send_frames([HEADER, b"\x82\xa4type\xadGetCacheStats\xa4junk" + b"\x91" * 100_000 + b"\xc0"])
        assert raw.receive()["code"] == "BadMessage"
        assert raw.call({"type": "GetCacheStats"})["stats"]["bad_frames_total"] == 3
    assert cache_daemons.alive("cache")


def test_a_large_object_streams_in_chunks_and_comes_back_without_copies(cache_daemons: Daemons) -> None:
    """A 24 MB array travels as ~370 chunks of 64 KiB each way; the array read back is a
    writable view of the buffer it arrived in. Would break if uploads or chunk reads were
    reassembled wrongly (offsets, order) or the CRC check were skipped."""
    start(cache_daemons)
    array = np.random.default_rng(1).random(3_000_000)
    ref = put_object("app/large", {"a": array, "meta": "x"})
    back = get_object(fresh(ref))
    assert back["meta"] == "x"
    assert np.array_equal(back["a"], array)
    assert back["a"].flags.writeable
    assert back["a"].base is not None  # a view, not a copy
    stats = cache_stats(cache_daemons)
    assert stats["chunks_read_total"] >= 24_000_000 // CHUNK
    again = update_object(ref, {"a": array[:10], "meta": "y"})
    assert again.version == 2
    assert get_object(again)["meta"] == "y"


def test_an_upload_that_stops_halfway_is_dropped_and_its_room_given_back(cache_daemons: Daemons) -> None:
    """Breaks if an abandoned upload keeps its reserved room past upload_timeout, or a chunk sent after it
    expired is accepted."""
    start(cache_daemons, upload_timeout=0.5, max_bytes=1024 * 1024)
    with RawClient(cache_daemons.cache) as raw:
        reply = raw.call({"type": "PutObject", "key": "a/s/half", "data": b"x" * 10, "size": 1000 * 1000})
        assert reply["type"] == "ChunkStored"
        assert cache_stats(cache_daemons)["bytes_reserved"] == 1000 * 1000
        wait_for("the upload to expire", lambda: cache_stats(cache_daemons)["bytes_reserved"] == 0, timeout=10)
        late = raw.call({"type": "PutChunk", "upload_id": reply["upload_id"], "offset": 10, "data": b"y"})
        assert late["code"] == "NotFound"
    assert put_object("app/after", os.urandom(900 * 1024))  # the room is free again
