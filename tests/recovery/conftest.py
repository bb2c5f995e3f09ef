from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.conftest import daemons
from tests.integration.daemons import Daemons
from tests.recovery.cluster import Cluster

__all__ = ["daemons"]


@pytest.fixture
def cluster(daemons: Daemons) -> Iterator[Cluster]:
    """A session manager with the small recovery timeouts and the journal application."""
    c = Cluster(daemons)
    c.start_sm()
    c.register_app()
    yield c
    if c._conn is not None:
        c._conn.close()
