"""flamepy's object-cache API: `put_object`, `get_object`, `update_object`, `patch_object`,
`delete_objects`, `ObjectRef` (re-exported by `flamed.client` and `flamed.cache`).

    ref = put_object("my-app/my-session", {"weights": numpy_array})   # -> ObjectRef, version 1
    obj = get_object(ref)                                              # the object
    ref = patch_object(ref, delta)                                     # appends a delta
    merged = get_object(ref, deserializer=lambda base, deltas: ...)    # base and deltas, in order
    ref = update_object(ref, new_obj)                                  # a new base; deltas cleared
    delete_objects("my-app/my-session")                                # or "my-app/*", or a key

Where the cache is: `FLAME_CACHE_ENDPOINT` (the executor manager sets it for instances), else
what the session manager said at `connect()` (`Welcome.cache_endpoint`): users configure
nothing. A ref names its cache; `get_object` uses that unless the ref's endpoint is not one.
A call waits `FLAME_CACHE_TIMEOUT` seconds (30) for each reply.

Reading: every `get_object` asks the cache whether this process's copy is current (one small
round trip); if it is, the object this process already rebuilt is returned as it is (the same
object each time, as flamepy's client cache does: treat it as read-only); if only deltas were
appended, only they travel; else the parts this process lacks are read, from the node-local
copies (`local_copies.py`) when another process of the node has them, else from the cache.
`ref.version == 0` forces a fresh read. Objects are serialized with cloudpickle, large buffers
(numpy, Arrow) out of band and rebuilt without copies (`serialization.py`).

Errors are `FlameError`s that are also `ValueError`s (flamepy raises ValueError): a bad key or
prefix (INVALID_ARGUMENT) before anything is sent, an object too large (INVALID_ARGUMENT), a
missing object (NOT_FOUND), too many deltas (INVALID_STATE), a cache that does not answer
(INTERNAL, naming the endpoint).
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from flamed.client.cache_channel import CacheCallError, CacheChannel, check_crc
from flamed.client.errors import FlameErrorCode
from flamed.client.local_copies import LocalCopies
from flamed.client.serialization import dumps, loads
from protocol import cache as ca

__all__ = [
    "Deserializer",
    "ObjectRef",
    "cache_endpoint",
    "delete_objects",
    "get_object",
    "patch_object",
    "put_object",
    "update_object",
]

Deserializer = Callable[[Any, list[Any]], Any]

#: Objects this process keeps rebuilt (flamepy keeps 1000), and their payload bytes at most.
MEMO_MAX_OBJECTS = 1000
MEMO_MAX_BYTES = 2 * 1024 * 1024 * 1024


@dataclasses.dataclass
class ObjectRef:
    """Where an object is: its cache, its key `<app>/<session>/<id>` and the version written.

    `version == 0` asks `get_object` for a fresh read (bypassing this process's copy)."""

    endpoint: str
    key: str
    version: int = 0

    def encode(self) -> bytes:
        return _ref_encoder.encode(_RefWire(endpoint=str(self.endpoint), key=self.key, version=self.version))

    @classmethod
    def decode(cls, data: bytes) -> ObjectRef:
        try:
            wire = _ref_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CacheCallError(FlameErrorCode.INVALID_ARGUMENT, f"not an encoded ObjectRef: {exc}") from None
        return cls(endpoint=wire.endpoint, key=wire.key, version=wire.version)


class _RefWire(msgspec.Struct, kw_only=True):
    endpoint: str
    key: str
    version: int = 0


_ref_encoder = msgspec.msgpack.Encoder()
_ref_decoder = msgspec.msgpack.Decoder(_RefWire)


@dataclasses.dataclass
class _Memo:
    stamp: int
    version: int
    base: Any
    deltas: list[Any]
    size: int
    materialized: dict[Any, Any] = dataclasses.field(default_factory=dict)


class _IdentityKey:
    """A dict key for a deserializer that cannot be hashed."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __hash__(self) -> int:
        return id(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _IdentityKey) and self.value is other.value


class _State:
    """This process's channels, rebuilt objects and local copies (per pid: a forked child
    starts afresh, since sockets do not survive a fork)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.channels: dict[str, CacheChannel] = {}
        self.memo: collections.OrderedDict[tuple[str, str], _Memo] = collections.OrderedDict()
        self.memo_bytes = 0
        root = os.environ.get("FLAME_CACHE_LOCAL_DIR")
        budget = int(os.environ.get("FLAME_CACHE_LOCAL_BYTES", str(2 << 30)))
        self.local = LocalCopies(Path(root), budget) if root else None


