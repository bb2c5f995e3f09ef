"""`CacheChannel`: one DEALER to an object cache, blocking calls, large objects in chunks.

A channel serves one call at a time (a lock; calls from several threads take turns) and keeps
up to `WINDOW` chunk requests in flight within a call, so a large transfer is limited by the
network, not by round trips, while the cache never holds more than a few chunks for us (its
high-water mark is 64 messages). A reply that comes after its call gave up is dropped by its
request id. Reads may be repeated freely; a write that timed out may or may not have happened.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
import zlib
from collections.abc import Callable, Iterable

import msgspec

from flamed.client.errors import FlameError, FlameErrorCode, from_server
from flamed.transport import SettingsError, client_role
from flamed.transport.blocking import BlockingDealer
from protocol import cache as ca
from protocol.codec import HEADER, PROTOCOL_VERSION, FrameError

log = logging.getLogger("flamed.client")

#: Chunk requests kept in flight by one transfer.
WINDOW = 8
#: Seconds a call waits for each reply.
DEFAULT_TIMEOUT = 30.0


class CacheCallError(FlameError, ValueError):
    """A failed object-cache call. A ValueError too, as flamepy raises for cache failures."""


class CacheChannel:
    def __init__(self, endpoint: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._lock = threading.Lock()
        try:
            curve = client_role()
        except SettingsError as exc:  # a bad key or config file
            raise CacheCallError(FlameErrorCode.INVALID_CONFIG, f"object cache at {endpoint}: {exc}") from None
        self._sock = BlockingDealer(endpoint, b"c" + secrets.token_bytes(7), curve=curve, hwm=64)
        self._codec = ca.reply_codec()
        self._encoder = msgspec.msgpack.Encoder()
        self._next_id = 0
        self.closed = False
        welcome = self.call(ca.CacheHello(protocol_version=PROTOCOL_VERSION, client="flamed.client"))
        if not isinstance(welcome, ca.CacheWelcome):
            raise CacheCallError(FlameErrorCode.INTERNAL, f"object cache at {endpoint} answered {welcome!r}")
        self.chunk_size = welcome.chunk_size
        self.max_object_size = welcome.max_object_size
        self.max_deltas = welcome.max_deltas

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                self._sock.close()

    # ------------------------------------------------------------------ plumbing

    def _send(self, message: ca.Message) -> int:
        self._next_id += 1
        message.request_id = self._next_id
        if not self._sock.send([HEADER, self._encoder.encode(message)], self.timeout):
            raise self._no_reply()
        return self._next_id

    def _receive(self, wanted: set[int]) -> ca.CacheReply:
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            frames = self._sock.receive(left) if left > 0 else None
            if frames is None:
                raise self._no_reply()
            try:
                reply = self._codec.decode(frames)
            except FrameError as exc:
                log.warning("bad frame from object cache at %s: %s", self.endpoint, exc.message)
                continue
            if reply.request_id in wanted:
                return reply

    def _no_reply(self) -> CacheCallError:
        return CacheCallError(
            FlameErrorCode.INTERNAL,
            f"no reply from the object cache at {self.endpoint} in {self.timeout:g}s; "
            "is `flamed object-cache` running?",
        )

    @staticmethod
    def check(reply: ca.CacheReply) -> ca.CacheReply:
        if isinstance(reply, ca.Error):
            error = from_server(reply.code, reply.message)
            raise CacheCallError(error.code, reply.message, server_code=reply.code)
        return reply

    def call(self, message: ca.Message) -> ca.CacheReply:
        """One request, one reply (an `Error` reply raises CacheCallError)."""
        with self._lock:
            if self.closed:
                raise CacheCallError(FlameErrorCode.INVALID_STATE, f"the channel to {self.endpoint} is closed")
            return self.check(self._receive({self._send(message)}))

    # ------------------------------------------------------------------ transfers

    def write(self, key: str, kind: ca.WriteKind, chunks: list[memoryview], size: int) -> ca.ObjectStored:
        """Store `chunks` (at most `chunk_size` each, `size` in all) under `key`."""
        if size > self.max_object_size:
            raise CacheCallError(
                FlameErrorCode.INVALID_ARGUMENT,
                f"object of {size:,} bytes is larger than the object cache's limit of "
                f"{self.max_object_size:,} bytes (cache.max_object_size)",
            )
        first = bytes(chunks[0]) if chunks else b""
        reply = self.call(ca.PutObject(key=key, kind=kind, data=first, size=size))
        if isinstance(reply, ca.ObjectStored):
            return reply
        if not isinstance(reply, ca.ChunkStored):
            raise CacheCallError(FlameErrorCode.INTERNAL, f"object cache answered PutObject with {reply!r}")
        upload = reply.upload_id
        with self._lock:
            try:
                return self._stream(upload, chunks[1:], len(first))
            except BaseException:
                self._abort(upload)
                raise

    def _stream(self, upload: int, chunks: list[memoryview], offset: int) -> ca.ObjectStored:
        in_flight: set[int] = set()
        pending = iter(chunks)
        done: ca.ObjectStored | None = None
        while True:
            while len(in_flight) < WINDOW:
                chunk = next(pending, None)
                if chunk is None:
                    break
                in_flight.add(self._send(ca.PutChunk(upload_id=upload, offset=offset, data=bytes(chunk))))
                offset += chunk.nbytes
            if not in_flight:
                break
            reply = self.check(self._receive(in_flight))
            in_flight.discard(reply.request_id)
            if isinstance(reply, ca.ObjectStored):
                done = reply
        if done is None:
            raise CacheCallError(FlameErrorCode.INTERNAL, f"object cache at {self.endpoint} never confirmed the upload")
        return done

    def _abort(self, upload: int) -> None:
        with contextlib.suppress(FlameError):  # the cache drops idle uploads by itself anyway
            self._send(ca.AbortUpload(upload_id=upload))

    def read(self, key: str, part: ca.Part, into: memoryview, on_chunk: Callable[[int], None] | None = None) -> None:
        """Fill `into` (`part.size` bytes) with the part's bytes, by chunks; checks its CRC."""
        with self._lock:
            offsets: Iterable[int] = range(0, part.size, self.chunk_size)
            pending = iter(offsets)
            in_flight: dict[int, int] = {}
            while True:
                while len(in_flight) < WINDOW:
                    offset = next(pending, None)
                    if offset is None:
                        break
                    length = min(self.chunk_size, part.size - offset)
                    request = ca.ReadChunk(key=key, version=part.version, offset=offset, length=length)
                    in_flight[self._send(request)] = offset
                if not in_flight:
                    break
                reply = self.check(self._receive(set(in_flight)))
                offset = in_flight.pop(reply.request_id)
                if not isinstance(reply, ca.Chunk):
                    raise CacheCallError(FlameErrorCode.INTERNAL, f"object cache answered ReadChunk with {reply!r}")
                into[offset : offset + len(reply.data)] = reply.data
                if on_chunk is not None:
                    on_chunk(len(reply.data))
        check_crc(key, part, into)


def check_crc(key: str, part: ca.Part, data: memoryview | bytes) -> None:
    if zlib.crc32(data) != part.crc:
        raise CacheCallError(
            FlameErrorCode.INTERNAL,
            f"version {part.version} of object {key!r} arrived damaged (CRC mismatch); "
            "the object cache's copy or the transfer is bad",
        )
