"""Object-cache messages: clients and instances <-> the object cache (`flamed object-cache`).

Frames as on every link (`[HEADER][msgpack payload]`, see codec.py); every request carries a
client-chosen `request_id` that its reply echoes, so a client may pipeline on one DEALER.

Objects live under keys `<application>/<session>/<object id>`. An object is a *base* (written by
`put` or `update`) followed by up to `max_deltas` *deltas* (appended by `patch`); every write
gives the object a new `version` (1 for the first), and every object has a random `stamp` chosen
when it is created, so a client that holds version N of an object which was deleted and created
again never mistakes the new one for its copy.

Writes: one `PutObject` with the whole payload, or, for a payload larger than one chunk, a
`PutObject` with the first chunk and `size` = the whole length, answered `ChunkStored` with an
`upload_id`, then `PutChunk`s in order (each answered `ChunkStored`), the last answered
`ObjectStored`. The object exists, durably, only when `ObjectStored` is sent.

Reads: `GetObject{key, have, stamp}` is a conditional get. `NotModified` when the caller's copy
(`have`, `stamp`) is current; else `ObjectData` with the parts it lacks: only the deltas newer
than `have` when its base is still current, else the base and every delta. A part small enough
comes inline (`data`); a larger one is read with `ReadChunk`s by offset. `crc` (CRC-32 of a
part's bytes) lets the reader check what it assembled.

Key rules (`check_key`, `check_prefix`) are here so that both ends apply the same ones.
"""

from __future__ import annotations

import enum

import msgspec

from protocol.codec import Codec
from protocol.errors import ErrorCode

#: Longest key, in characters.
MAX_KEY_LENGTH = 512
#: A prefix naming every session of an application: `<application>/*`.
WILDCARD = "*"


class WriteKind(enum.StrEnum):
    #: A new object (or a new base replacing an existing one, deltas cleared).
    Put = "Put"
    #: A new base for an object (created when missing); its deltas are cleared.
    Update = "Update"
    #: Append a delta to an existing object.
    Patch = "Patch"


class Message(msgspec.Struct, tag=True, kw_only=True, omit_defaults=True):
    """Base of object-cache messages; `request_id` is echoed by the reply."""

    request_id: int = 0


# ---------------------------------------------------------------- requests (client -> cache)


class CacheHello(Message):
    """Optional first message: checks the protocol version; the reply carries the limits."""

    protocol_version: int
    client: str = ""


class PutObject(Message):
    """Write `data` under `key`. With `size` larger than `len(data)`, `data` is the first chunk
    of an upload of `size` bytes that `PutChunk`s complete; `size` -1 means `len(data)`."""

    key: str
    kind: WriteKind = WriteKind.Put
    data: bytes = b""
    size: int = -1


class PutChunk(Message):
    """The next chunk of an upload; `offset` must be the number of bytes sent before it."""

    upload_id: int
    offset: int
    data: bytes


class AbortUpload(Message):
    """Give an upload up (its bytes are discarded); answered `Ok`."""

    upload_id: int


class GetObject(Message):
    """Conditional get: `have` and `stamp` describe the caller's copy (0 and 0: none)."""

    key: str
    have: int = 0
    stamp: int = 0


class ReadChunk(Message):
    """`length` bytes at `offset` of the part written at `version` of `key`."""

    key: str
    version: int
    offset: int
    length: int


class DeleteObjects(Message):
    """Delete `<app>/*` (every session of the app), `<app>/<session>` or one object."""

    prefix: str


class GetCacheStats(Message):
    pass


CacheRequest = CacheHello | PutObject | PutChunk | AbortUpload | GetObject | ReadChunk | DeleteObjects | GetCacheStats


# ---------------------------------------------------------------- replies (cache -> client)


class CacheWelcome(Message):
    protocol_version: int
    server_version: str
    #: largest chunk the cache sends or takes in one message
    chunk_size: int
    #: largest object (base or delta) it stores
    max_object_size: int
    #: most deltas one object holds
    max_deltas: int


