"""A client that asks for more results at once than the session manager lets it watch: the SDK
holds the extra creates back (flow control, flamed/client/batching.py) instead of failing them
with `LimitExceeded` (limits.max_watches_per_client)."""

from __future__ import annotations

import pytest

from tests.integration.test_end_to_end import register_recorder
from tests.support.daemons import Daemons

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_many_turns_of_runs_never_pass_the_watch_limit(daemons: Daemons) -> None:
    """Breaks if the SDK opens more watches than `limits.max_watches_per_client` (3 here):
    twelve turns of runs while no node runs anything is twelve `CreateTasks{watch}` batches,
    and the ones past the third were refused. Also if held creates are lost, reordered or
    never sent once watches finish, or if the client does not learn the limit from `Welcome`."""
    from flamed import client as flame

    with daemons.config.open("a") as f:
        f.write("[limits]\nmax_watches_per_client = 3\n")
    daemons.start_session_manager()
    connection = flame.connect(daemons.frontend)
    assert connection.io.max_watches == 3
    register_recorder(flame, daemons.dir / "journal")
    session = flame.create_session("recorder", common_data=b"c")
    futures = []
    for turn in range(12):
        futures += [session.run(b"%d-%d" % (turn, i)) for i in range(5)]
        # A round trip: the I/O thread has taken these runs before the next ones (a new turn).
        assert flame.get_session(session.id).id == session.id
    daemons.start_executor_manager("n1", 2)
    daemons.wait_ready_nodes(1)
    wanted = [b"c:%d-%d" % (turn, i) for turn in range(12) for i in range(5)]
    assert [f.result(timeout=60) for f in futures] == wanted
    ids = [f.task_id for f in futures]  # type: ignore[attr-defined]  # TaskFuture
    assert ids == sorted(ids) == list(range(1, 61))  # created in the order asked for
    session.close()
