"""A small fixed cluster as the subscription would push it, for Pilot and snapshot tests."""

from __future__ import annotations

import msgspec

from protocol import frontend as fe
from protocol.types import (
    ConnectionState,
    Executor,
    ExecutorState,
    Node,
    NodeState,
    ResourceRequirement,
    Session,
    SessionSpec,
    SessionState,
    Task,
    TaskState,
)

WALL = 1_760_000_000_000
GIB = 1 << 30


class Clock:
    """The app's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def node(name: str, state: NodeState = NodeState.Ready, age: float = 0.4, bound: int = 2) -> Node:
    connection = ConnectionState.Connected if state is NodeState.Ready else ConnectionState.Draining
    return Node(
        name=name,
        hostname=name,
        state=state,
        connection=connection,
        capacity=ResourceRequirement(cpu=4, memory=8 * GIB),
        allocatable=ResourceRequirement(cpu=4 - bound, memory=(8 - bound) * GIB),
        max_executors=4,
        last_heartbeat_age=age,
        executors={"Bound": bound} if bound else {},
    )


def session(sid: str, app: str = "flmping", state: SessionState = SessionState.Open, **counts: int) -> Session:
    """Session `sid`, created 65 s before WALL, with these task counts (succeed=..., running=...)."""
    made = Session(id=sid, spec=SessionSpec(application=app), state=state, creation_time=WALL - 65_000)
    return msgspec.structs.replace(made, **counts)


def executor(eid: str, node_name: str, sid: str | None, tasks: list[int]) -> Executor:
    state = ExecutorState.Bound if sid else ExecutorState.Idle
    return Executor(
        id=eid, node=node_name, state=state, session_id=sid, application="flmping" if sid else None, task_ids=tasks
    )


def snapshot() -> fe.ClusterSnapshot:
    return fe.ClusterSnapshot(
        request_id=2,
        nodes=[node("node-a"), node("node-b", bound=1)],
        executors=[
            executor("e1a", "node-a", "batch-1", [11, 13, 14]),  # runs 11; 13 and 14 wait behind it
            executor("e2a", "node-a", "batch-1", [12]),
            executor("e1b", "node-b", "render-7", [3]),
        ],
        sessions=[
            session("batch-1", pending=80, running=4, succeed=918),
            session("render-7", app="render", running=1, succeed=4, failed=1),
            # open for 0.4 s, 65 s ago
            session("old-3", state=SessionState.Closed, succeed=50, cancelled=2, completion_time=WALL - 64_600),
        ],
        events=[
            fe.ClusterEvent(time=WALL - 5000, kind="node", subject="node-a", message="registered (epoch 1): Ready"),
            fe.ClusterEvent(time=WALL - 3000, kind="session", subject="batch-1", message="created: Open (app flmping)"),
        ],
        stats={
            "tasks_completed_total": 973.0,
            "tasks_pending": 80,
            "tasks_running": 5,
            "tasks_succeed": 972,
            "tasks_failed": 1,
        },
        server_time=WALL,
    )


def tasks(sid: str = "batch-1") -> fe.TaskUpdates:
    return fe.TaskUpdates(
        request_id=9,
        tasks=[
            Task(
                id=11,
                session_id=sid,
                state=TaskState.Running,
                attempt=2,
                retry_count=1,
                creation_time=WALL - 4000,
                executor_id="e1a",
            ),
            Task(
                id=12, session_id=sid, state=TaskState.Running, attempt=1, creation_time=WALL - 3000, executor_id="e2a"
            ),
            Task(
                id=10,
                session_id=sid,
                state=TaskState.Succeed,
                attempt=1,
                creation_time=WALL - 9000,
                completion_time=WALL - 8500,
            ),
        ],
    )
