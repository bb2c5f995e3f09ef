"""Attribution and checks on made-up evidence (pure functions, no daemons).

What would break: a re-execution blamed on the wrong fault or classified the wrong way (an
executor-manager kill counted as a hole, a hole counted as expected), a stale start (issue 16
hole 2) taken for an ordinary rerun, an illegal node transition let through (I4), a task
recorded twice not seen (I2), or counters summed wrongly across session-manager restarts.
"""

from __future__ import annotations

from protocol.types import Event, Task, TaskState
from tests.chaos.attribution import NO_RETRY, Rerun, attribute, node_events, recovery_timings
from tests.chaos.checks import node_transitions, recorded_once
from tests.chaos.evidence import Agreement, Evidence, FaultRun, Run, log_events
from tests.chaos.observer import SeenEvent, TerminalRecord
from tests.chaos.plan import Fault, FaultKind, Settings, make_plan
from tests.chaos.report import summed

WINDOW = 8.0
DD = Settings().timing.detection_drain  # 5.0 s


def fault(index: int, kind: FaultKind, target: str, start: float, duration: float) -> FaultRun:
    return FaultRun(Fault(index, kind, target, start, duration, "test"), start=start, heal=start + duration)


def run(task: int, node: str, executor: str, at: float) -> Run:
    return Run("start", "s", task, task, node, executor, 1000 + task, at)


def retried(task: int, *retries: tuple[float, str]) -> Task:
    events = [Event(code=0, message=f"Task was retried: {why}", creation_time=int(t * 1000)) for t, why in retries]
    return Task(id=task, session_id="s", state=TaskState.Succeed, events=events)


def node_event(at: float, node: str, message: str) -> SeenEvent:
    return SeenEvent(at, "node", node, message)


def evidence(
    faults: list[FaultRun],
    runs: list[Run],
    events: list[SeenEvent] | None = None,
    tasks: list[Task] | None = None,
) -> Evidence:
    return Evidence(
        plan=make_plan(Settings(tasks=4, faults=0)),
        namespaced=True,
        t0=0.0,
        stopped_at=1000.0,
        faults=faults,
        records={},
        calls=[],
        tasks={"s": tasks or []},
        runs=runs,
        events=events or [],
        node_sights=[],
        terminal={},
        reopened=[],
        stats=[],
        exits=[],
        exit_codes={},
        agreement=Agreement(reached=True),
        instances_end=[],
        leftovers=[],
        unfinished=0,
        sm_ready=[],
        log_tracebacks={},
    )


def only(reruns: list[Rerun]) -> Rerun:
    assert len(reruns) == 1, reruns
    return reruns[0]


def test_a_rerun_after_its_executor_manager_was_killed_is_expected() -> None:
    """The killed node's run is given up while the kill lasts: expected, no hole."""
    e = evidence(
        [fault(0, FaultKind.em_kill, "n1", 100.0, 3.0)],
        [run(1, "n1", "e1", 99.5), run(1, "n2", "e2", 102.5)],
        [SeenEvent(102.1, "executor", "e1", "removed")],
        [retried(1, (102.1, "executor manager of n1 restarted"))],
    )
    rerun = only(attribute(e, WINDOW))
    assert (rerun.fault, rerun.expected, rerun.hole, rerun.stale) == (0, True, "", False)
    assert rerun.why == "executor-manager kill"
    assert rerun.previous is not None
    assert rerun.previous.node == "n1"


def test_a_node_back_before_its_drain_expired_but_cleaned_up_is_hole_3() -> None:
    """Frozen for less than detection + drain, cleaned up after it was back: unexpected."""
    e = evidence(
        [fault(0, FaultKind.em_stop, "n1", 100.0, DD - 0.5)],
        [run(1, "n1", "e1", 99.0), run(1, "n2", "e2", 105.0)],
        [
            node_event(102.0, "n1", "silent: Unknown (no message for 2.0s)"),
            node_event(104.7, "n1", "cleaned_up: NotReady"),
        ],
        [retried(1, (104.7, "node n1 cleaned up: drain timeout expired"))],
    )
    rerun = only(attribute(e, WINDOW))
    assert (rerun.expected, rerun.hole) == (False, "3")
    assert "before its drain expired" in rerun.why


def test_a_drain_that_ran_out_while_the_node_was_still_cut_off_is_expected() -> None:
    """Its last heartbeat came before the fault, so the drain can end inside an outage a
    little shorter than detection + drain: the node really was away past its drain."""
    e = evidence(
        [fault(0, FaultKind.link_cut, "n1", 100.0, DD - 0.1)],
        [run(1, "n1", "e1", 99.0), run(1, "n2", "e2", 105.0)],
        [node_event(104.6, "n1", "cleaned_up: NotReady (drain timeout expired)")],
        [retried(1, (104.6, "node n1 cleaned up: drain timeout expired"))],
    )
    rerun = only(attribute(e, WINDOW))
    assert rerun.expected
    assert rerun.why == "drain expired while the node was still cut off"


