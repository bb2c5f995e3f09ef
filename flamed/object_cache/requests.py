"""What the object cache does with each request: the index decides, the files are written, and
only then is the reply made. No sockets here (daemon.py owns them); time comes in as `now`.

Rules: a write is acknowledged (`ObjectStored`) only once its part is durable; a failed write
leaves the index and the files as they were (`StorageUnavailable`); a large write streams to
its file chunk by chunk and a large read is served chunk by chunk, so no request makes the
daemon hold more than one chunk of an object; uploads are bounded in number (`max_uploads`,
`MAX_UPLOADS_PER_PEER`) and in time (`upload_timeout` without a chunk drops them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flamed import __version__
from flamed.object_cache.index import CacheError, Entry, Index
from flamed.storage import StorageError
from flamed.storage.objects import BASE, DELTA, ObjectFiles, PartWriter, StoredPart
from protocol import cache as ca
from protocol.codec import PROTOCOL_VERSION
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from flamed.config import CacheConfig

log = logging.getLogger("flamed.object_cache")

#: Uploads one client may have open at once.
MAX_UPLOADS_PER_PEER = 8


@dataclass
class Upload:
    id: int
    peer: bytes
    key: str
    kind: ca.WriteKind
    size: int
    writer: PartWriter
    deadline: float


class Requests:
    def __init__(self, config: CacheConfig, files: ObjectFiles, index: Index) -> None:
        self.config = config
        self.files = files
        self.index = index
        self.uploads: dict[int, Upload] = {}
        self._next_upload = 0

    def handle(self, peer: bytes, request: ca.CacheRequest, now: float) -> ca.Message:
        """The reply to `request` (an `Error` for anything refused); never raises CacheError."""
        try:
            return self._dispatch(peer, request, now)
        except CacheError as exc:
            self.index.counters["errors"] += 1
            return ca.Error(code=exc.code, message=exc.message)
        except StorageError as exc:
            self.index.counters["storage_errors"] += 1
            log.error("storage: %s", exc)
            return ca.Error(code=ErrorCode.StorageUnavailable, message=f"the object cache could not store it: {exc}")

    def _dispatch(self, peer: bytes, request: ca.CacheRequest, now: float) -> ca.Message:
        match request:
            case ca.GetObject():
                return self._get(request)
            case ca.ReadChunk():
                return self._read_chunk(request)
            case ca.PutObject():
                return self._put(peer, request, now)
            case ca.PutChunk():
                return self._chunk(peer, request, now)
            case ca.AbortUpload(upload_id=upload_id):
                upload = self.uploads.get(upload_id)
                if upload is not None and upload.peer == peer:
                    self._drop(upload)
                return ca.Ok()
            case ca.DeleteObjects(prefix=prefix):
                return ca.ObjectsDeleted(count=self.delete(prefix))
            case ca.CacheHello(protocol_version=version):
                if version != PROTOCOL_VERSION:
                    raise CacheError(
                        ErrorCode.VersionMismatch,
                        f"client speaks protocol {version}, this object cache {PROTOCOL_VERSION}",
                    )
                return ca.CacheWelcome(
                    protocol_version=PROTOCOL_VERSION,
                    server_version=__version__,
                    chunk_size=self.config.chunk_size,
                    max_object_size=self.config.max_object_size,
                    max_deltas=self.config.max_deltas,
                )
            case ca.GetCacheStats():
                return ca.CacheStats(stats=self.stats())
        raise AssertionError(f"unhandled {type(request).__name__}")  # the union is matched in full

    # ------------------------------------------------------------------ reads

    def _entry(self, key: str) -> Entry:
        problem = ca.check_key(key)
        if problem is not None:
            raise CacheError(ErrorCode.InvalidArgument, problem)
        entry = self.index.get(key)
        if entry is None:
            self.index.counters["misses"] += 1
            raise CacheError(ErrorCode.NotFound, f"object {key!r} not found (never stored, deleted or evicted)")
        return entry

    def _get(self, request: ca.GetObject) -> ca.Message:
        entry = self._entry(request.key)
        self.index.counters["gets"] += 1
        if request.stamp == entry.stamp and request.have == entry.version:
            self.index.counters["not_modified"] += 1
            return ca.NotModified(key=entry.key, version=entry.version, stamp=entry.stamp)
        budget = self.config.chunk_size
        base: ca.Part | None = None
        if request.stamp == entry.stamp and entry.base.version <= request.have < entry.version:
            parts = [d for d in entry.deltas if d.version > request.have]  # its base is current
        else:
            parts = entry.parts()
            base_part, parts = parts[0], parts[1:]
            base, budget = self._part(base_part, budget)
        deltas = []
        for stored in parts:
            part, budget = self._part(stored, budget)
            deltas.append(part)
        return ca.ObjectData(key=entry.key, version=entry.version, stamp=entry.stamp, base=base, deltas=deltas)

    def _part(self, stored: StoredPart, budget: int) -> tuple[ca.Part, int]:
        part = ca.Part(version=stored.version, size=stored.size, crc=stored.crc)
        if stored.size <= budget:  # small parts travel inline: one round trip for small objects
            part.data = self.files.read(stored, 0, stored.size)
            budget -= stored.size
        return part, budget

    def _read_chunk(self, request: ca.ReadChunk) -> ca.Message:
        entry = self._entry(request.key)
        part = entry.part(request.version)
        if part is None:
            raise CacheError(
                ErrorCode.NotFound,
                f"version {request.version} of object {request.key!r} is gone (replaced by version "
                f"{entry.version}); get the object again",
            )
        if request.length > self.config.chunk_size or request.length < 0 or request.offset < 0:
            raise CacheError(
                ErrorCode.InvalidArgument,
                f"a chunk is at most {self.config.chunk_size} bytes (cache.chunk_size), at an offset >= 0",
            )
        self.index.counters["chunks_read"] += 1
        return ca.Chunk(data=self.files.read(part, request.offset, request.length))

    # ------------------------------------------------------------------ writes

    def _put(self, peer: bytes, request: ca.PutObject, now: float) -> ca.Message:
        problem = ca.check_key(request.key)
        if problem is not None:
            raise CacheError(ErrorCode.InvalidArgument, problem)
        size = len(request.data) if request.size < 0 else request.size
        if size < len(request.data):
            raise CacheError(ErrorCode.InvalidArgument, f"size {size} is less than the {len(request.data)} bytes sent")
        streamed = size > len(request.data)
        if streamed:
            self._check_upload_limits(peer)
        for key in self.index.admit(request.key, request.kind, size):
            self.files.remove_key(key)
            log.info("evicted %s (cache.max_bytes)", key)
        try:
            writer = self.files.writer(request.key)
            writer.append(request.data)
        except StorageError:
            self.index.release(size)
            raise
        if not streamed:
            return self._commit(request.key, request.kind, size, writer)
        self._next_upload += 1
        upload = Upload(
            self._next_upload,
            peer,
            request.key,
            request.kind,
            size,
            writer,
            now + self.config.upload_timeout,
        )
        self.uploads[upload.id] = upload
        return ca.ChunkStored(upload_id=upload.id, received=writer.size)

    def _check_upload_limits(self, peer: bytes) -> None:
        if len(self.uploads) >= self.config.max_uploads:
            raise CacheError(
                ErrorCode.LimitExceeded,
                f"{len(self.uploads)} uploads are in progress (cache.max_uploads); try again shortly",
            )
        if sum(1 for u in self.uploads.values() if u.peer == peer) >= MAX_UPLOADS_PER_PEER:
            raise CacheError(
                ErrorCode.LimitExceeded, f"this client has {MAX_UPLOADS_PER_PEER} uploads in progress; finish them"
            )

    def _chunk(self, peer: bytes, request: ca.PutChunk, now: float) -> ca.Message:
        upload = self.uploads.get(request.upload_id)
        if upload is None or upload.peer != peer:
            raise CacheError(
                ErrorCode.NotFound, f"upload {request.upload_id} not found (finished, timed out or never begun)"
            )
        writer = upload.writer
        if request.offset != writer.size or writer.size + len(request.data) > upload.size:
            self._drop(upload)
            raise CacheError(
                ErrorCode.InvalidArgument,
                f"chunk at offset {request.offset} of {len(request.data)} bytes does not follow the "
                f"{writer.size} bytes received of {upload.size}; the upload is dropped",
            )
        try:
            writer.append(request.data)
        except StorageError:
            self._drop(upload)
            raise
        upload.deadline = now + self.config.upload_timeout
        if writer.size < upload.size:
            return ca.ChunkStored(upload_id=upload.id, received=writer.size)
        del self.uploads[upload.id]
        return self._commit(upload.key, upload.kind, upload.size, writer)

    def _commit(self, key: str, kind: ca.WriteKind, size: int, writer: PartWriter) -> ca.Message:
        try:
            version, stamp = self.index.next_version(key, kind)
            part = writer.commit(DELTA if kind is ca.WriteKind.Patch else BASE, version, stamp)
        except (CacheError, StorageError):
            writer.abort()
            raise
        finally:
            self.index.release(size)
        for old in self.index.stored(part):
            self.files.remove_part(old)
        self.index.counters["bytes_written"] += size
        return ca.ObjectStored(key=key, version=version, stamp=stamp)

    def _drop(self, upload: Upload) -> None:
        self.uploads.pop(upload.id, None)
        upload.writer.abort()
        self.index.release(upload.size)

    def expire_uploads(self, now: float) -> None:
        for upload in [u for u in self.uploads.values() if u.deadline <= now]:
            log.info("upload %d of %s: no chunk for %gs; dropped", upload.id, upload.key, self.config.upload_timeout)
            self.index.counters["uploads_expired"] += 1
            self._drop(upload)

    def forget_peer(self, peer: bytes) -> None:
        """The peer is gone: its uploads are dropped."""
        for upload in [u for u in self.uploads.values() if u.peer == peer]:
            self._drop(upload)

    # ------------------------------------------------------------------ deletes

    def delete(self, prefix: str) -> int:
        """Delete what `prefix` names; returns how many objects went."""
        problem = ca.check_prefix(prefix)
        if problem is not None:
            raise CacheError(ErrorCode.InvalidArgument, problem)
        keys = self.index.matching(prefix)
        for key in keys:
            self.files.remove_key(key)
            self.index.remove(key)
        self.index.counters["deleted"] += len(keys)
        for session in [s for s in self.index.live if ca.matches(prefix, s + "/x")]:
            self.files.unmark_live(session)
            self.index.live.discard(session)
        return len(keys)

    def session_gone(self, prefix: str) -> int:
        """The session manager no longer has a session whose objects are here: remove them."""
        count = self.delete(prefix)
        log.info("session %s was deleted: removed its %d objects", prefix, count)
        self.index.counters["sessions_removed"] += 1
        return count

    def session_alive(self, prefix: str) -> None:
        if prefix not in self.index.live:
            self.files.mark_live(prefix)
            self.index.live.add(prefix)

    def stats(self) -> dict[str, float]:
        stats = {f"{k}_total": float(v) for k, v in self.index.counters.items()}
        stats.update(
            objects=float(len(self.index)),
            bytes=float(self.index.bytes),
            bytes_reserved=float(self.index.reserved),
            uploads=float(len(self.uploads)),
            max_bytes=float(self.index.max_bytes),
            sessions_live=float(len(self.index.live)),
        )
        return stats
