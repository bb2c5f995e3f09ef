"""The graceful stop of an executor manager: the drain that SIGTERM starts.

Rules: from the signal on, binds are refused (answered `ExecutorUnbound` with the tasks
launched with them as unstarted, so no retry is counted); a bound executor keeps no task
queued beyond what its instance already holds, and is unbound once its instance has nothing in
flight, its held-back queue reported unstarted; a binding executor is unbound at once. When
every executor is idle, or `stop_grace` is over (what was held back then goes out unstarted),
the node may stop. The drain never talks to the session manager and never stops the loop
itself: the manager sends the reports and stops when `step` says so. Pure, as the core it
drives (core.py): times come in as arguments, effects go out through the core.
"""

from __future__ import annotations

import logging

from flamed.executor_manager.core import ExecutorsCore
from flamed.executor_manager.machines import Phase
from protocol import backend as be

log = logging.getLogger("flamed.executor_manager")


class Drain:
    def __init__(self, holder: ExecutorsCore, node_name: str, grace: float, now: float) -> None:
        self.holder = holder
        self.node_name = node_name
        self.grace = grace
        #: when the drain gives up and stops the instances anyway
        self.deadline = now + grace
        #: per executor: tasks taken off its queue while it finishes what its instance holds
        self._held: dict[str, list[be.TaskAssignment]] = {}

    def announce(self) -> str:
        """Say in the log that the node is draining; returns the status line for systemd."""
        busy = self.busy()
        log.info(
            "node %s: draining on SIGTERM: %d executors busy; stopping in at most %.0fs",
            self.node_name,
            busy,
            self.grace,
        )
        return self.status()

    def status(self) -> str:
        return f"draining: {self.busy()} executors busy"

    def busy(self) -> int:
        """Executors not yet idle, or with an instance still there."""
        return sum(1 for e in self.holder.executors.values() if e.phase is not Phase.Idle or e.instance is not None)

    def step(self, now: float) -> bool:
        """Called each tick while draining. A bound executor keeps no task queued beyond what
        its instance already holds; once the instance has nothing in flight it is unbound and
        the queue is reported unstarted. True when all are idle or time is up: stop now. The
        effects it decided wait in the core (`take_effects`)."""
        holder = self.holder
        holder.now = max(holder.now, now)
        for executor in list(holder.executors.values()):
            if executor.phase is Phase.Bound:
                held = self._held.setdefault(executor.id, [])
                held.extend(executor.queue)
                executor.queue.clear()
                if not executor.in_flight:
                    executor.queue.extend(self._held.pop(executor.id))
                    holder.unbind(executor, "executor manager stopping")
            elif executor.phase is Phase.Binding:
                holder.unbind(executor, "executor manager stopping")
        busy = self.busy()
        if not busy:
            log.info("node %s: drained; stopping", self.node_name)
            return True
        if now >= self.deadline:
            log.warning("node %s: stop_grace is over with %d executors busy; stopping them", self.node_name, busy)
            for executor in holder.executors.values():  # what was held back goes out unstarted
                executor.queue.extendleft(reversed(self._held.pop(executor.id, [])))
            return True
        return False

    def refuse_binds(self, commands: list[be.ExecutorCommand]) -> list[be.ExecutorCommand]:
        """Binds are refused: each is answered `ExecutorUnbound` carrying the tasks launched
        with it as unstarted, so the session manager re-queues them elsewhere without counting
        a retry. Returns the other commands, in order."""
        refused: dict[str, be.ExecutorUnbound] = {}
        kept: list[be.ExecutorCommand] = []
        for command in commands:
            if isinstance(command, be.BindExecutor):
                refused[command.executor_id] = be.ExecutorUnbound(
                    executor_id=command.executor_id, session_id=command.session.session_id, reason="node is stopping"
                )
            elif isinstance(command, be.LaunchTasks) and command.executor_id in refused:
                keys = [be.TaskKey(task_id=t.task_id, attempt=t.attempt) for t in command.tasks]
                refused[command.executor_id].unstarted.extend(keys)
            else:
                kept.append(command)
        for report in refused.values():
            self.holder.report(report)
        return kept
