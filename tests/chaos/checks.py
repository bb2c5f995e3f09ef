"""The invariants a chaos run must keep (DESIGN section 5), checked after the last heal from
the evidence. Pure functions of an `Evidence`; each returns a `Check`.

Correctness (`asserted`: the CI test fails on them): I1 nothing lost, I2 at most one recorded
completion, outputs right, retries within the limit, I4 legal node transitions, I5 both sides
agree and no orphan instance, I7 no executor placed on a node that is not Ready, no crash, no
hung or failed client. Reported only (it depends on timing and load): I6, the CPU time of the
daemons waiting for a peer that is away.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from protocol.types import Task, TaskState
from tests.chaos.attribution import node_events
from tests.chaos.evidence import Evidence
from tests.chaos.payload import FAILURE_TEXT, decode, expected_output
from tests.chaos.plan import FaultKind

#: node transitions the design allows (I4): (from, to); "" = first sight
LEGAL = {
    ("", "Ready"),
    ("Ready", "Ready"),  # registered again on a live link (a fresh epoch)
    ("Ready", "Unknown"),
    ("Unknown", "Ready"),
    ("Unknown", "NotReady"),
    ("NotReady", "Ready"),
}
#: Ready -> NotReady at once is legal only for a goodbye (an orderly stop)
GOODBYE = "executor manager stopped"
#: a restarted session manager loads every node not cleaned up as Unknown (R8), also one
#: that was Unknown already
RESTART = "after restart"
RETRY_LIMIT_TEXT = "retry limit exceeded"
EXAMPLES = 10


@dataclass
class Check:
    name: str
    ok: bool
    asserted: bool
    detail: str
    examples: list[str] = field(default_factory=list)


def check_all(evidence: Evidence, hot_loop_cpu: float) -> list[Check]:
    return [
        nothing_lost(evidence),
        recorded_once(evidence),
        outputs_right(evidence),
        retries_within_limit(evidence),
        node_transitions(evidence),
        both_sides_agree(evidence),
        no_executor_on_unready_node(evidence),
        no_crash(evidence),
        no_hung_or_failed_client(evidence),
        no_hot_loop(evidence, hot_loop_cpu),
    ]


def nothing_lost(evidence: Evidence) -> Check:
    """I1: every submitted task exists once and is terminal (nodes are all back at the end,
    so a Pending task has a capable node: it is lost); the client got every result."""
    problems: list[str] = []
    seen: Counter[int] = Counter()
    for session, tasks in evidence.tasks.items():
        for task in tasks:
            payload = decode(task.input)
            if payload is not None:
                seen[payload.seq] += 1
            if not task.state.is_terminal:
                problems.append(f"{session}/{task.id} (seq {payload.seq if payload else '?'}) still {task.state}")
    for seq in evidence.records:
        if seen[seq] == 0:
            problems.append(f"task seq {seq} was submitted but the session manager does not have it")
        elif seen[seq] > 1:
            problems.append(f"task seq {seq} exists {seen[seq]} times")
    problems += evidence.settle_notes
    unanswered = [r.seq for r in evidence.records.values() if r.done is None]
    problems += [f"the client never got the result of task seq {seq}" for seq in unanswered]
    total = sum(len(t) for t in evidence.tasks.values())
    return Check("I1 nothing lost", not problems, True, f"{total} tasks, {len(problems)} problems", problems[:EXAMPLES])


def recorded_once(evidence: Evidence) -> Check:
    """I2: one terminal record per task (the watch never saw two different ones, nor a
    terminal task become live again), and the client's result is the recorded one."""
    problems = [
        f"{s}/{t}: recorded {len(recs)} times: " + "; ".join(f"{r.state} at {r.completion_time}" for r in recs)
        for (s, t), recs in evidence.terminal.items()
        if len(recs) > 1
    ]
    problems += [f"{s}/{t} seen {state} after a terminal record" for s, t, state, _ in evidence.reopened]
    by_seq: dict[int, Task] = {}
    for tasks in evidence.tasks.values():
        for task in tasks:
            payload = decode(task.input)
            if payload is not None:
                by_seq[payload.seq] = task
    for record in evidence.records.values():
        listed = by_seq.get(record.seq)
        if listed is None or record.done is None or record.error is not None:
            continue  # errors the client got: `no_hung_or_failed_client`
        if listed.state is not TaskState.Succeed:
            problems.append(f"seq {record.seq}: the client got an output, the record says {listed.state}")
        elif record.output != listed.output:
            problems.append(f"seq {record.seq}: the client got {record.output!r}, the record says {listed.output!r}")
    detail = f"{len(evidence.terminal)} tasks watched to a terminal record, {len(problems)} problems"
    return Check("I2 at most one recorded completion", not problems, True, detail, problems[:EXAMPLES])


