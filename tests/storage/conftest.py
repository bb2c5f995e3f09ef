"""Factories for storage tests: real files in a temporary state directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flamed.storage import Storage


def payload(n: int) -> bytes:
    """A distinct, recognisable record of about 40 bytes."""
    return f"record-{n:06d}-".encode() + bytes([n % 251]) * 24


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def open_storage(state_dir: Path) -> Iterator[Callable[..., Storage]]:
    """Opens storages on `state_dir` (fsync never unless asked) and closes them afterwards."""
    opened: list[Storage] = []

    def factory(**options: Any) -> Storage:
        options.setdefault("fsync", "never")
        storage = Storage.open(state_dir, **options)
        opened.append(storage)
        return storage

    yield factory
    for storage in opened:
        storage.close()


def write(storage: Storage, payloads: list[bytes], batch: int = 1) -> None:
    for start in range(0, len(payloads), batch):
        for item in payloads[start : start + batch]:
            storage.append(item)
        storage.commit(0.0)


def segments(state_dir: Path) -> list[Path]:
    return sorted(state_dir.glob("wal-*.log"))
