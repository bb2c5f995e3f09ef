"""The convergence table (converge.CONVERGE): every state a snapshot can name, against every
way the executor manager can hold the executor, has exactly one step, as the module says."""

from __future__ import annotations

import pytest

from flamed.executor_manager.converge import CONVERGE, Held, Step
from protocol.types import ExecutorState

pytestmark = pytest.mark.timeout(10)


def test_every_snapshot_state_and_holding_has_a_step() -> None:
    """Breaks if a pair is missing (the executor would silently be left as it is, the two sides
    disagreeing after a re-registration) or a table row lost its step."""
    named = [s for s in ExecutorState if s is not ExecutorState.Released]  # never in a snapshot
    assert {(s, h) for s in named for h in Held} == set(CONVERGE)


@pytest.mark.parametrize(
    ("state", "held", "step"),
    [
        (ExecutorState.Bound, Held.serving, Step.keep),
        (ExecutorState.Bound, Held.none, Step.not_held),  # the instance died while cut off
        (ExecutorState.Bound, Held.stopping, Step.nothing),
        (ExecutorState.Binding, Held.other, Step.bind),
        (ExecutorState.Idle, Held.serving, Step.stop_quietly),
        (ExecutorState.Unbinding, Held.none, Step.unbound),
        (ExecutorState.Releasing, Held.serving, Step.release),
    ],
)
def test_the_rows_the_design_names(state: ExecutorState, held: Held, step: Step) -> None:
    """Breaks if a row of DESIGN 5's convergence changed meaning (work run twice or lost after
    a re-registration: e.g. a live binding dropped, or a dead one reported as held)."""
    assert CONVERGE[(state, held)] is step
