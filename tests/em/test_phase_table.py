"""The executor manager's executor phases move only as their table (machines.PHASE) allows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import flamed.executor_manager
from flamed.core.machines import InvalidTransition
from flamed.executor_manager.executors import LocalExecutor
from flamed.executor_manager.machines import Phase, PhaseTrigger
from protocol.types import ResourceRequirement

pytestmark = pytest.mark.timeout(10)


def test_an_executor_goes_through_bind_serve_stop_and_back_to_idle() -> None:
    """Breaks if the table loses a move the executor manager makes in every bind."""
    executor = LocalExecutor("e1", ResourceRequirement())
    for trigger, phase in [
        (PhaseTrigger.start, Phase.Binding),
        (PhaseTrigger.entered, Phase.Bound),
        (PhaseTrigger.stop, Phase.Unbinding),
        (PhaseTrigger.stop, Phase.Unbinding),  # stopped again while stopping: no change
        (PhaseTrigger.gone, Phase.Idle),
    ]:
        executor.move(trigger)
        assert executor.phase is phase


@pytest.mark.parametrize(
    ("phase", "trigger"),
    [
        (Phase.Bound, PhaseTrigger.start),  # a second instance for a bound executor
        (Phase.Idle, PhaseTrigger.entered),  # entered with no instance
        (Phase.Unbinding, PhaseTrigger.entered),  # a stopping instance serving again
        (Phase.Idle, PhaseTrigger.gone),
    ],
)
def test_moves_the_table_does_not_list_raise(phase: Phase, trigger: PhaseTrigger) -> None:
    """Breaks if an illegal phase change (a bug of ours) passes silently instead of raising."""
    executor = LocalExecutor("e1", ResourceRequirement(), phase=phase)
    with pytest.raises(InvalidTransition):
        executor.move(trigger)
    assert executor.phase is phase


def test_no_module_of_the_executor_manager_sets_a_phase_but_through_the_table() -> None:
    """Breaks if a module assigns an executor's phase directly (`executor.phase = ...`): a move
    the table does not list would then pass silently. `LocalExecutor.move` is the one place."""
    package = Path(flamed.executor_manager.__file__).parent
    pattern = re.compile(r"\.phase\s*=[^=]")
    offenders = [
        f"{path.name}:{number}"
        for path in sorted(package.glob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line) and line.strip() != "self.phase = PHASE.next(self.phase, trigger)"
    ]
    assert offenders == []
