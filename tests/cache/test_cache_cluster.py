"""The object cache in a whole cluster: clients and instances find it through the session
manager, common data travels by reference (read from the node-local copy by a second instance),
the agent API keeps a shared context in it, and deleting a session removes its objects."""

from __future__ import annotations

import pickle
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from flamed import client as flame
from flamed.client.cache import ObjectRef, get_object, put_object
from flamed.client.default import connection as default_connection
from flamed.service import Session
from tests.cache.conftest import cache_stats, configure, fresh, wait_cache_ready
from tests.support.daemons import REPO, Daemons
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

SERVICES = REPO / "tests" / "cache" / "services"


@pytest.fixture
def cache_cluster(cache_daemons: Daemons, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemons]:
    """Session manager, object cache, one executor manager; this process's SDK connected, and
    told nothing about the cache (it must learn it from the session manager)."""
    monkeypatch.delenv("FLAME_CACHE_ENDPOINT")
    configure(cache_daemons)
    cache_daemons.start_session_manager()
    cache_daemons.start_object_cache()
    cache_daemons.start_executor_manager("n1", 2)
    cache_daemons.wait_ready_nodes(1)
    wait_cache_ready(cache_daemons)
    flame.connect(cache_daemons.frontend)
    yield cache_daemons
    flame.disconnect()


def register(name: str, script: str, **attrs: object) -> None:
    flame.register_application(
        name,
        flame.ApplicationAttributes(
            command=sys.executable,
            arguments=[str(SERVICES / script)],
            environments={"PYTHONPATH": str(REPO)},
            **attrs,  # type: ignore[arg-type]  # the test's keyword arguments, passed on untyped
        ),
    )


def test_common_data_by_reference_and_the_node_local_copy(cache_cluster: Daemons) -> None:
    """A 16 MB object is the common data of two sessions, one after the other, on one node: the
    first instance reads it from the cache and leaves a node-local copy; the second instance
    (another process) reads that copy, not the network. Both learned the cache's endpoint from
    their executor manager, and the client from the session manager."""
    assert default_connection().cache_endpoint == cache_cluster.cache
    register("refs", "ref_svc.py", max_instances=1, delay_release=30.0)  # one instance per session
    array = np.arange(2_000_000, dtype=np.float64)
    ref = put_object("refs/shared", {"name": "weights", "array": array})
    facts = []
    for _ in range(2):
        session = flame.create_session("refs", common_data=ref.encode())
        for _ in range(2):
            output = session.invoke(b"")
            assert output is not None
            facts.append(pickle.loads(output))
        session.close()
    first, again, second, _ = facts
    assert all(f["name"] == "weights" and f["sum"] == float(array.sum()) for f in facts)
    assert first["endpoint"] == cache_cluster.cache
    assert first["writeable"]
    assert first["local_hits"] == 0
    assert again["pid"] == first["pid"]
    assert again["local_hits"] == 0  # its own copy
    assert second["pid"] != first["pid"]
    assert second["local_hits"] == 1


def test_deleting_a_session_removes_its_objects(cache_cluster: Daemons) -> None:
    """Objects under `<app>/<session>` go once the session is deleted; objects of a session
    that never existed (a name only) stay. Would break if the cache deleted on "not found"
    alone, or never looked."""
    register("keeper", "ref_svc.py")
    session_id = "keeper-del1"
    doomed = [put_object(f"keeper/{session_id}", i) for i in range(3)]
    kept = put_object("keeper/shared", "stays")
    flame.create_session("keeper", session_id=session_id)
    wait_for("the cache to see the session alive", lambda: cache_stats(cache_cluster)["sessions_live"] >= 1)
    flame.close_session(session_id)
    assert get_object(fresh(doomed[0])) == 0  # closed is not deleted
    flame.delete_session(session_id)

    def gone() -> bool:
        try:
            get_object(fresh(doomed[0]))
        except flame.FlameError as exc:
            return exc.code is flame.FlameErrorCode.NOT_FOUND
        return False

    wait_for("the deleted session's objects to go", gone)
    for ref in doomed[1:]:
        with pytest.raises(flame.FlameError):
            get_object(fresh(ref))
    assert get_object(fresh(kept)) == "stays"
    assert cache_stats(cache_cluster)["sessions_removed_total"] == 1
    assert (cache_cluster.dir / "cache-state" / "live").exists()
    assert not list((cache_cluster.dir / "cache-state" / "live").iterdir())


def test_an_agent_session_shares_its_context_with_its_instances(cache_cluster: Daemons) -> None:
    """flamepy's service API end to end: objects in and out, the context written by the
    instance (an async entrypoint) read by the client, the session reopened by id, an
    entrypoint's exception reaching the caller, the context manager closing the session."""
    register("agent", "agent_svc.py")
    with Session("agent", ctx=[]) as session:
        assert session.invoke(("say", "a")) == ("echo", "a")
        assert session.invoke(("say", "b")) == ("echo", "b")
        assert session.context() == ["a", "b"]
        assert session.invoke(("context",)) == ["a", "b"]
        session_id = session.id()
        assert session_id is not None
        assert session_id.startswith("agent-")
        reopened = Session(session_id=session_id)
        assert reopened.id() == session_id
        assert reopened.invoke(("say", "c")) == ("echo", "c")
        assert session.context() == ["a", "b", "c"]
        with pytest.raises(flame.FlameError, match="refused x"):
            session.invoke(("fail", "x"))
    assert flame.get_session(session_id).state == flame.SessionState.CLOSED
    ref = ObjectRef.decode(flame.get_session(session_id).common_data() or b"")
    assert ref.key.startswith(f"agent/{session_id}/")
    assert get_object(fresh(ref)) == ["a", "b", "c"]
    with Session("agent") as plain:  # no context: the instance sees None
        assert plain.context() is None
        assert plain.invoke(("context",)) is None


def test_the_readme_cache_example_runs(cache_cluster: Daemons) -> None:
    """The object-cache example of the README, as printed, against a cluster with a cache."""
    from tests.integration.test_readme import block_with, run

    done = run(block_with("flame.put_object("), cache_cluster.dir, cache_cluster.frontend)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["(1000, 1000)", "[{'step': 1}]", "3 [1. 1. 1.]"]


def test_agent_session_argument_errors_are_flamepys() -> None:
    """Breaks if the agent Session's argument errors stop matching flamepy's (neither or both of name and
    session_id)."""
    with pytest.raises(ValueError, match="Either 'name' or 'session_id' must be provided"):
        Session(name=None, session_id=None)
    with pytest.raises(ValueError, match="Cannot provide both 'name' and 'session_id'"):
        Session(name="agent", session_id="agent-1")
