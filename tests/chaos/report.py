"""What a chaos run found, as JSON (`bench/results/chaos-<seed>.json`) and as text: the
invariants, every re-execution with its cause, recalls per task, recovery timings per fault.
"""

from __future__ import annotations

import itertools
import os
import platform
import statistics
from collections import Counter
from dataclasses import asdict
from typing import Any

from protocol.types import TaskState
from tests.chaos.attribution import Rerun, attribute, node_state_of, recovery_timings
from tests.chaos.checks import RETRY_LIMIT_TEXT, check_all
from tests.chaos.evidence import Evidence
from tests.chaos.payload import decode

#: counters summed over session-manager restarts (GetStats totals restart from zero)
COUNTERS = (
    "task_recalls_total",
    "tasks_returned_total",
    "tasks_retried_total",
    "node_cleanups_total",
    "nodes_silent_total",
    "registrations_total",
    "stale_completions_rejected_total",
    "stale_node_messages_total",
    "session_manager_stalls_total",
    "tasks_failed_retry_limit_total",
)
TIMINGS = ("to_unknown", "to_not_ready", "to_rerun", "heal_to_ready", "sm_ready_to_ready")
#: session-manager message counters shown per fault (I6: no storm of messages while a peer is away)
MESSAGES = (
    "registrations_total",
    "heartbeats_total",
    "node_messages_total",
    "stale_node_messages_total",
    "node_message_gaps_total",
    "client_requests_total",
)


def attribution_window(evidence: Evidence) -> float:
    settings = evidence.plan.settings
    return settings.timing.detection_drain + settings.backoff_max + 2.0


def build(evidence: Evidence, hot_loop_cpu: float) -> dict[str, Any]:
    settings = evidence.plan.settings
    window = attribution_window(evidence)
    checks = check_all(evidence, hot_loop_cpu)
    reruns = attribute(evidence, window)
    timings = recovery_timings(evidence, reruns, window)
    return {
        "seed": settings.seed,
        "command": settings.command(),
        "settings": asdict(settings),
        "hosts": "network namespaces" if evidence.namespaced else "loopback (partitions by SIGSTOP)",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "system": platform.system(),
            "load": evidence.load,
        },
        "seconds": round(evidence.seconds, 1),
        "tasks": task_figures(evidence),
        "faults": [fault_row(evidence, i, timings) for i in range(len(evidence.faults))],
        "invariants": [asdict(c) for c in checks],
        "ok": all(c.ok for c in checks if c.asserted),
        "reexecutions": rerun_figures(reruns, evidence),
        "recalls": recall_figures(evidence),
        "counters": {name: summed(evidence.stats, name) for name in COUNTERS},
        "recovery": timing_figures(evidence, timings),
        "subscription": subscription_figures(evidence),
    }


def subscription_figures(evidence: Evidence) -> dict[str, int]:
    """How many of the node changes in the session manager's log its cluster subscription
    delivered (pushes carry at most 200 events and drop older ones)."""
    logged = [
        (e.subject, node_state_of(e.message), e.time)
        for e in evidence.events
        if e.kind == "node" and e.time < evidence.stopped_at  # the observer stops first
    ]
    pushed = [(e.subject, node_state_of(e.message), e.time) for e in evidence.subscription_events if e.kind == "node"]
    missing = sum(
        1
        for node, state, when in logged
        if state and not any(n == node and s == state and abs(t - when) < 0.05 for n, s, t in pushed)
    )
    return {
        "node_changes_logged": sum(1 for _, state, _ in logged if state),
        "node_changes_pushed": sum(1 for _, state, _ in pushed if state),
        "missing_from_subscription": missing,
        "full_pushes": evidence.full_pushes,
    }


def task_figures(evidence: Evidence) -> dict[str, int]:
    states: Counter[str] = Counter()
    retry_limit = 0
    for tasks in evidence.tasks.values():
        for task in tasks:
            states[str(task.state)] += 1
            if task.state is TaskState.Failed and RETRY_LIMIT_TEXT in (task.message or "").lower():
                retry_limit += 1
    starts = evidence.starts()
    per_task = Counter((r.session, r.task_id) for r in starts)
    return {
        "submitted": len(evidence.records),
        **{state.lower(): count for state, count in sorted(states.items())},
        "failed_on_purpose": sum(1 for t in evidence.plan.tasks if t.fail),
        "failed_retry_limit": retry_limit,
        "runs": len(starts),
        "tasks_run_more_than_once": sum(1 for n in per_task.values() if n > 1),
    }


