"""The session manager's turn policy (turns.py): the backend is read and handled in slices of
time, a cut slice loses no message, and the frontend gets its turn between two chunks of node
messages, within a budget per loop turn."""

from __future__ import annotations

from collections import Counter

from flamed.session_manager.turns import TurnBudget, sliced


def budget(seconds: float, clock: list[float] | None = None) -> TurnBudget:
    """A budget begun for loop turn 0, on a fake clock when one is given."""
    made = TurnBudget(seconds) if clock is None else TurnBudget(seconds, clock=lambda: clock[0])
    made.begin(0)
    return made


def test_a_cut_slice_takes_nothing_it_does_not_hand_over() -> None:
    """Breaks if the slice pulled a message from the socket and then dropped it at the cut
    (a node's report lost), or if a cut were not counted (`backend_turns_cut_total`)."""
    source = iter(range(10))
    counters: Counter[str] = Counter()
    taken = list(sliced(source, budget(-1.0), 3, counters, "backend_turns_cut"))
    assert taken == [[0, 1, 2]]
    assert list(source) == list(range(3, 10))  # still in the socket for the next turn
    assert counters["backend_turns_cut"] == 1


def test_a_slice_with_time_left_takes_everything_and_counts_no_cut() -> None:
    """Breaks if a backend read stopped before its time slice ran out."""
    counters: Counter[str] = Counter()
    chunks = list(sliced(iter(range(1000)), budget(60.0), 32, counters, "backend_turns_cut"))
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
    for chunk in sliced(source, budget(0.02, clock), 4, counters, "backend_turns_cut"):
        handled.extend(chunk)
        clock[0] += 0.008  # each chunk's handling: the third one runs past the slice
    assert handled == list(range(12))
    assert next(source) == 12
    assert counters["backend_turns_cut"] == 1


def test_the_frontend_is_looked_at_after_every_chunk_of_node_messages() -> None:
    """Breaks if clients waited for a whole backend slice (or the whole turn): under a flood of
    node messages a client's Ping was answered after hundreds of milliseconds."""
    events: list[str] = []
    counters: Counter[str] = Counter()

    def frontend() -> None:
        events.append("frontend")

    for chunk in sliced(iter(range(10)), budget(60.0), 4, counters, "cut", between=frontend):
        events.append(f"{len(chunk)} node messages")
    assert events == ["4 node messages", "frontend", "4 node messages", "frontend", "2 node messages", "frontend"]


def test_the_frontend_s_time_is_not_counted_against_the_backend_s_slice() -> None:
    """Breaks if serving clients between chunks shortened the backend's slice: a busy frontend
    would then cut the nodes' share of each turn (results, heartbeats) to one chunk."""
    clock = [0.0]
    counters: Counter[str] = Counter()

    def busy_frontend() -> None:
        clock[0] += 0.05  # clients take longer than the whole backend slice

    handled = []
    for chunk in sliced(iter(range(100)), budget(0.02, clock), 4, counters, "cut", between=busy_frontend):
        handled.extend(chunk)
        clock[0] += 0.008
    assert handled == list(range(12))  # as many chunks as without the frontend's time
    assert counters["cut"] == 1


def test_a_turn_budget_is_shared_by_every_pass_of_the_turn_and_renewed_the_next() -> None:
    """Breaks if each look at the frontend within a turn got a fresh budget (a flooding client
    served between every chunk of node messages would take over the turn), or if a spent budget
    carried over to the next turn (clients starved)."""
    clock = [0.0]
    budget = TurnBudget(0.05, clock=lambda: clock[0])
    assert budget.begin(turn=1)
    clock[0] += 0.03
    assert not budget.over()
    assert budget.begin(turn=1)  # taken up again within the turn: what is left of the budget
    clock[0] += 0.03
    assert budget.over()
    assert not budget.begin(turn=1)  # spent for this turn
    assert budget.begin(turn=2)  # a new turn, a new budget
    assert not budget.over()


def test_a_second_read_in_the_same_turn_gets_what_is_left_of_the_turn_s_slice() -> None:
    """Breaks if the tick's read of the backend (before judging silences) got a slice of its
    own: turns of two backend slices, and a client's Ping waiting behind both."""
    clock = [0.0]
    counters: Counter[str] = Counter()
    shared = budget(0.02, clock)
    source = iter(range(100))
    for _ in sliced(source, shared, 4, counters, "cut"):
        clock[0] += 0.008
    assert next(source) == 12
    assert not shared.begin(0)  # the tick, later in the same turn: nothing more to read
    assert shared.begin(1)  # the next turn
