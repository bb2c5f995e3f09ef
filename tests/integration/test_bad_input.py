"""Bad input of every kind gets a clear error, and the daemons keep serving after it."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import msgspec
import pytest
import zmq

from protocol.codec import HEADER
from tests.support.daemons import Daemons, RawClient
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def run_task(client: RawClient, session_id: str) -> dict[str, object]:
    created = client.call({"type": "CreateSession", "session_id": session_id, "spec": {"application": "flmping"}})
    assert created["type"] == "SessionReply", created
    tasks = client.call({"type": "CreateTasks", "session_id": session_id, "inputs": [b""]})
    assert tasks["type"] == "TasksCreated", tasks

    def done() -> dict[str, object] | None:
        task = client.call({"type": "GetTask", "session_id": session_id, "task_id": 1})["task"]
        return task if task["state"] in ("Succeed", "Failed") else None

    return wait_for("the task to finish", done, timeout=30)


def test_frontend_answers_bad_frames_with_errors_and_keeps_serving(cluster: Daemons) -> None:
    """Breaks if a bad frame or request on the frontend gets no typed Error (with its request id when it can be
    read), or stops the session manager serving."""
    with cluster.client() as client:
        bad: list[tuple[list[bytes], str, str]] = [
            ([b"garbage"], "BadMessage", "expected 2 frames"),
            ([b"XXXX", b"\x80"], "BadMessage", "bad header"),
            ([b"FLM\x09", b"\x80"], "VersionMismatch", "version 9"),
            ([HEADER, b"\xc1\xff\x00"], "BadMessage", "malformed"),
            ([HEADER, msgspec.msgpack.encode({"type": "Teleport", "request_id": 7})], "BadMessage", "Teleport"),
            (
                [HEADER, msgspec.msgpack.encode({"type": "GetSession", "session_id": ["x"], "request_id": 8})],
                "BadMessage",
                "session_id",
            ),
            ([HEADER, b"\x00" * 100_000], "BadMessage", ""),
        ]
        for frames, code, words in bad:
            client.send_frames(frames)
            reply = client.receive()
            assert reply["type"] == "Error", (frames[:2], reply)
            assert reply["code"] == code, (frames[:2], reply)
            assert words in reply["message"], (frames[:2], reply)
        typed = client.call({"type": "GetSession", "session_id": ["x"], "request_id": 99})
        assert typed["request_id"] == 99
        assert typed["code"] == "BadMessage"
        cases: list[tuple[dict[str, Any], str]] = [
            ({"type": "GetSession", "session_id": "no-such-session"}, "NotFound"),
            ({"type": "CreateTasks", "session_id": "no-such-session", "inputs": [b""]}, "NotFound"),
            ({"type": "CreateSession", "session_id": "s", "spec": {"application": "no-such-app"}}, "NotFound"),
            ({"type": "GetApplication", "name": "no-such-app"}, "NotFound"),
            ({"type": "CreateSession", "session_id": "a b/c", "spec": {"application": "flmping"}}, "InvalidArgument"),
        ]
        for request, code in cases:
            reply = client.call(request)
            assert reply["type"] == "Error", (request, reply)
            assert reply["code"] == code, (request, reply)
            assert reply["message"]
        task = run_task(client, "after-bad-frontend")
        assert task["state"] == "Succeed", task
    assert cluster.alive("sm")
    assert cluster.alive("n1")


def test_backend_refuses_bad_frames_and_impostors_and_keeps_serving(cluster: Daemons) -> None:
    """Breaks if bad frames or a heartbeat from an unregistered peer on the backend are not refused, or stop
    the cluster from running a task."""
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(cluster.backend)
    try:
        for frames in (
            [b"junk"],
            [HEADER, b"\xc1"],
            [HEADER, msgspec.msgpack.encode({"type": "Heartbeat", "epoch": "one", "seq": 1})],
            [HEADER, msgspec.msgpack.encode({"type": "Heartbeat", "epoch": 12345, "seq": 1})],
        ):
            sock.send_multipart(frames)
            assert sock.poll(10_000), f"no answer to {frames}"
            reply = msgspec.msgpack.decode(sock.recv_multipart()[1])
            assert reply["type"] == "Error", reply
            assert reply["code"] in ("BadMessage", "Reregister"), reply
    finally:
        sock.close(0)
    with cluster.client() as client:
        task = run_task(client, "after-bad-backend")
        assert task["state"] == "Succeed", task
    assert cluster.alive("sm")
    assert cluster.alive("n1")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["-m", "flamed", "cluster", "--executors", "0"], "must be at least 1"),
        (["-m", "flamed", "session-manager", "--frontend", "http//nope"], "--frontend"),
        (["-m", "flamed", "executor-manager", "--slots", "many"], "not a whole number"),
        (["-m", "flamed", "bogus-command"], "invalid choice"),
        (["-m", "flamed.cli.flmping", "-t", "ten"], "ten"),
        (["-m", "flamed.cli.flmctl", "list"], "flmctl"),
        (["-m", "flamed.cli.flmctl", "view", "-s"], "expected one argument"),
    ],
)
def test_bad_command_lines_exit_with_a_one_line_reason(argv: list[str], words: str) -> None:
    """Breaks if a bad command line exits 0, prints a traceback, or does not say what is wrong."""
    result = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_bad_config_file_is_named_with_its_key(tmp_path: object, daemons: Daemons) -> None:
    """Breaks if a daemon started with a misspelled config key runs anyway, or exits without naming the key."""
    daemons.config.write_text("[recovery]\nheartbeat_intervall = 1.0\n")
    proc = daemons.start_session_manager()
    assert proc.wait(30) == 2
    assert "heartbeat_intervall" in daemons.log("sm")
