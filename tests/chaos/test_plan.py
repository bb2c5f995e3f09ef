"""The chaos plan is pure and seeded: these tests need no daemons.

What would break: a failing seed that does not rerun the same schedule (the point of a seed),
faults that overlap when they must not (attribution to "the" active fault becomes a guess),
durations outside the bands around detection and detection + drain (the run would not probe
the edges it is meant to), tasks submitted twice or never, and a printed rerun command that
does not give the same settings back.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from tests.chaos.plan import SESSION_MANAGER, FaultKind, Settings, bands, make_plan

BENCH = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chaos_bench", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_same_seed_gives_the_same_plan_and_another_seed_another() -> None:
    """Breaks if anything in the plan depends on more than the settings (a clock, a global
    random state): a failing seed would not rerun exactly."""
    settings = Settings(seed=11, tasks=500, faults=12)
    assert make_plan(settings) == make_plan(Settings(seed=11, tasks=500, faults=12))
    assert make_plan(settings).faults != make_plan(Settings(seed=12, tasks=500, faults=12)).faults


def test_faults_do_not_overlap_by_default_and_never_share_a_target_with_overlap() -> None:
    """Breaks if two faults are active at once without --overlap, or if with it a target is
    hit again while an earlier fault still holds it (a kill of a frozen process)."""
    plan = make_plan(Settings(seed=5, tasks=100, faults=60))
    for before, after in zip(plan.faults, plan.faults[1:], strict=False):
        assert after.start >= before.end + Settings().gap_min - 1e-6
    overlapping = make_plan(Settings(seed=5, tasks=100, faults=60, overlap=True))
    assert any(b.start < a.end for a, b in zip(overlapping.faults, overlapping.faults[1:], strict=False))
    for i, fault in enumerate(overlapping.faults):
        for other in overlapping.faults[:i]:
            if other.target == fault.target:
                assert fault.start >= other.end, (other, fault)


def test_durations_cover_every_band_around_detection_and_drain() -> None:
    """Breaks if a duration falls outside its band or a band is never drawn: the run would
    miss outages just below or just above detection or detection + drain."""
    settings = Settings(seed=3, tasks=100, faults=200)
    table = bands(settings.timing)
    plan = make_plan(settings)
    for fault in plan.faults:
        low, high = table[fault.band]
        assert low - 0.001 <= fault.duration <= high + 0.001
    assert {f.band for f in plan.faults} == set(table)
    assert {f.kind for f in plan.faults} == set(FaultKind)
    assert all((f.target == SESSION_MANAGER) != f.kind.on_node for f in plan.faults)
    assert table["around-drain"][0] < settings.timing.detection_drain < table["around-drain"][1]
    assert table["around-detection"][0] < settings.timing.detection < table["around-detection"][1]


def test_every_task_is_submitted_once_and_bursts_fall_inside_their_fault() -> None:
    """Breaks if a task is submitted twice or never (the checks would report losses that are
    the plan's), or if a burst meant for an outage is sent outside it."""
    plan = make_plan(Settings(seed=9, tasks=2000, faults=10))
    seqs = [seq for s in plan.submissions for seq in s.seqs]
    assert sorted(seqs) == list(range(2000))
    faults = {f.index: f for f in plan.faults}
    bursts = [s for s in plan.submissions if s.burst_of >= 0]
    assert bursts
    for burst in bursts:
        fault = faults[burst.burst_of]
        assert fault.start <= burst.at <= fault.end
    for submission in plan.submissions:
        assert all(plan.tasks[seq].session == submission.session for seq in submission.seqs)
    failing = sum(t.fail for t in plan.tasks)
    assert 10 <= failing <= 80  # about 2% of 2000


def test_the_printed_command_gives_the_same_settings_back() -> None:
    """Breaks if `Settings.command()` (printed after every run to rerun its seed) leaves out
    or misspells an option, so the rerun would play another schedule."""
    bench = _bench()
    settings = Settings(seed=4, tasks=123, faults=5, drain=4.5, overlap=True, netns=False, kinds="em-kill,sm-stop")
    argv = settings.command().split()[2:]  # without "python bench/chaos.py"
    args = bench.parser().parse_args(argv)
    again = Settings(**{name: getattr(args, name) for name in Settings.__dataclass_fields__})
    assert again == settings
