"""The integration tests' fixtures (`daemons`, `cluster`) are the suite's, in
tests/support/fixtures.py. The names stay importable from here for older imports."""

from __future__ import annotations

from tests.support.fixtures import cluster, daemons

__all__ = ["cluster", "daemons"]
