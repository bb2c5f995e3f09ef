"""The session manager reads its backend in slices of time: a busy backend cannot hold clients'
replies for a long turn, and a cut slice loses no message."""

from __future__ import annotations

from collections import Counter

from flamed.session_manager.daemon import _sliced


def test_a_cut_slice_takes_nothing_it_does_not_hand_over() -> None:
    """Breaks if the slice pulled a message from the socket and then dropped it at the cut
    (a node's report lost), or if a cut were not counted (`backend_turns_cut_total`)."""
    source = iter(range(10))
    counters: Counter[str] = Counter()
    taken = list(_sliced(source, 0.0, counters, "backend_turns_cut"))
    assert taken == [0]
    assert list(source) == list(range(1, 10))  # still in the socket for the next turn
    assert counters["backend_turns_cut"] == 1


def test_a_slice_with_time_left_takes_everything_and_counts_no_cut() -> None:
    """Breaks if a backend read stopped before its time slice ran out."""
    counters: Counter[str] = Counter()
    assert list(_sliced(range(1000), 60.0, counters, "backend_turns_cut")) == list(range(1000))
    assert counters["backend_turns_cut"] == 0