def fault_row(evidence: Evidence, index: int, timings: dict[int, dict[str, float | None]]) -> dict[str, Any]:
    run = evidence.faults[index]
    fault = run.fault
    cpu = {
        name: round((run.cpu_heal[name] - run.cpu_start[name]) / run.duration, 4)
        for name in run.cpu_start
        if name in run.cpu_heal and run.duration > 0
    }
    return {
        "index": fault.index,
        "kind": str(fault.kind),
        "target": fault.target,
        "band": fault.band,
        "planned_start": fault.start,
        "planned_duration": fault.duration,
        "start": round(run.start - evidence.t0, 3),
        "duration": round(run.duration, 3),
        "method": run.method,
        "cpu_per_second": cpu,
        "messages": messages_during(evidence, index),
        "timings": {k: _round(v) for k, v in timings.get(fault.index, {}).items()},
    }


def messages_during(evidence: Evidence, index: int) -> dict[str, float] | None:
    """How much the session manager's message counters grew from the fault's start to its
    heal plus one attribution window (or the next fault); None if it restarted meanwhile."""
    run = evidence.faults[index]
    later = [f.start for f in evidence.faults if f.start > run.heal] + [evidence.stopped_at]
    end = min(run.heal + attribution_window(evidence), later[0])
    window = [stats for when, stats in evidence.stats if run.start - 1.5 <= when <= end]
    if len(window) < 2:
        return None
    first, last = window[0], window[-1]
    if any(b.get(k, 0.0) < a.get(k, 0.0) for a, b in itertools.pairwise(window) for k in MESSAGES):
        return None
    return {k.removesuffix("_total"): last.get(k, 0.0) - first.get(k, 0.0) for k in MESSAGES}


def rerun_figures(reruns: list[Rerun], evidence: Evidence) -> dict[str, Any]:
    by_fault: dict[str, dict[str, Any]] = {}
    for rerun in reruns:
        key = "none" if rerun.fault is None else str(rerun.fault)
        row = by_fault.setdefault(key, {"count": 0, "expected": 0, "why": Counter(), "hole": Counter()})
        row["count"] += 1
        row["expected"] += rerun.expected
        row["why"][rerun.why] += 1
        if not rerun.expected:
            row["hole"][rerun.hole] += 1
    unexpected = [r for r in reruns if not r.expected]
    return {
        "total": len(reruns),
        "expected": len(reruns) - len(unexpected),
        "unexpected": len(unexpected),
        "unexpected_by_the_issues_words": sum(1 for r in reruns if not r.literal),
        "unexpected_by_hole": dict(Counter(r.hole for r in unexpected)),
        "by_kind": dict(Counter(_kind(evidence, r) for r in reruns)),
        "by_fault": {k: {**v, "why": dict(v["why"]), "hole": dict(v["hole"])} for k, v in by_fault.items()},
        "list": [
            {
                "task": f"{r.session}/{r.task_id}",
                "seq": r.seq,
                "previous": None if r.previous is None else f"{r.previous.node}/{r.previous.executor}",
                "run": f"{r.start.node}/{r.start.executor}",
                "at": round(r.start.time - evidence.t0, 3),
                "abandoned_at": round(r.abandoned_at - evidence.t0, 3),
                "blamed_at": round(r.blamed_at - evidence.t0, 3),
                "reason": r.reason,
                "fault": r.fault,
                "lag": _round(r.lag),
                "expected": r.expected,
                "literal": r.literal,
                "why": r.why,
                "hole": r.hole,
            }
            for r in reruns
        ],
    }


def _kind(evidence: Evidence, rerun: Rerun) -> str:
    if rerun.fault is None:
        return "none"
    return str(evidence.faults[rerun.fault].fault.kind)


def recall_figures(evidence: Evidence) -> dict[str, Any]:
    """Launches of a task that were neither its first nor a retry: recalls and hand-backs
    (attempt - 1 - retry_count of every task that was launched)."""
    per_task = [t.attempt - 1 - t.retry_count for tasks in evidence.tasks.values() for t in tasks if t.attempt >= 1]
    highest = sorted(
        ((t.attempt - 1 - t.retry_count, s, t.id, decode(t.input)) for s, ts in evidence.tasks.items() for t in ts),
        key=lambda x: -x[0],
    )[:5]
    return {
        "tasks_launched": len(per_task),
        "tasks_recalled": sum(1 for n in per_task if n > 0),
        "total": sum(per_task),
        "mean": round(statistics.fmean(per_task), 4) if per_task else 0.0,
        "p99": _percentile(per_task, 0.99),
        "max": max(per_task, default=0),
        "histogram": dict(sorted(Counter(per_task).items())),
        "highest": [f"{s}/{t} (seq {p.seq if p else '?'}): {n}" for n, s, t, p in highest if n > 0],
        "max_attempt": max((t.attempt for ts in evidence.tasks.values() for t in ts), default=0),
    }