class ChunkStored(Message):
    """Part of an upload is stored (not yet durable): `received` bytes so far."""

    upload_id: int
    received: int


class ObjectStored(Message):
    """The write is durable: the object is at `version`."""

    key: str
    version: int
    stamp: int


class NotModified(Message):
    key: str
    version: int
    stamp: int


class Part(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A base or a delta: the version that wrote it, its size, its CRC-32, and its bytes when
    they come inline (else read them with `ReadChunk{key, version}`)."""

    version: int
    size: int
    crc: int
    data: bytes | None = None


class ObjectData(Message):
    """What the caller lacks of `key` at `version`: `base` (None when its copy's base is still
    current) and the deltas it lacks, oldest first."""

    key: str
    version: int
    stamp: int
    base: Part | None = None
    deltas: list[Part] = []


class Chunk(Message):
    data: bytes


class ObjectsDeleted(Message):
    count: int


class Ok(Message):
    pass


class CacheStats(Message):
    stats: dict[str, float]


class Error(Message):
    code: ErrorCode
    message: str


CacheReply = (
    CacheWelcome
    | ChunkStored
    | ObjectStored
    | NotModified
    | ObjectData
    | Chunk
    | ObjectsDeleted
    | Ok
    | CacheStats
    | Error
)


def request_codec() -> Codec[CacheRequest]:
    """What the object cache decodes."""
    return Codec(CacheRequest)


def reply_codec() -> Codec[CacheReply]:
    """What a cache client decodes."""
    return Codec(CacheReply)


# ---------------------------------------------------------------- keys


def _check_part(what: str, value: str, *, wildcard: bool = False) -> str | None:
    if not value:
        return f"{what} must not be empty"
    if value == WILDCARD and not wildcard:
        return f"{what} must not be '*'"
    if ".." in value or "\\" in value or "/" in value:
        return f"{what} {value!r} must not contain '..', '\\' or '/'"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return f"{what} {value!r} must not contain control characters"
    return None


def check_key(key: str) -> str | None:
    """Why `key` is not `<application>/<session>/<object id>`, or None if it is."""
    if len(key) > MAX_KEY_LENGTH:
        return f"key is {len(key)} characters; at most {MAX_KEY_LENGTH}"
    parts = key.split("/")
    if len(parts) != 3:
        return f"invalid object key {key!r}: expected '<application>/<session>/<object id>'"
    for what, value in zip(("application", "session", "object id"), parts, strict=True):
        problem = _check_part(what, value)
        if problem is not None:
            return f"invalid object key {key!r}: {problem}"
    return None


def check_prefix(prefix: str, *, allow_key: bool = True, allow_wildcard: bool = True) -> str | None:
    """Why `prefix` is not `<application>/<session>` (or `<application>/*` with
    `allow_wildcard`, or a whole key with `allow_key`), or None if it is."""
    if len(prefix) > MAX_KEY_LENGTH:
        return f"prefix is {len(prefix)} characters; at most {MAX_KEY_LENGTH}"
    parts = prefix.split("/")
    if len(parts) == 3 and allow_key:
        return check_key(prefix)
    expected = "'<application>/<session>'" + (" or '<application>/*'" if allow_wildcard else "")
    if len(parts) != 2:
        return f"invalid key prefix {prefix!r}: expected {expected}"
    problem = _check_part("application", parts[0]) or _check_part("session", parts[1], wildcard=allow_wildcard)
    if problem is not None:
        return f"invalid key prefix {prefix!r}: {problem}"
    return None


def matches(prefix: str, key: str) -> bool:
    """True if the (checked) `prefix` names `key`: the key itself, its session or its app."""
    if prefix == key:
        return True
    app, _, session = prefix.partition("/")
    if "/" in session:
        return False
    if session == WILDCARD:
        return key.startswith(app + "/")
    return key.startswith(prefix + "/")
