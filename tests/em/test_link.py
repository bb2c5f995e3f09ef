"""BackendLink bookkeeping: backoff bounds, sequence checks, acknowledgements (no I/O)."""

from __future__ import annotations

import pytest

from flamed.executor_manager.link import BackendLink
from protocol import backend as be
from protocol.types import TaskState


def completion(task_id: int, executor_id: str = "e1") -> be.TaskCompleted:
    return be.TaskCompleted(
        executor_id=executor_id, session_id="s", task_id=task_id, attempt=1, state=TaskState.Succeed
    )


def registered(link: BackendLink, epoch: int = 7) -> None:
    link.registered_with(be.Registered(epoch=epoch, executors=[], heartbeat_interval=1.0, heartbeat_liveness=3), 0.0)


@pytest.mark.timeout(10)
def test_backoff_stays_between_min_and_max_and_grows() -> None:
    """Every retry path backs off (I6): never below min, never above max, ceiling doubling."""
    link = BackendLink(0.5, 16.0, 1.0, 5)
    delays = [link.next_backoff() for _ in range(40)]
    assert all(0.5 <= d <= 16.0 for d in delays)
    assert max(delays[10:]) > 2.0  # the ceiling grew (with overwhelming probability)
    registered(link)
    assert link.attempts == 0


@pytest.mark.timeout(10)
def test_messages_out_of_sequence_or_epoch_are_refused() -> None:
    """A gap or another epoch must not be trusted (the caller registers again)."""
    link = BackendLink(0.5, 16.0, 1.0, 5)
    registered(link, epoch=7)
    assert link.accept(7, 1, 0, 1.0) is None
    assert link.accept(7, 3, 0, 1.0) == "expected seq 2, got 3"
    assert link.accept(6, 2, 0, 1.0) is not None
    assert link.accept(7, 2, 0, 1.5) is None
    assert link.silent_for(2.0) == pytest.approx(0.5)
    assert link.silence_limit == 3.0


@pytest.mark.timeout(10)
def test_completions_are_kept_until_acknowledged_and_resent_if_still_wanted() -> None:
    """Unacknowledged completions survive a re-registration for tasks the snapshot lists."""
    link = BackendLink(0.5, 16.0, 1.0, 5)
    registered(link)
    seq1 = link.next_seq(0.0)
    link.keep(seq1, [completion(1), completion(2)])
    seq2 = link.next_seq(0.0)
    link.keep(seq2, [completion(3)])
    link.keep(0, [completion(4)])  # made while cut off
    link.acknowledged(seq1)
    assert [c.task_id for c in link.kept()] == [3, 4]
    resend = link.take_for_resend({("e1", 3, 1), ("e1", 4, 1), ("e2", 9, 1)})
    assert [c.task_id for c in resend] == [3, 4]
    assert not link.unacked
    assert link.not_resent == []
    link.keep(0, [completion(5)])  # a late completion of a task the snapshot gave to another node
    assert link.take_for_resend({("e1", 3, 1)}) == []
    assert [c.task_id for c in link.not_resent] == [5]
    registered(link, epoch=8)
    assert link.next_seq(0.0) == 1