_state: _State | None = None
_state_lock = threading.Lock()


def _current() -> _State:
    global _state  # noqa: PLW0603 - one state per process, replaced after a fork
    with _state_lock:
        if _state is None or _state.pid != os.getpid():
            _state = _State()
        return _state


def _close_channels() -> None:
    state = _state
    if state is not None and state.pid == os.getpid():
        for channel in list(state.channels.values()):
            channel.close()


atexit.register(_close_channels)


# ---------------------------------------------------------------------- endpoints


def cache_endpoint() -> str:
    """The object cache of this process: FLAME_CACHE_ENDPOINT, else the session manager's word."""
    env = os.environ.get("FLAME_CACHE_ENDPOINT")
    if env:
        return env
    from flamed.client.default import connection  # the default connection: connects on first use

    conn = connection()
    if not conn.cache_endpoint:
        raise CacheCallError(
            FlameErrorCode.INVALID_CONFIG,
            f"the session manager at {conn.endpoint} names no object cache (cache.endpoint is empty); "
            "set FLAME_CACHE_ENDPOINT",
        )
    return conn.cache_endpoint


def _endpoint_of(ref: ObjectRef) -> str:
    endpoint = ref.endpoint
    if isinstance(endpoint, str) and endpoint.startswith(("tcp://", "ipc://", "inproc://")):
        return endpoint
    return cache_endpoint()


def _channel(endpoint: str) -> CacheChannel:
    state = _current()
    with state.lock:
        channel = state.channels.get(endpoint)
        if channel is not None and not channel.closed:
            return channel
    created = CacheChannel(endpoint, float(os.environ.get("FLAME_CACHE_TIMEOUT", "30")))
    with state.lock:
        existing = state.channels.get(endpoint)
        if existing is not None and not existing.closed:
            created.close()
            return existing
        state.channels[endpoint] = created
    return created


def _checked(problem: str | None) -> None:
    if problem is not None:
        raise CacheCallError(FlameErrorCode.INVALID_ARGUMENT, problem)


# ---------------------------------------------------------------------- writes


def put_object(key_prefix: str, obj: Any) -> ObjectRef:
    """Store `obj` under a new key `<key_prefix>/<uuid>`; `key_prefix` is `<app>/<session>`."""
    _checked(ca.check_prefix(key_prefix, allow_key=False, allow_wildcard=False))
    key = f"{key_prefix}/{uuid.uuid4().hex}"
    endpoint = cache_endpoint()
    return _write(endpoint, key, ca.WriteKind.Put, obj)


def update_object(ref: ObjectRef, new_obj: Any) -> ObjectRef:
    """Replace the object (base and deltas) with `new_obj`; returns the ref at the new version."""
    _checked(ca.check_key(ref.key))
    return _write(_endpoint_of(ref), ref.key, ca.WriteKind.Update, new_obj)


def patch_object(ref: ObjectRef, delta: Any) -> ObjectRef:
    """Append `delta` to the object (it must exist); `get_object(ref, deserializer)` hands the
    base and every delta, in order, to `deserializer(base, deltas)`."""
    _checked(ca.check_key(ref.key))
    return _write(_endpoint_of(ref), ref.key, ca.WriteKind.Patch, delta)


def _write(endpoint: str, key: str, kind: ca.WriteKind, obj: Any) -> ObjectRef:
    payload = dumps(obj)
    channel = _channel(endpoint)
    stored = channel.write(key, kind, payload.chunks(channel.chunk_size), payload.size)
    state = _current()
    _forget(state, endpoint, key)
    if state.local is not None and payload.size > channel.chunk_size:
        # the next process of this node that reads it finds it here
        state.local.store(key, stored.stamp, stored.version, kind is not ca.WriteKind.Patch, payload.pieces)
    return ObjectRef(endpoint=endpoint, key=key, version=stored.version)