def test_a_live_node_cleaned_up_after_a_session_manager_restart_is_hole_1() -> None:
    """The session manager was away for less than detection + drain; the node lived on but
    re-registered too late: unexpected, hole 1."""
    e = evidence(
        [fault(0, FaultKind.sm_kill, "sm", 100.0, 3.5)],
        [run(1, "n1", "e1", 99.0), run(1, "n2", "e2", 106.8)],
        [node_event(106.5, "n1", "cleaned_up: NotReady (drain timeout expired)")],
        [retried(1, (106.5, "node n1 cleaned up: drain timeout expired"))],
    )
    rerun = only(attribute(e, WINDOW))
    assert (rerun.fault, rerun.expected, rerun.hole) == (0, False, "1")


def test_a_session_manager_away_past_detection_and_drain_excuses_no_rerun() -> None:
    """Its restart gives every node a fresh drain: a live node cleaned up afterwards is hole 1
    however long the session manager was away (the issue's words alone would excuse it)."""
    e = evidence(
        [fault(0, FaultKind.sm_kill, "sm", 100.0, DD + 3.0)],
        [run(1, "n1", "e1", 99.0), run(1, "n2", "e2", 112.0)],
        [node_event(111.5, "n1", "cleaned_up: NotReady (drain timeout expired)")],
        [retried(1, (111.5, "node n1 cleaned up: drain timeout expired"))],
    )
    rerun = only(attribute(e, WINDOW))
    assert (rerun.expected, rerun.hole, rerun.literal) == (False, "1", True)


def test_a_cleanup_is_blamed_on_the_fault_that_started_its_drain_not_on_the_next_one() -> None:
    """A restarted session manager loads its nodes Unknown and cleans up those that do not
    register within the drain, possibly after the next fault began (on another node): the
    rerun belongs to the session-manager fault (hole 1), and so does the NotReady timing."""
    e = evidence(
        [fault(0, FaultKind.sm_kill, "sm", 100.0, 7.0), fault(1, FaultKind.em_stop, "n2", 110.0, 2.0)],
        [run(1, "n1", "e1", 99.0), run(1, "n3", "e3", 110.6)],
        [
            node_event(107.3, "n1", "silent: Unknown after restart; drain timer 3.0s"),
            node_event(110.3, "n1", "cleaned_up: NotReady (drain timeout expired); its executors released"),
        ],
        [retried(1, (110.3, "node n1 cleaned up: drain timeout expired"))],
    )
    rerun = only(attribute(e, WINDOW))
    assert (rerun.fault, rerun.hole, rerun.blamed_at) == (0, "1", 107.3)
    timings = recovery_timings(e, [rerun], WINDOW)
    assert round(timings[0]["to_not_ready"] or 0, 3) == 10.3
    assert timings[1]["to_not_ready"] is None


def test_a_start_on_an_executor_already_removed_is_a_stale_start_even_after_a_long_outage() -> None:
    """Frozen past detection + drain, the node's queued task went elsewhere (not a rerun: it
    had not run); the resumed executor manager then started it too: that start is the
    re-execution, unexpected (hole 2), although the outage itself was long."""
    e = evidence(
        [fault(0, FaultKind.em_stop, "n1", 100.0, DD + 1.0)],
        [run(1, "n2", "e2", 105.3), run(1, "n1", "e1", 106.1)],
        [SeenEvent(105.0, "executor", "e1", "removed")],
        [retried(1, (105.0, "node n1 cleaned up: drain timeout expired"))],
    )
    rerun = only(attribute(e, WINDOW))
    assert (rerun.stale, rerun.expected, rerun.hole, rerun.fault) == (True, False, "2", 0)
    assert rerun.start.node == "n1"
    assert rerun.previous is None


def test_a_rerun_with_no_fault_around_is_unexpected() -> None:
    """Breaks if the chaos checker excuses a rerun that no fault explains."""
    e = evidence([fault(0, FaultKind.em_kill, "n1", 10.0, 1.0)], [run(1, "n1", "e1", 40.0), run(1, "n1", "e3", 50.0)])
    rerun = only(attribute(e, WINDOW))
    assert (rerun.fault, rerun.expected, rerun.reason) == (None, False, NO_RETRY)


def test_a_kill_of_another_node_does_not_explain_a_rerun() -> None:
    """Breaks if a kill on one node is taken to explain a rerun of a task on another node."""
    e = evidence(
        [fault(0, FaultKind.em_kill, "n2", 100.0, 3.0)],
        [run(1, "n1", "e1", 99.0), run(1, "n3", "e3", 101.0)],
        tasks=[retried(1, (100.5, "lost"))],
    )
    rerun = only(attribute(e, WINDOW))
    assert not rerun.expected
    assert "another node" in rerun.why


