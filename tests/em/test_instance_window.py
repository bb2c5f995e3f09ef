"""How many tasks the executor manager keeps on an instance (lifecycle.py `pump`), driven
in-process against a real instance socket with a real DEALER standing in for the instance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from flamed.executor_manager import instance_window
from flamed.executor_manager.executors import LocalExecutor, Phase
from flamed.executor_manager.instances import Instance
from flamed.executor_manager.lifecycle import Executors, log
from flamed.transport import Loop, bind_router, close, connect_dealer
from flamed.transport.dropped import DroppedFrames
from protocol import codec
from protocol import instance as im
from protocol.types import ResourceRequirement
from tests.em.contexts import session, tasks


@pytest.fixture
def setup(workdir: Path) -> Iterator[tuple[Executors, LocalExecutor, zmq.Socket[bytes]]]:
    loop = Loop()
    endpoint = f"ipc://{workdir}/instances.sock"
    router = bind_router(endpoint)
    instance = connect_dealer(endpoint, b"e1")
    try:
        dropped = DroppedFrames(loop, log)
        holder = Executors(loop, router, endpoint, work_root=workdir, stop_timeout=1.0, dropped=dropped)
        executor = LocalExecutor("e1", ResourceRequirement(), phase=Phase.Bound, session=session("s1"))
        executor.instance = Instance.__new__(Instance)  # no process: only its routing id is used
        executor.instance.token = b"e1"
        holder.executors["e1"] = executor
        instance.send_multipart(codec.encode(im.SessionLeft(ok=True)))  # so the ROUTER knows the instance
        assert router.poll(5000)
        router.recv_multipart()
        yield holder, executor, instance
    finally:
        close(instance)
        close(router)


def invoked(instance: zmq.Socket[bytes]) -> list[int]:
    """Task ids of the InvokeTasks the instance got (one message expected)."""
    assert instance.poll(5000)
    message = codec.instance_command_codec().decode(instance.recv_multipart())
    assert isinstance(message, im.InvokeTasks)
    assert not instance.poll(50), "one InvokeTasks per top-up"
    return [t.task_id for t in message.tasks]


def test_window_follows_task_pace_and_suspects(setup: tuple[Executors, LocalExecutor, zmq.Socket[bytes]]) -> None:
    """Unknown or slow tasks: the running one and the next (a drain waits for little). Long
    tasks: the running one only. Fast tasks: a deep window in one message, topped up at half.
    A suspect near: one at a time. Breaks if fast tasks go one message per task again, or
    slow or long tasks pile up on an instance."""
    holder, executor, instance = setup
    executor.queue.extend(tasks([b"x"] * 200))
    holder.pump(executor)
    assert invoked(instance) == [1, 2]

    executor.in_flight.clear()
    executor.pace = 0.05  # slow tasks
    holder.pump(executor)
    assert invoked(instance) == [3, 4]

    executor.in_flight.clear()
    executor.pace = 1.0  # long tasks: the running one only, the next stays recallable
    holder.pump(executor)
    assert invoked(instance) == [5]
    holder.pump(executor)  # nothing more until its result
    assert not instance.poll(50)

    executor.in_flight.clear()
    executor.pace = 0.0001  # fast tasks
    holder.pump(executor)
    window = instance_window.INSTANCE_WINDOW
    assert invoked(instance) == list(range(6, 6 + window))
    holder.pump(executor)  # full: nothing more until half of it is done
    assert not instance.poll(50)
    for _ in range(window // 2):
        executor.in_flight.popleft()
    holder.pump(executor)
    assert invoked(instance) == list(range(6 + window, 6 + window + window // 2))

    executor.in_flight.clear()
    next_id = executor.queue[0].task_id
    holder.suspects.add(("s1", next_id + 3))
    holder.pump(executor)
    assert invoked(instance) == [next_id]