def outputs_right(evidence: Evidence) -> Check:
    """Succeed tasks return f(input); tasks failing on purpose fail with our text; any other
    failure is the retry limit; every recorded result comes from a run in the journals."""
    problems = []
    started = {(r.session, r.task_id) for r in evidence.starts()}
    retry_failures = 0
    for session, tasks in evidence.tasks.items():
        for task in tasks:
            payload = decode(task.input)
            if payload is None or task.input is None:
                problems.append(f"{session}/{task.id}: not a chaos input")
                continue
            if task.state is TaskState.Succeed:
                if payload.fail:
                    problems.append(f"{session}/{task.id}: succeeded, but fails on purpose")
                elif task.output != expected_output(task.input):
                    problems.append(f"{session}/{task.id}: output {task.output!r} is not f(input)")
            elif task.state is TaskState.Failed:
                message = task.message or ""
                if payload.fail and FAILURE_TEXT in message:
                    pass
                elif RETRY_LIMIT_TEXT in message.lower() and task.retry_count >= evidence.plan.settings.retry_limit:
                    retry_failures += 1
                else:
                    problems.append(f"{session}/{task.id}: failed with {message!r}")
            ran = (session, task.id) in started
            gave_up = task.state is TaskState.Failed and RETRY_LIMIT_TEXT in (task.message or "").lower()
            if task.state in (TaskState.Succeed, TaskState.Failed) and not ran and not gave_up:
                problems.append(f"{session}/{task.id}: {task.state} without a run in any journal")
    detail = f"{len(problems)} wrong, {retry_failures} failed by the retry limit"
    return Check("outputs right", not problems, True, detail, problems[:EXAMPLES])


def retries_within_limit(evidence: Evidence) -> Check:
    limit = evidence.plan.settings.retry_limit
    over = [
        f"{s}/{t.id}: retry_count {t.retry_count} > {limit}"
        for s, tasks in evidence.tasks.items()
        for t in tasks
        if t.retry_count > limit
    ]
    most = max((t.retry_count for tasks in evidence.tasks.values() for t in tasks), default=0)
    return Check("retries within the limit", not over, True, f"highest retry_count {most} (limit {limit})", over[:10])


def node_transitions(evidence: Evidence) -> Check:
    """I4: each node moves Ready -> Unknown -> NotReady in order (back to Ready by
    registering); straight from Ready to NotReady only by a goodbye."""
    problems = []
    nodes = node_events(evidence.events)
    moves = 0
    for node, states in nodes.states.items():
        last = ""
        for when, state, message in states:
            moves += 1
            goodbye = (last, state) == ("Ready", "NotReady") and GOODBYE in message
            reloaded = (last, state) == ("Unknown", "Unknown") and RESTART in message
            if (last, state) not in LEGAL and not goodbye and not reloaded:
                problems.append(f"{node}: {last or 'nothing'} -> {state} at {when - evidence.t0:.2f}s ({message})")
            last = state
    return Check("I4 node states legal", not problems, True, f"{moves} node transitions", problems[:EXAMPLES])