def test_recovery_timings_follow_the_node_events() -> None:
    """fault -> Unknown, -> NotReady, -> first rerun; heal -> Ready."""
    e = evidence(
        [fault(0, FaultKind.em_kill, "n1", 100.0, 6.0)],
        [run(1, "n1", "e1", 99.0), run(1, "n2", "e2", 105.5)],
        [
            node_event(101.8, "n1", "silent: Unknown (no message for 2.0s)"),
            node_event(104.8, "n1", "cleaned_up: NotReady (drain timeout expired)"),
            node_event(106.4, "n1", "registered (epoch 5): Ready"),
        ],
        [retried(1, (104.8, "node n1 cleaned up: drain timeout expired"))],
    )
    timings = recovery_timings(e, attribute(e, WINDOW), WINDOW)[0]
    assert round(timings["to_unknown"] or 0, 3) == 1.8
    assert round(timings["to_not_ready"] or 0, 3) == 4.8
    assert round(timings["to_rerun"] or 0, 3) == 5.5
    assert round(timings["heal_to_ready"] or 0, 3) == 0.4


def test_node_transitions_out_of_order_are_caught_and_a_goodbye_is_allowed() -> None:
    """I4: Ready -> NotReady without passing Unknown is illegal unless the node said goodbye;
    NotReady -> Unknown is always illegal."""
    good = [
        node_event(1.0, "n1", "registered (epoch 1): Ready"),
        node_event(2.0, "n1", "silent: Unknown (no message for 2.0s)"),
        node_event(2.5, "n1", "silent: Unknown after restart; drain timer 3.0s"),
        node_event(5.0, "n1", "cleaned_up: NotReady (drain timeout expired)"),
        node_event(6.0, "n1", "registered (epoch 2): Ready"),
        node_event(9.0, "n1", "cleaned_up: NotReady (executor manager stopped)"),
    ]
    assert node_transitions(evidence([], [], good)).ok
    bad = [*good[:2], node_event(3.0, "n1", "cleaned_up: NotReady (x)"), node_event(4.0, "n1", "silent: Unknown (y)")]
    check = node_transitions(evidence([], [], bad))
    assert not check.ok
    assert "NotReady -> Unknown" in check.examples[0]
    jump = [good[0], node_event(3.0, "n1", "cleaned_up: NotReady (drain timeout expired)")]
    assert not node_transitions(evidence([], [], jump)).ok


def test_two_different_terminal_records_of_a_task_break_i2() -> None:
    """Breaks if the chaos checker accepts a task recorded terminal twice, or reopened after it was terminal
    (invariant I2)."""
    e = evidence([], [])
    e.terminal = {("s", 1): [TerminalRecord("Succeed", 10, ""), TerminalRecord("Succeed", 12, "")]}
    assert not recorded_once(e).ok
    e.terminal = {("s", 1): [TerminalRecord("Succeed", 10, "")]}
    e.reopened = [("s", 1, "Running", 20.0)]
    assert not recorded_once(e).ok


def test_counters_are_summed_across_session_manager_restarts() -> None:
    """GetStats totals restart at zero with the session manager: sum each stretch's peak."""
    samples = [(0.0, {"a": 1.0}), (1.0, {"a": 5.0}), (2.0, {"a": 2.0}), (3.0, {"a": 4.0}), (4.0, {})]
    assert summed(samples, "a") == 9.0


LOG = """\
=== chaos: start 2 of sm at 1796200512.000
2026-12-02 08:35:01,991 INFO flamed.session_manager[9]: node n1: Unknown after restart; drain timer 3.0s
2026-12-02 08:35:02,531 INFO flamed.session_manager[9]: node n1: Ready (epoch 4, 2 executors kept)
2026-12-02 08:35:05,800 INFO flamed.session_manager[9]: executor 0f63810089: created on n1 for session chaos-0
2026-12-02 08:35:09,417 WARNING flamed.session_manager[9]: node n1: Unknown (no message for 2.0s); cleanup in 3.0s
2026-12-02 08:35:12,417 INFO flamed.session_manager[9]: executor 0f63810089 on n1: released (node n1 cleaned up: \
drain timeout expired)
2026-12-02 08:35:12,418 WARNING flamed.session_manager[9]: node n1: NotReady (drain timeout expired); its executors \
released
2026-12-02 08:35:13,001 INFO flamed.session_manager[9]: node n1: stopping (its executor manager is draining): no new \
executors or tasks
"""


def test_the_session_managers_log_gives_the_node_and_executor_changes() -> None:
    """Node changes are read from the session manager's log (subscription pushes drop events
    past 200): breaks if its wording drifts away from what `log_events` recognises."""
    found = log_events(LOG)
    nodes = node_events(found)
    assert [state for _, state, _ in nodes.states["n1"]] == ["Unknown", "Ready", "Unknown", "NotReady"]
    assert nodes.created == [(found[2].time, "0f63810089", "n1")]
    assert nodes.removed == {"0f63810089": found[4].time}
    assert round(found[1].time - found[0].time, 3) == 0.54
