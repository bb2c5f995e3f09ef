"""The session manager reads and handles its backend in slices of time: a busy backend cannot
hold clients' replies for a long turn, and a cut slice loses no message."""

from __future__ import annotations

from collections import Counter

from flamed.session_manager.daemon import _sliced


def test_a_cut_slice_takes_nothing_it_does_not_hand_over() -> None:
    """Breaks if the slice pulled a message from the socket and then dropped it at the cut
    (a node's report lost), or if a cut were not counted (`backend_turns_cut_total`)."""
    source = iter(range(10))
    counters: Counter[str] = Counter()
    taken = list(_sliced(source, -1.0, 3, counters, "backend_turns_cut"))
    assert taken == [[0, 1, 2]]
    assert list(source) == list(range(3, 10))  # still in the socket for the next turn
    assert counters["backend_turns_cut"] == 1


def test_a_slice_with_time_left_takes_everything_and_counts_no_cut() -> None:
    """Breaks if a backend read stopped before its time slice ran out."""
    counters: Counter[str] = Counter()
    chunks = list(_sliced(iter(range(1000)), 60.0, 32, counters, "backend_turns_cut"))
    assert [n for chunk in chunks for n in chunk] == list(range(1000))
    assert max(len(chunk) for chunk in chunks) == 32
    assert counters["backend_turns_cut"] == 0


def test_the_slice_counts_the_handling_of_what_it_hands_over() -> None:
    """Breaks if only the reading counted against the slice: handling a node's report of many
    results costs many times its reading, and 20 ms of reading made turns of 180 ms."""
    clock = [0.0]
    counters: Counter[str] = Counter()
    source = iter(range(100))
    handled = []
    for chunk in _sliced(source, 0.02, 4, counters, "backend_turns_cut", clock=lambda: clock[0]):
        handled.extend(chunk)
        clock[0] += 0.008  # each chunk's handling: the third one runs past the slice
    assert handled == list(range(12))
    assert next(source) == 12
    assert counters["backend_turns_cut"] == 1