def delete_objects(key_prefix: str) -> None:
    """Delete `<app>/*` (every session of the app), `<app>/<session>` or one object key."""
    _checked(ca.check_prefix(key_prefix))
    endpoint = cache_endpoint()
    _channel(endpoint).call(ca.DeleteObjects(prefix=key_prefix))
    state = _current()
    with state.lock:
        for memo_key in [k for k in state.memo if k[0] == endpoint and ca.matches(key_prefix, k[1])]:
            state.memo_bytes -= state.memo.pop(memo_key).size


# ---------------------------------------------------------------------- reads


def get_object(ref: ObjectRef, deserializer: Deserializer | None = None) -> Any:
    """The object `ref` names, at its current version. With `deserializer`, the result of
    `deserializer(base, deltas)`; without, the base alone (as flamepy)."""
    _checked(ca.check_key(ref.key))
    endpoint = _endpoint_of(ref)
    channel = _channel(endpoint)
    state = _current()
    memo_key = (endpoint, ref.key)
    with state.lock:
        memo = None if ref.version == 0 else state.memo.get(memo_key)
        if memo is not None:
            state.memo.move_to_end(memo_key)
    have, stamp = (memo.version, memo.stamp) if memo is not None else (0, 0)
    reply = channel.call(ca.GetObject(key=ref.key, have=have, stamp=stamp))
    if isinstance(reply, ca.NotModified):
        assert memo is not None
        return _materialize(memo, deserializer)
    if not isinstance(reply, ca.ObjectData):
        raise CacheCallError(FlameErrorCode.INTERNAL, f"object cache answered GetObject with {reply!r}")
    if reply.base is None:
        assert memo is not None, "the cache sent deltas only to a reader without a base"
        base, deltas, size = memo.base, list(memo.deltas), memo.size
    else:
        base, size = _load(channel, state, ref.key, reply.stamp, reply.base, True), reply.base.size
        deltas = []
    for part in reply.deltas:
        deltas.append(_load(channel, state, ref.key, reply.stamp, part, False))
        size += part.size
    memo = _Memo(reply.stamp, reply.version, base, deltas, size)
    _remember(state, memo_key, memo)
    return _materialize(memo, deserializer)


def _load(channel: CacheChannel, state: _State, key: str, stamp: int, part: ca.Part, base: bool) -> Any:  # noqa: PLR0917
    if part.data is not None:
        check_crc(key, part, part.data)
        return loads(bytearray(part.data))
    local = state.local
    if local is not None:
        view = local.open(key, stamp, part.version, part.size, base)
        if view is not None:
            return loads(view)
    buffer = bytearray(part.size)
    channel.read(key, part, memoryview(buffer))
    if local is not None:
        local.store(key, stamp, part.version, base, [buffer])
    return loads(buffer)


def _materialize(memo: _Memo, deserializer: Deserializer | None) -> Any:
    if deserializer is None:
        return memo.base
    try:
        cache_key: Any = deserializer
        hash(cache_key)
    except TypeError:
        cache_key = _IdentityKey(deserializer)
    if cache_key not in memo.materialized:
        memo.materialized[cache_key] = deserializer(memo.base, list(memo.deltas))
    return memo.materialized[cache_key]


def _remember(state: _State, memo_key: tuple[str, str], memo: _Memo) -> None:
    with state.lock:
        old = state.memo.pop(memo_key, None)
        if old is not None:
            state.memo_bytes -= old.size
        if memo.size > MEMO_MAX_BYTES:
            return
        state.memo[memo_key] = memo
        state.memo_bytes += memo.size
        while len(state.memo) > MEMO_MAX_OBJECTS or state.memo_bytes > MEMO_MAX_BYTES:
            _, evicted = state.memo.popitem(last=False)
            state.memo_bytes -= evicted.size


def _forget(state: _State, endpoint: str, key: str) -> None:
    with state.lock:
        old = state.memo.pop((endpoint, key), None)
        if old is not None:
            state.memo_bytes -= old.size


def local_copies() -> LocalCopies | None:
    """This process's node-local copies (None unless FLAME_CACHE_LOCAL_DIR is set)."""
    return _current().local
