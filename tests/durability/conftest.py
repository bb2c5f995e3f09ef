"""The in-process session manager the durability tests drive (tests/durability/inprocess.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.durability.inprocess import InProcess


@pytest.fixture
def in_process(tmp_path: Path) -> Iterator[InProcess]:
    process = InProcess(tmp_path / "state")
    try:
        yield process
    finally:
        process.cleanup()
