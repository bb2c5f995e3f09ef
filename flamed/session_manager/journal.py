"""The session manager's journal: each turn's records made durable before anything is sent.

Rules: `commit` appends the records of a turn to the `Storage` and commits them with one fsync
(group commit); when that fails the turn is rolled back (rollback.py): memory is re-read from
disk and the requests that wanted a change are answered `StorageUnavailable`, which is all the
returned outbox holds. After the turn's messages are sent, `after_commit` writes a snapshot
when the storage asks for one and keeps a timer so that under the `interval` fsync policy the
fsync happens by its deadline. While writes fail no snapshot is written: the log stays the
source of truth. Only the storage writes state files; without a `Storage` (tests) every turn
counts as durable.
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

if TYPE_CHECKING:
    from flamed.core.controller import Controller
    from flamed.core.records import AnyRecord
    from flamed.core.turn import Now
    from flamed.session_manager.durability import Recovered
    from flamed.session_manager.rollback import TurnGuard
    from flamed.storage import Storage
    from flamed.transport import Loop, Timer

log = logging.getLogger("flamed.session_manager")


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
        if storage.should_snapshot():
            self._write_snapshot(storage)
        deadline = storage.next_fsync_deadline()
        timer = self._fsync_timer
        if deadline is not None and (timer is None or timer.cancelled or timer.when != deadline):
            if timer is not None:
                timer.cancel()
            self._fsync_timer = self.loop.call_at(deadline, self._fsync_due)

    def _fsync_due(self) -> None:
        """`interval` policy: the records committed since the last fsync must be durable now."""
        if self.storage is None:
            return
        try:
            self.storage.commit(self.loop.now())
        except StorageError as exc:
            self.write_failure = str(exc)
            log.error("storage: %s", exc)

    def _write_snapshot(self, storage: Storage) -> None:
        """Synchronous: about a second per million tasks; the loop waits meanwhile."""
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
        """At a clean stop: a snapshot if records came since the last one (and writes work),
        then the storage is closed. The journal has no storage afterwards."""
        storage, self.storage = self.storage, None
        if storage is not None:
            try:
                if storage.stats()["records_since_snapshot"] and not self.write_failure:
                    self._write_snapshot(storage)
            finally:
                storage.close()
