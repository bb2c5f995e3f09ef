"""Executor state machine, session-manager side (FLAME.md 1.5, DESIGN 4).

Void -created-> Idle -bind-> Binding -bound-> Bound -unbind-> Unbinding -unbound-> Idle;
Idle -release-> Releasing -released-> Released. An executor created for a session is bound
in the same turn (Void -bind-> Binding): its node creates it, then binds it, in order. A bind
failure goes Binding -> Unbinding; an instance that exits under a Bound executor goes Bound ->
Unbinding (`lost`). When its node is cleaned up, an executor in any live state goes straight
to Released (`node_lost`): nothing on the node can be asked any more.
"""

from __future__ import annotations

import enum

from flamed.core.machines import Machine
from protocol.types import ExecutorState as E


class ExecutorTrigger(enum.StrEnum):
    created = "created"
    bind = "bind"
    bound = "bound"
    bind_failed = "bind_failed"
    unbind = "unbind"
    lost = "lost"
    unbound = "unbound"
    release = "release"
    released = "released"
    node_lost = "node_lost"


X = ExecutorTrigger

_table = {
    (E.Void, X.created): E.Idle,
    (E.Void, X.release): E.Releasing,
    (E.Void, X.bind): E.Binding,
    (E.Idle, X.bind): E.Binding,
    (E.Idle, X.release): E.Releasing,
    (E.Binding, X.bound): E.Bound,
    (E.Binding, X.bind_failed): E.Unbinding,
    (E.Binding, X.unbind): E.Unbinding,
    (E.Bound, X.unbind): E.Unbinding,
    (E.Bound, X.lost): E.Unbinding,
    (E.Unbinding, X.unbound): E.Idle,
    (E.Releasing, X.released): E.Released,
}
_table.update({(state, X.node_lost): E.Released for state in E if state is not E.Released})

EXECUTOR = Machine[E, ExecutorTrigger]("executor", _table)
