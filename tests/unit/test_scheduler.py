"""The pure scheduler: capacity, instance bounds, priority, fair share, release rules."""

from __future__ import annotations

import pytest

from flamed.core.scheduler import ClusterView, ExecutorView, NodeView, SessionView, plan
from protocol.types import ExecutorState, ResourceRequirement

pytestmark = pytest.mark.timeout(10)

ONE = ResourceRequirement(cpu=1, memory=1 << 30)


def session(sid: str, pending: int = 0, running: int = 0, **kw: object) -> SessionView:
    fields: dict[str, object] = {
        "priority": 0,
        "creation_time": 0,
        "resreq": ONE,
        "min_instances": 0,
        "max_instances": None,
        "delay_release": 5.0,
    }
    fields.update(kw)
    return SessionView(id=sid, pending=pending, running=running, **fields)  # type: ignore[arg-type]  # the tests' SessionView fields, passed on untyped


def node(name: str, cpus: int = 4, *, drained: bool = False) -> NodeView:
    return NodeView(
        name=name,
        capacity=ResourceRequirement(cpu=cpus, memory=cpus << 30),
        max_executors=cpus,
        ready=True,
        drained=drained,
    )


def bound(
    eid: str,
    node_name: str,
    sid: str,
    in_flight: int = 0,
    idle_since: float | None = None,
    *,
    bound_since: float | None = None,
) -> ExecutorView:
    return ExecutorView(
        id=eid,
        node=node_name,
        state=ExecutorState.Bound,
        resreq=ONE,
        session_id=sid,
        reserved_for=None,
        in_flight=in_flight,
        idle_since=idle_since,
        bound_since=bound_since,
    )


def test_a_free_cluster_is_filled_in_one_pass_within_node_capacity() -> None:
    """Breaks if one plan leaves free slots unused while tasks wait, or puts more executors on a node than it
    has room for."""
    decisions = plan(ClusterView([session("s", pending=100)], [], [node("a", 4), node("b", 2)]), 0.0)
    per_node = {n: sum(1 for m, _ in decisions.create if m == n) for n in ("a", "b")}
    assert per_node == {"a": 4, "b": 2}


def test_demand_is_bounded_by_max_and_raised_by_min_instances() -> None:
    """Breaks if a session gets more executors than max_instances, or fewer than min_instances with no task
    pending."""
    capped = plan(ClusterView([session("s", pending=50, max_instances=2)], [], [node("a", 8)]), 0.0)
    assert len(capped.create) == 2
    warm = plan(ClusterView([session("s", min_instances=3)], [], [node("a", 8)]), 0.0)
    assert len(warm.create) == 3


def test_unready_and_drained_nodes_get_nothing() -> None:
    """Breaks if the scheduler places executors on a node that is not Ready or is drained."""
    nodes = [node("down", 4), node("drained", 4, drained=True), node("up", 1)]
    nodes[0].ready = False
    decisions = plan(ClusterView([session("s", pending=10)], [], nodes), 0.0)
    assert decisions.create == [("up", "s")]


def test_higher_priority_is_served_first_when_capacity_is_short() -> None:
    """Breaks if a lower-priority session takes capacity a higher-priority one is waiting for."""
    sessions = [session("low", pending=4, creation_time=1), session("high", pending=4, priority=5, creation_time=2)]
    decisions = plan(ClusterView(sessions, [], [node("a", 3)]), 0.0)
    assert [s for _, s in decisions.create] == ["high", "high", "high"]


def test_equal_sessions_share_by_dominant_share() -> None:
    """Breaks if two equal sessions do not split the cluster evenly (dominant resource fairness)."""
    sessions = [session("x", pending=10, creation_time=1), session("y", pending=10, creation_time=2)]
    decisions = plan(ClusterView(sessions, [], [node("a", 4)]), 0.0)
    assert sorted(s for _, s in decisions.create) == ["x", "x", "y", "y"]


def test_idle_bound_executor_is_released_only_after_delay_release() -> None:
    """Breaks if an idle executor is unbound before its session's delay_release has passed, or kept after it."""
    executors = [bound("e1", "a", "s", idle_since=10.0)]
    view = ClusterView([session("s", delay_release=5.0)], executors, [node("a")])
    assert plan(view, 12.0).unbind == []
    assert plan(view, 15.5).unbind == ["e1"]


def test_busy_executors_are_never_unbound_and_closed_sessions_let_go() -> None:
    """Breaks if an executor with a task in flight is unbound, or an idle one of a closed session is kept."""
    busy = [bound("e1", "a", "s", in_flight=1)]
    assert plan(ClusterView([session("s", open=False)], busy, [node("a")]), 99.0).unbind == []
    idle = [bound("e1", "a", "s")]
    assert plan(ClusterView([session("s", open=False)], idle, [node("a")]), 0.0).unbind == ["e1"]