def both_sides_agree(evidence: Evidence) -> Check:
    """I5: after the last heal each executor manager holds what the session manager says it
    holds, every instance belongs to a listed executor of its node, and nothing is left once
    the daemons are stopped."""
    problems = list(evidence.agreement.detail) if not evidence.agreement.reached else []
    problems += [f"process {pid} still alive after every daemon stopped" for pid in evidence.leftovers]
    detail = (
        f"agreed {evidence.agreement.seconds:.1f}s after the settle started; "
        f"{len(evidence.instances_end)} instances at the end, {len(evidence.leftovers)} left after the stop"
    )
    return Check("I5 both sides agree, no orphans", not problems, True, detail, problems[:EXAMPLES])


def no_executor_on_unready_node(evidence: Evidence) -> Check:
    """I7: an executor is created only on a node that is Ready at that moment."""
    nodes = node_events(evidence.events)
    problems = []
    for when, executor, node in nodes.created:
        states = [s for t, s, _ in nodes.states.get(node, []) if t <= when]
        if states and states[-1] != "Ready":
            problems.append(f"executor {executor} created on {node} while {states[-1]} ({when - evidence.t0:.2f}s)")
    return Check("I7 executors only on Ready nodes", not problems, True, f"{len(nodes.created)} created", problems[:10])


def no_crash(evidence: Evidence) -> Check:
    problems = [
        f"{e.name} exited with {e.code} at {e.time - evidence.t0:.1f}s" for e in evidence.exits if not e.expected
    ]
    problems += [f"{name} exited with {code} on SIGTERM" for name, code in evidence.exit_codes.items() if code != 0]
    detail = f"{len(problems)} unexpected exits; tracebacks in logs: {sum(evidence.log_tracebacks.values())}"
    return Check("no daemon crash", not problems, True, detail, problems[:EXAMPLES])


def no_hung_or_failed_client(evidence: Evidence) -> Check:
    """Every blocking call returned within the client timeout, without an error; every task
    future completed, with the task's output or its own failure (on purpose, or the retry
    limit), never with an error of the SDK's."""
    timeout = evidence.plan.settings.client_timeout
    slow = [f"{c.name} took {c.seconds:.1f}s" for c in evidence.calls if c.seconds > timeout + 5.0]
    failed = [f"{c.name}: {c.error}" for c in evidence.calls if c.error]
    problems = slow + failed
    if evidence.unfinished:
        problems.append(f"{evidence.unfinished} task futures never completed")
    sdk_errors = [
        r
        for r in evidence.records.values()
        if r.error and FAILURE_TEXT not in r.error and RETRY_LIMIT_TEXT not in r.error.lower()
    ]
    problems += [f"seq {r.seq}: {r.error}" for r in sdk_errors]
    longest = max((c.seconds for c in evidence.calls), default=0.0)
    detail = (
        f"{len(evidence.calls)} blocking calls (longest {longest:.2f}s), {len(evidence.records)} futures, "
        f"{len(sdk_errors)} failed with an error of the SDK's"
    )
    if sdk_errors:
        first, last = min(r.submitted for r in sdk_errors), max(r.submitted for r in sdk_errors)
        detail += f" (submitted {first - evidence.t0:.1f}-{last - evidence.t0:.1f}s)"
    return Check("no hung or failed client", not problems, True, detail, problems[:EXAMPLES])


def no_hot_loop(evidence: Evidence, limit: float) -> Check:
    """I6 (reported): CPU seconds per second of outage of the daemons waiting for a peer that
    is away: every executor manager while the session manager is, the cut-off node's while its
    link is down."""
    problems = []
    worst = 0.0
    for run in evidence.faults:
        kind = run.fault.kind
        if kind in (FaultKind.sm_kill, FaultKind.sm_stop):
            waiting = evidence.plan.settings.node_names
        elif kind is FaultKind.link_cut and run.method == "veth":
            waiting = [run.fault.target]
        else:
            continue
        for name in waiting:
            if name in run.cpu_start and name in run.cpu_heal and run.duration > 0:
                rate = (run.cpu_heal[name] - run.cpu_start[name]) / run.duration
                worst = max(worst, rate)
                if rate > limit:
                    problems.append(f"fault #{run.fault.index} {kind}: {name} used {rate:.2f} CPU-s/s")
    return Check("I6 no hot loop", not problems, False, f"worst {worst:.3f} CPU-s per second away", problems[:10])
