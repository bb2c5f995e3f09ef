"""Node registration: who may register, and the executor snapshot a registered node gets back.

`NodeLinks` owns the link table; this module decides for it, on the turn it is given. `refusal` says whether a
`RegisterNode` must be refused, `reconcile` settles the node's executors against what it
reported, and `registered` builds the `Registered` reply from the executors it keeps.

Rules (DESIGN 5 and 6a; identity.py says what proves an executor manager):
- a node speaking another protocol version, or with a bad name, is refused;
- with CURVE, a registration whose key is not the node's is refused (`Unauthorized`);
- a registration that names a live node's incarnation (the node is Connected, or Draining
  within its drain, also after a session-manager restart) without that executor manager's
  secret is refused (`Unauthorized`): it is someone else claiming to be it;
- a second live executor manager with a name already Connected is refused (`DuplicateNode`)
  while the first was heard from within two heartbeat intervals; after that it is a restarted
  executor manager and takes the name (it keeps nothing: see below);
- only the same executor manager keeps executors: those it did not report are lost whatever
  their state (their running tasks are retried), and those it reported but should not hold are
  left out of the snapshot, so it kills them. Any other registration keeps none, whatever it
  lists, so the snapshot (task inputs, common data) goes only to the process that was given it;
- the snapshot carries each kept executor's desired state: session, application and tasks.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from flamed.core import identity
from flamed.core.executor_reports import lose_executor
from flamed.core.node_link import LinkView
from flamed.core.state import ClusterState, ExecutorEntry
from flamed.core.turn import Turn
from flamed.core.validation import check_name
from flamed.core.views import session_contexts
from protocol import backend as be
from protocol.codec import PROTOCOL_VERSION
from protocol.errors import ErrorCode
from protocol.types import ConnectionState

log = logging.getLogger("flamed.session_manager")


class Refusal(NamedTuple):
    """Why a registration is refused: the `Error` it gets and, when the sender may not speak
    for the node, the counter it goes to (the links count it and log it, rate-limited)."""

    code: ErrorCode
    message: str
    identity_counter: str = ""


def refusal(turn: Turn, message: be.RegisterNode, link: LinkView | None, sender: identity.Sender) -> Refusal | None:
    """Why `message` must be refused, or None to register it. `link` is the current link of the
    node's name, if any; `sender` who sent it."""
    name = message.node.name
    if message.protocol_version != PROTOCOL_VERSION:
        return Refusal(ErrorCode.VersionMismatch, f"session manager speaks protocol {PROTOCOL_VERSION}")
    if bad := check_name("node", name):
        return Refusal(ErrorCode.BadMessage, bad)
    if mismatch := identity.key_refusal(name, sender):
        return Refusal(ErrorCode.Unauthorized, f"refused RegisterNode: {mismatch}", "node_key_mismatches")
    if link is None or link.connection is ConnectionState.Closed:
        return None
    if message.incarnation == link.incarnation:
        if identity.same_process(turn.state.nodes.get(name), message.incarnation, message.secret):
            return None
        return Refusal(
            ErrorCode.Unauthorized,
            f"refused RegisterNode: node {name!r} is held by a live executor manager of that incarnation, "
            "and this connection did not prove to be it (no or a wrong secret)",
            "node_impersonations_refused",
        )
    quiet = turn.now.mono - link.last_seen
    if link.connection is ConnectionState.Connected and quiet < 2 * turn.config.heartbeat_interval:
        turn.count("duplicate_nodes_refused")
        log.warning("node %s: refused a second executor manager (incarnation %s)", name, message.incarnation)
        return Refusal(
            ErrorCode.DuplicateNode,
            f"node name {name!r} is held by a live executor manager (last heard {quiet:.1f}s ago); "
            "start this one with another --node-name",
        )
    return None


def reconcile(turn: Turn, name: str, reported: set[str]) -> list[ExecutorEntry]:
    """Lose the executors of node `name` it did not report; return the ones it keeps."""
    kept = []
    for executor in [e for e in turn.state.executors.values() if e.node == name]:
        if executor.id in reported:
            kept.append(executor)
        else:
            lose_executor(turn, executor, "not reported by its node at registration")
    orphans = reported - {e.id for e in kept}
    if orphans:
        turn.count("orphan_executors_released", len(orphans))
        log.info("node %s: releasing %d executors it should not hold", name, len(orphans))
    return kept


def registered(turn: Turn, epoch: int, kept: list[ExecutorEntry]) -> be.Registered:
    """The reply to a registration: the new epoch and the full snapshot of kept executors."""
    return be.Registered(
        epoch=epoch,
        executors=[assignment(turn.state, e) for e in kept],
        heartbeat_interval=turn.config.heartbeat_interval,
        heartbeat_liveness=turn.config.heartbeat_liveness,
        cache_endpoint=turn.config.cache_endpoint,
        applications=sorted(turn.state.applications),
    )


def assignment(state: ClusterState, executor: ExecutorEntry) -> be.ExecutorAssignment:
    """The desired state of one executor, as its node must hold it."""
    session_ctx = app_ctx = None
    tasks: list[be.TaskAssignment] = []
    if executor.session_id is not None:
        session = state.sessions[executor.session_id]
        session_ctx, app_ctx = session_contexts(state, session)
        tasks = [
            be.TaskAssignment(task_id=t, attempt=a, input=session.live(t).input) for t, a in executor.tasks.items()
        ]
    return be.ExecutorAssignment(
        executor_id=executor.id,
        state=str(executor.state),
        resreq=executor.resreq,
        session=session_ctx,
        application=app_ctx,
        tasks=tasks,
    )