def test_a_waiting_session_gets_executors_back_from_one_over_its_fair_share() -> None:
    """Breaks if a session holding the whole cluster keeps it while another session waits (no executor taken
    back)."""
    executors = [bound(f"e{i}", "a", "hog", idle_since=0.0) for i in range(4)]
    sessions = [session("hog", pending=10, running=0, creation_time=1), session("new", pending=10, creation_time=2)]
    decisions = plan(ClusterView(sessions, executors, [node("a", 4)]), 0.1)
    assert len(decisions.unbind) == 2, decisions


def test_dominant_share_counts_memory_and_gpu() -> None:
    """Breaks if fair share counts only CPUs, so memory- or GPU-heavy sessions take more than their share."""
    big_memory = ResourceRequirement(cpu=1, memory=4 << 30)
    gpu = ResourceRequirement(cpu=1, memory=1 << 30, gpu=1)
    nodes = [
        NodeView(name="a", capacity=ResourceRequirement(cpu=8, memory=16 << 30, gpu=2), max_executors=8, ready=True)
    ]
    sessions = [
        session("mem", pending=10, resreq=big_memory, creation_time=1),
        session("gpu", pending=10, resreq=gpu, creation_time=2),
        session("cpu", pending=10, creation_time=3),
    ]
    decisions = plan(ClusterView(sessions, [], nodes), 0.0)
    got = {s: sum(1 for _, t in decisions.create if t == s) for s in ("mem", "gpu", "cpu")}
    # mem: 4 GiB of 16 = 1/4 share each; gpu: 1 of 2 GPUs = 1/2 each; cpu: 1/8 each.
    assert got["gpu"] <= 2, got
    assert got["mem"] <= 4, got
    assert got["cpu"] >= got["mem"], got


def test_gpu_requests_on_a_cluster_without_gpus_get_nothing() -> None:
    """Breaks if an executor needing a GPU is placed on a node without one."""
    gpu = ResourceRequirement(cpu=1, memory=1 << 30, gpu=1)
    decisions = plan(ClusterView([session("g", pending=5, resreq=gpu)], [], [node("a", 4)]), 0.0)
    assert decisions.create == []


def test_policies_can_be_switched_off() -> None:
    """Breaks if the policies setting is ignored: priority, then age only, then fair share only must each
    decide the plan."""
    sessions = [session("old", pending=4, creation_time=1), session("vip", pending=4, priority=9, creation_time=2)]
    by_priority = plan(ClusterView(sessions, [], [node("a", 2)]), 0.0)
    assert [s for _, s in by_priority.create] == ["vip", "vip"]
    by_age = plan(ClusterView(sessions, [], [node("a", 2)]), 0.0, policies=())
    assert [s for _, s in by_age.create] == ["old", "old"]
    by_share = plan(ClusterView(sessions, [], [node("a", 2)]), 0.0, policies=("drf",))
    assert sorted(s for _, s in by_share.create) == ["old", "vip"]


def test_a_plan_says_whether_a_session_waits_for_capacity() -> None:
    """Breaks if `Plan.waiting` (the dispatcher plans again at once when an executor runs out of
    work while it is set) is set with room for every session, or unset when one waits."""
    sessions = [session("s1", pending=1), session("s2", pending=1, creation_time=1)]
    assert plan(ClusterView(sessions, [], [node("a", 2)]), 0.0).waiting is False
    assert plan(ClusterView(sessions, [], [node("a", 1)]), 0.0).waiting is True


def test_a_working_binding_keeps_its_executor_for_the_minimum_hold() -> None:
    """Breaks if an executor bound moments ago and working is reclaimed for another session's
    fair share (its start, paid a moment ago, wasted), or if it is kept past `min_hold`, or if
    an idle one is kept for the hold (nothing to lose: it goes at once)."""
    busy = [bound(f"e{i}", "a", "hog", in_flight=5, bound_since=1.0) for i in range(4)]
    sessions = [session("hog", pending=10, running=20, creation_time=1), session("new", pending=10, creation_time=2)]
    early = plan(ClusterView(sessions, busy, [node("a", 4)]), 1.2, min_hold=0.5)
    assert early.reclaim == []
    assert early.unbind == []
    late = plan(ClusterView(sessions, busy, [node("a", 4)]), 1.5, min_hold=0.5)
    assert len(late.reclaim) == 2, late
    idle = [bound(f"e{i}", "a", "hog", bound_since=1.0, idle_since=1.0) for i in range(4)]
    sessions[0] = session("hog", pending=10, creation_time=1)
    assert len(plan(ClusterView(sessions, idle, [node("a", 4)]), 1.1, min_hold=0.5).unbind) == 2