def timing_figures(evidence: Evidence, timings: dict[int, dict[str, float | None]]) -> dict[str, Any]:
    by_kind: dict[str, dict[str, list[float]]] = {}
    for run in evidence.faults:
        row = by_kind.setdefault(str(run.fault.kind), {})
        for name, value in timings.get(run.fault.index, {}).items():
            if value is not None:
                row.setdefault(name, []).append(value)
    return {kind: {name: _spread(values) for name, values in rows.items()} for kind, rows in sorted(by_kind.items())}


def summed(samples: list[tuple[float, dict[str, float]]], key: str) -> float:
    """A counter over the whole run: the session manager restarts its totals from zero, so
    sum the highest value seen in each stretch between restarts (a floor: what was counted
    between the last sample and a kill is missed)."""
    total = 0.0
    best = 0.0
    for _, stats in samples:
        value = stats.get(key, 0.0)
        if value < best:
            total += best
            best = value
        else:
            best = value
    return total + best


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median": round(statistics.median(values), 3),
        "p90": round(_percentile(values, 0.9), 3),
        "max": round(max(values), 3),
        "min": round(min(values), 3),
    }


def _percentile(values: list[float] | list[int], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# ---------------------------------------------------------------------- text


def text(report: dict[str, Any]) -> str:
    settings = report["settings"]
    tasks = report["tasks"]
    lines = [
        f"chaos seed {report['seed']}: {report['hosts']}, {settings['nodes']} nodes x {settings['slots']} slots, "
        f"{tasks['submitted']} tasks in {settings['sessions']} sessions, {len(report['faults'])} faults; "
        f"heartbeat {settings['heartbeat']}s x {settings['liveness']}, drain {settings['drain']}s; "
        f"{report['seconds']}s",
        "tasks: " + ", ".join(f"{k} {v}" for k, v in tasks.items()),
        "faults: " + ", ".join(f"{k} {v}" for k, v in sorted(Counter(f["kind"] for f in report["faults"]).items())),
        "invariants:",
    ]
    for check in report["invariants"]:
        mark = "PASS" if check["ok"] else ("FAIL" if check["asserted"] else "WARN")
        lines.append(f"  {mark} {check['name']}: {check['detail']}")
        lines += [f"       {example}" for example in check["examples"][:5]]
    rerun = report["reexecutions"]
    lines.append(
        f"re-executions: {rerun['total']} (expected {rerun['expected']}, unexpected {rerun['unexpected']}; "
        f"unexpected by hole: {rerun['unexpected_by_hole'] or '-'}; unexpected by the issue's words alone, "
        f"which excuse a session manager away past detection + drain: {rerun['unexpected_by_the_issues_words']})"
    )
    faults = {str(f["index"]): f for f in report["faults"]}
    if rerun["by_fault"]:
        lines.append(f"  {'fault':>5} {'kind':<9} {'target':<6} {'band':<17} {'dur':>6} {'runs':>5} {'exp':>4}  why")
    for key, row in sorted(rerun["by_fault"].items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else -1):
        f = faults.get(key)
        head = (
            f"  {key:>5} {f['kind']:<9} {f['target']:<6} {f['band']:<17} {f['duration']:6.2f}"
            if f
            else f"  {'-':>5} {'none':<9} {'':<6} {'':<17} {'':>6}"
        )
        why = "; ".join(f"{n}x {w}" for w, n in row["why"].items())
        lines.append(f"{head} {row['count']:5d} {row['expected']:4d}  {why}")
    recalls = report["recalls"]
    lines.append(
        f"recalls per task (attempt - 1 - retry_count): mean {recalls['mean']}, p99 {recalls['p99']:g}, "
        f"max {recalls['max']} ({recalls['tasks_recalled']} of {recalls['tasks_launched']} tasks; "
        f"highest attempt {recalls['max_attempt']}); task_recalls_total over restarts >= "
        f"{report['counters']['task_recalls_total']:g}"
    )
    lines.append("recovery timings, seconds (median / max over the faults of each kind):")
    lines.append(f"  {'kind':<9} " + " ".join(f"{name:>17}" for name in TIMINGS))
    for kind, rows in report["recovery"].items():
        cells = [f"{rows[n]['median']:>7.2f} / {rows[n]['max']:>6.2f}" if n in rows else f"{'-':>17}" for n in TIMINGS]
        lines.append(f"  {kind:<9} " + " ".join(cells))
    lines.append(f"rerun this seed: {report['command']}")
    return "\n".join(lines)
