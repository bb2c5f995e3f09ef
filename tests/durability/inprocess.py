"""A session manager running in the test's own thread, turn by turn, with a raw client."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from flamed.config import Config
from flamed.session_manager import SessionManager, SessionManagerOptions
from flamed.storage import Storage
from tests.support.daemons import RawClient


class InProcess:
    def __init__(self, state_dir: Path, *, compact_in_child: bool = False, **storage: Any) -> None:
        """`compact_in_child`: snapshots by a compactor process (integration tests only); off,
        the journal writes them in process."""
        self.dir = Path(tempfile.mkdtemp(prefix="fld-", dir="/tmp"))  # ipc paths must be short
        self.state_dir = state_dir
        self.storage_options = storage
        self.compact_in_child = compact_in_child
        self.manager: SessionManager | None = None
        self.client: RawClient | None = None

    def start(self) -> SessionManager:
        storage = Storage.open(self.state_dir, **self.storage_options)
        options = SessionManagerOptions(
            config=Config(), frontend=f"ipc://{self.dir}/fe", backend=f"ipc://{self.dir}/be", state_dir=self.state_dir
        )
        self.manager = SessionManager(options, storage)
        self.manager.journal.compact_in_child = self.compact_in_child
        self.manager.journal.compact_above_tasks = -1  # the tests' states are small: compact anyway
        self.manager.start()
        self.client = RawClient(options.frontend, timeout=10)
        return self.manager

    def stop(self) -> None:
        if self.client is not None:
            self.client.sock.close(0)
            self.client = None
        if self.manager is not None:
            self.manager.close()
            self.manager = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def call(self, message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Send a request and run the manager's loop until its reply arrives."""
        assert self.manager is not None
        assert self.client is not None
        request_id = self.client.send(message)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.manager.loop.run_once(max_wait=0.02)
            while self.client.sock.poll(0):
                reply = self.client.receive(0.1)
                if reply.get("request_id") == request_id:
                    return reply
        raise AssertionError(f"no reply to {message!r} within {timeout}s")
