"""The session manager's journal: each turn's records made durable before anything is sent.

Rules: `commit` appends the records of a turn to the `Storage` and commits them with one fsync
(group commit); when that fails the turn is rolled back (rollback.py): memory is re-read from
disk and the requests that wanted a change are answered `StorageUnavailable`, which is all the
returned outbox holds. After the turn's messages are sent, `after_commit` starts a snapshot
when the storage asks for one and keeps a timer so that under the `interval` fsync policy the
fsync happens by its deadline. While writes fail no snapshot is written: the log stays the
source of truth.

Snapshots off the loop, by compaction: the loop only closes the active log segment
(`Storage.begin_snapshot`) and starts a compactor (`flamed.storage.compaction`), a separate
process sharing no memory with this one that builds the snapshot from the previous snapshot and
the closed segments, as a restart would. The loop pays the segment switch and a `posix_spawn`
(about a millisecond, whatever the state's size) and, when the compactor reports on its pipe,
the bookkeeping (old snapshots and segments deleted). One compactor at a time; a rollback and
the stop kill it (the stop writes its snapshot in process, the loop having stopped). A small
state (`COMPACT_ABOVE_TASKS`) is snapshotted on the loop: a few milliseconds, and no log piling
up while a compactor starts.

Only the storage writes state files; without a `Storage` (tests) every turn counts as durable.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import msgspec

from flamed.core.snapshot import encode_state
from flamed.core.turn import Outbox
from flamed.session_manager.durability import reread_state
from flamed.storage import StorageError
from flamed.storage.background import BackgroundSnapshot, SnapshotResult
from flamed.storage.compaction import COMPACTOR_MODULE, remove_leftover, spawn_compactor

if TYPE_CHECKING:
    from flamed.core.controller import Controller
    from flamed.core.records import AnyRecord
    from flamed.core.turn import Now
    from flamed.session_manager.durability import Recovered
    from flamed.session_manager.rollback import TurnGuard
    from flamed.storage import Storage
    from flamed.transport import Loop, Timer

log = logging.getLogger("flamed.session_manager")

#: Up to this many tasks held (and sessions), a snapshot is written on the loop: encoding and
#: writing it takes a few milliseconds, less than starting a compactor.
COMPACT_ABOVE_TASKS = 20_000
COMPACT_ABOVE_SESSIONS = 1_000


class Journal:
    def __init__(
        self,
        loop: Loop,
        controller: Controller,
        guard: TurnGuard,
        storage: Storage | None,
        recovered: Recovered | None,
    ) -> None:
        self.loop = loop
        self.controller = controller
        self.guard = guard
        self.storage = storage
        self.recovered = recovered
        #: why the last commit failed; "" while writes work
        self.write_failure = ""
        self._last_snapshot: dict[str, float | int | str] = {}
        self._encoder = msgspec.msgpack.Encoder()
        self._fsync_timer: Timer | None = None
        #: the compactor writing a snapshot, if any, and when it was started (perf_counter)
        self._child: BackgroundSnapshot | None = None
        self._child_started = 0.0
        self._child_spawn_ms = 0.0
        self._child_loop_ms = 0.0
        #: write snapshots by compaction in another process (tests may turn it off)
        self.compact_in_child = True
        #: the module the compactor runs (tests give one that misbehaves)
        self.compactor_module = COMPACTOR_MODULE
        #: a state holding at most this many tasks (and `COMPACT_ABOVE_SESSIONS` sessions) is
        #: snapshotted on the loop
        self.compact_above_tasks = COMPACT_ABOVE_TASKS

    def commit(self, outbox: Outbox, now: Now) -> Outbox:
        """Make the turn's records durable; returns what to send for the turn (after a failed
        commit: the replies of the rolled-back turn only)."""
        try:
            self._persist(outbox.records)
        except StorageError as exc:
            return self._roll_back(outbox, str(exc), now)
        self.guard.mark_durable()
        return outbox

    def _persist(self, records: list[AnyRecord]) -> None:
        storage = self.storage
        if not records or storage is None:
            return
        encode = self._encoder.encode
        for record in records:
            storage.append(encode(record))
        storage.commit(self.loop.now())
        if self.write_failure:
            log.warning("storage: writes work again (after: %s)", self.write_failure)
            self.write_failure = ""

    def _roll_back(self, outbox: Outbox, reason: str, now: Now) -> Outbox:
        """The turn's records are not durable: make memory equal disk, fail the turn's writes."""
        assert self.storage is not None
        self._stop_child()  # it may be writing in the directory about to be re-read
        if reason != self.write_failure:
            log.error("storage: %s; failing the requests of this turn, reads are still served", reason)
        self.write_failure = reason
        self.controller.counters["storage_write_failures"] += 1
        started = time.perf_counter()
        state = reread_state(self.storage.state_dir)
        replies = self.guard.roll_back(outbox, state, reason, now)
        log.info(
            "storage: state re-read from disk after a failed write in %.3f s (%d records dropped)",
            time.perf_counter() - started,
            len(outbox.records),
        )
        return Outbox(replies=replies)

    def after_commit(self) -> None:
        """After the turn's messages are sent: a snapshot if the storage asks for one, and the
        fsync timer set to the storage's next deadline."""
        storage = self.storage
        if storage is None or self.write_failure:
            return
        if self._child is None and storage.should_snapshot():
            if self.compact_in_child and self._worth_a_compactor():
                self._start_snapshot(storage)
            else:
                self._write_snapshot(storage)
        deadline = storage.next_fsync_deadline()
        timer = self._fsync_timer
        if deadline is not None and (timer is None or timer.cancelled or timer.when != deadline):
            if timer is not None:
                timer.cancel()
            self._fsync_timer = self.loop.call_at(deadline, self._fsync_due)

    def _worth_a_compactor(self) -> bool:
        """A small state is written on the loop (a few milliseconds, sooner than a compactor
        starts: under fast traffic the log waiting for a slow snapshot is what fills the disk)."""
        sessions = self.controller.state.sessions
        if len(sessions) > COMPACT_ABOVE_SESSIONS:
            return True
        return sum(s.held for s in sessions.values()) > self.compact_above_tasks

    def _fsync_due(self) -> None:
        """`interval` policy: the records committed since the last fsync must be durable now."""
        if self.storage is None:
            return
        try:
            self.storage.commit(self.loop.now())
        except StorageError as exc:
            self.write_failure = str(exc)
            log.error("storage: %s", exc)

    def _start_snapshot(self, storage: Storage) -> None:
        """Close the active segment and start the compactor; the loop goes on (see the module
        rules)."""
        started = time.perf_counter()
        try:
            seq = storage.begin_snapshot()
        except StorageError as exc:
            log.error("storage: %s; no snapshot, the log remains the source of truth", exc)
            return
        spawning = time.perf_counter()
        try:
            child = spawn_compactor(storage.state_dir, seq, module=self.compactor_module)
        except OSError as exc:
            log.warning("snapshot: cannot start a compactor (%s); writing it on the loop", exc)
            self._write_snapshot(storage)
            return
        self._child, self._child_started = child, started
        done = time.perf_counter()
        self._child_spawn_ms = (done - spawning) * 1000
        self._child_loop_ms = (done - started) * 1000
        self.loop.add_reader(child.fd, self._child_done)

    def _child_done(self) -> None:
        """The compactor's pipe is readable: it is done (or dead)."""
        child = self._child
        if child is None:
            return
        self.loop.remove_reader(child.fd)
        self._finish(child.result())

    def _stop_child(self) -> None:
        """Kill a running compactor (before the directory is re-read, at stop): what it would
        have written, the caller writes or re-reads itself."""
        child = self._child
        if child is not None:
            self.loop.remove_reader(child.fd)
            self._finish(child.kill(), quiet=True)

    def _finish(self, result: SnapshotResult, *, quiet: bool = False) -> None:
        self._child = None
        seconds = time.perf_counter() - self._child_started
        if result.size is None:
            if self.storage is not None:
                remove_leftover(self.storage.state_dir, result.seq)
            if not quiet:
                log.error(
                    "storage: the snapshot of record %d failed: %s; the log remains the source of truth",
                    result.seq,
                    result.error,
                )
            return
        finishing = time.perf_counter()
        if self.storage is not None:
            self.storage.finish_snapshot(result.seq, result.size)
        finish_ms = (time.perf_counter() - finishing) * 1000
        self._last_snapshot = {
            "last_snapshot_wall_ms": time.time_ns() // 1_000_000,
            "last_snapshot_duration_ms": seconds * 1000,
            "last_snapshot_loop_ms": self._child_loop_ms + finish_ms,
            "last_snapshot_spawn_ms": self._child_spawn_ms,
            "last_snapshot_finish_ms": finish_ms,
        }
        log.info(
            "snapshot of record %d written (%d bytes) in %.3f s by a compactor (the loop spent %.1f ms: "
            "%.1f starting it, %.1f deleting what it covers)",
            result.seq,
            result.size,
            seconds,
            self._child_loop_ms + finish_ms,
            self._child_spawn_ms,
            finish_ms,
        )

    def _write_snapshot(self, storage: Storage) -> None:
        """Synchronous: about a second per million tasks; the loop waits meanwhile (at stop)."""
        started = time.perf_counter()
        try:
            payload = encode_state(self.controller.state)
            storage.write_snapshot(payload)
        except StorageError as exc:
            log.error("storage: %s; the log remains the source of truth", exc)
            return
        seconds = time.perf_counter() - started
        self._last_snapshot = {
            "last_snapshot_wall_ms": time.time_ns() // 1_000_000,
            "last_snapshot_duration_ms": seconds * 1000,
            "last_snapshot_loop_ms": seconds * 1000,
        }
        log.info("snapshot of record %d written (%d bytes) in %.3f s", storage.last_seq, len(payload), seconds)

    def stats(self) -> dict[str, float | int | str]:
        """Facts about the state directory for `GetStats` (empty without storage)."""
        if self.storage is None:
            return {}
        stats = self.storage.stats()
        stats.update(self._last_snapshot)
        stats["write_failure"] = self.write_failure
        if self.recovered is not None:
            stats["recovery_seconds"] = self.recovered.seconds
            stats["recovered_snapshot_seq"] = self.recovered.snapshot_seq
        return stats

    def close(self) -> None:
        """At a clean stop: a snapshot if records came since the last one or a compactor was
        stopped (and writes work), then the storage is closed. The journal has no storage afterwards."""
        compacting = self._child is not None
        self._stop_child()
        storage, self.storage = self.storage, None
        if storage is not None:
            try:
                if (compacting or storage.stats()["records_since_snapshot"]) and not self.write_failure:
                    self._write_snapshot(storage)
            finally:
                storage.close()
