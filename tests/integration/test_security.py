"""CURVE + ZAP on a real session manager: only listed keys get in, each on its own socket, and a
node key cannot speak for another node. A refused CURVE peer is never answered, so "refused" is
"no reply within a short timeout" (and, for nodes, "never Ready").

What would break: a CURVE server without ZAP_ENFORCE_DOMAIN accepts any key (ZEROMQ.md 4.1);
one allow-list for both sockets lets a client key register a node; no User-Id check lets node
n1 report for n2; loading a world-readable secret key leaks the cluster's identity."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import zmq.auth

from flamed.cli.flamed import main
from tests.support.daemons import Daemons, RawClient, free_port
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REFUSED_WITHIN = 1.5


class Keys:
    """Key pairs from `flamed keygen`, allow-list directories and per-role config files."""

    def __init__(self, d: Daemons) -> None:
        self.dir = d.dir / "keys"
        for name in ("server", "alice", "mallory", "n1", "n2"):
            assert main(["keygen", "--out", str(self.dir), "--name", name]) == 0
        self.clients = d.dir / "allow-clients"
        self.nodes = d.dir / "allow-nodes"
        for allow, names in ((self.clients, ["alice"]), (self.nodes, ["n1", "n2"])):
            allow.mkdir(mode=0o700)
            for name in names:
                shutil.copy(self.dir / f"{name}.key", allow / f"{name}.key")
        self.d = d
        with d.config.open("a") as f:
            f.write(
                f'[security]\ncurve = true\nserver_secret_key = "{self.dir}/server.key_secret"\n'
                f'allow_dir_clients = "{self.clients}"\nallow_dir_nodes = "{self.nodes}"\n'
            )

    def pair(self, name: str) -> tuple[bytes, bytes]:
        public, secret = zmq.auth.load_certificate(self.dir / f"{name}.key_secret")
        assert secret is not None
        return public, secret

    def client(self, name: str, timeout: float = 10.0) -> RawClient:
        server, _ = zmq.auth.load_certificate(self.dir / "server.key")
        public, secret = self.pair(name)
        return RawClient(self.d.frontend, timeout, curve=(server, public, secret))

    def em_config(self, key_name: str) -> Path:
        path = self.d.dir / f"em-{key_name}.toml"
        base = self.d.config.read_text().split("[security]")[0]
        path.write_text(
            base + f'[security]\ncurve = true\nserver_public_key = "{self.dir}/server.key"\n'
            f'client_secret_key = "{self.dir}/{key_name}.key_secret"\n'
        )
        return path


def refused(client: RawClient) -> bool:
    with client:
        try:
            client.call({"type": "ListNodes"})
        except AssertionError:
            return True
        return False


def ready_nodes(keys: Keys) -> list[str]:
    with keys.client("alice") as client:
        nodes = client.call({"type": "ListNodes"})["nodes"]
    return sorted(n["name"] for n in nodes if n["state"] == "Ready")


def test_clients_without_key_or_with_unknown_key_are_refused_and_a_listed_key_is_served(daemons: Daemons) -> None:
    """Breaks if a CURVE session manager serves a plain client or an unlisted key, refuses a listed one, or
    does not re-read its allow-list when the directory changes."""
    keys = Keys(daemons)
    daemons.start_session_manager()
    with keys.client("alice") as client:
        assert wait_for("a reply to alice", lambda: client.call({"type": "Ping"}).get("type") == "Pong")
    assert refused(RawClient(daemons.frontend, REFUSED_WITHIN)), "a plain client was served"
    assert refused(keys.client("mallory", REFUSED_WITHIN)), "an unlisted key was served"
    # The allow-list is re-read when its directory changes: listing mallory lets it in.
    shutil.copy(keys.dir / "mallory.key", keys.clients / "mallory.key")
    with keys.client("mallory") as client:
        assert client.call({"type": "Ping"})["type"] == "Pong"
    assert "refused clients connection" in daemons.log("sm")


def test_node_key_as_client_and_client_key_as_node_are_refused(daemons: Daemons) -> None:
    """Breaks if a node's key is served on the client frontend, or a client's key gets a node registered on the
    backend."""
    keys = Keys(daemons)
    daemons.start_session_manager()
    assert refused(keys.client("n1", REFUSED_WITHIN)), "a node key was served on the frontend"
    daemons.start_executor_manager("n1", 1, "--config", str(keys.em_config("alice")))
    daemons.start_executor_manager("n2", 1, "--config", str(keys.em_config("n2")))
    assert wait_for("n2 Ready", lambda: ready_nodes(keys) == ["n2"] or None)
    time.sleep(2.0)  # n1 (with a client key) keeps retrying its handshake: it must never get in
    assert ready_nodes(keys) == ["n2"]
    assert "refused nodes connection" in daemons.log("sm")


def test_a_node_key_cannot_register_another_node(daemons: Daemons) -> None:
    """Breaks if a node's key can register under another node's name (the mismatch must be refused and logged)."""
    keys = Keys(daemons)
    daemons.start_session_manager()
    daemons.start_executor_manager("n2", 1, "--config", str(keys.em_config("n1")))  # n1's key, claims n2
    wait_for(
        "the mismatch to be logged", lambda: "claims node 'n2' but its key is that of node 'n1'" in daemons.log("sm")
    )
    assert ready_nodes(keys) == []


def test_cluster_runs_a_task_over_curve(daemons: Daemons) -> None:
    """Breaks if a whole cluster with CURVE on both sockets cannot run a task end to end."""
    keys = Keys(daemons)
    daemons.start_session_manager()
    daemons.start_executor_manager("n1", 1, "--config", str(keys.em_config("n1")))
    wait_for("n1 Ready", lambda: ready_nodes(keys) == ["n1"] or None)
    with keys.client("alice", 30.0) as client:
        client.call({"type": "CreateSession", "session_id": "s1", "spec": {"application": "flmping"}})
        assert client.call({"type": "CreateTasks", "session_id": "s1", "inputs": [b""]})["type"] == "TasksCreated"

        def done() -> bool:
            task = client.call({"type": "GetTask", "session_id": "s1", "task_id": 1})["task"]
            return bool(task["state"] == "Succeed")

        wait_for("the task to succeed over CURVE", done)


def test_a_secret_key_readable_by_others_stops_the_session_manager(daemons: Daemons) -> None:
    """Breaks if the session manager starts with a secret key readable by group or others, or fails without
    saying to chmod 600 it."""
    keys = Keys(daemons)
    secret = keys.dir / "server.key_secret"
    secret.chmod(0o644)
    proc = daemons.start_session_manager()
    assert proc.wait(30) == 1
    log = daemons.log("sm")
    assert f"chmod 600 {secret}" in log, log
    assert "readable by group or others" in log, log


def test_keygen_writes_private_files_in_a_private_directory(tmp_path: Path) -> None:
    """Breaks if flamed keygen writes keys others can read, overwrites an existing key, or writes into a
    directory others can read."""
    out = tmp_path / "curve"
    assert main(["keygen", "--out", str(out), "--name", "n1"]) == 0
    assert out.stat().st_mode & 0o777 == 0o700
    assert (out / "n1.key_secret").stat().st_mode & 0o777 == 0o600
    public, secret = zmq.auth.load_certificate(out / "n1.key_secret")
    assert secret is not None
    assert zmq.curve_public(secret) == public
    assert zmq.auth.load_certificate(out / "n1.key")[1] is None
    assert main(["keygen", "--out", str(out), "--name", "n1"]) == 1  # never overwrites a key
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o755)
    open_dir.chmod(0o755)
    assert main(["keygen", "--out", str(open_dir)]) == 1


def test_plain_mode_on_a_public_address_logs_a_loud_warning(daemons: Daemons) -> None:
    """Breaks if a plain (no CURVE) frontend on a public address starts without a SECURITY WARNING, or local
    addresses are taken for public ones."""
    from flamed.config import is_local_endpoint

    assert is_local_endpoint("tcp://127.0.0.1:8080")
    assert is_local_endpoint("ipc:///run/x")
    assert is_local_endpoint("tcp://[::1]:1")
    assert not is_local_endpoint("tcp://0.0.0.0:8080")
    daemons.frontend = f"tcp://0.0.0.0:{free_port()}"
    daemons.start_session_manager()
    wait_for("the warning", lambda: "SECURITY WARNING: frontend tcp://0.0.0.0:" in daemons.log("sm"))
    assert "backend" not in daemons.log("sm").split("SECURITY WARNING")[1].split("\n")[0]


def test_the_sdk_takes_its_keys_from_the_config_file(daemons: Daemons, monkeypatch: pytest.MonkeyPatch) -> None:
    """Breaks if the SDK ignores the CURVE keys of its config file (given, or found through $FLAME_CONF), or a
    refused key is not a FlameError naming the allow-list."""
    from flamed.client import FlameError, open_connection

    keys = Keys(daemons)
    daemons.start_session_manager()
    for name, served in (("alice", True), ("mallory", False)):
        config = daemons.dir / f"client-{name}.toml"
        config.write_text(
            f'[security]\ncurve = true\nserver_public_key = "{keys.dir}/server.key"\n'
            f'client_secret_key = "{keys.dir}/{name}.key_secret"\n'
        )
        if served:  # the file given to open_connection
            with open_connection(daemons.frontend, config=str(config), timeout=10.0) as conn:
                assert "flmping" in [a.name for a in conn.list_applications()]
        else:  # the file found through $FLAME_CONF
            monkeypatch.setenv("FLAME_CONF", str(config))
            with pytest.raises(FlameError, match="allow_dir_clients"):
                open_connection(daemons.frontend, timeout=REFUSED_WITHIN)


@pytest.mark.timeout(60)
def test_an_oversized_request_fails_at_once_with_the_limit_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK refuses a request the session manager would drop unread (over MAXMSGSIZE)."""
    from flamed import client as flame

    config = tmp_path / "client.toml"
    config.write_text("[limits]\nmax_message_size = 1000\n")
    monkeypatch.setenv("FLAME_CONF", str(config))
    d = Daemons()
    try:
        d.start_session_manager()
        connection = flame.open_connection(d.frontend, config=str(config), timeout=20)
        session = connection.create_session("flmping")
        started = time.monotonic()
        with pytest.raises(flame.FlameError) as caught:
            session.create_task(b"x" * 5000)
        assert caught.value.code is flame.FlameErrorCode.INVALID_ARGUMENT
        assert "limits.max_message_size" in caught.value.message
        assert time.monotonic() - started < 5
        assert session.create_task(b"small").id == 1
        connection.close()
    finally:
        print(d.dump_logs())
        d.cleanup()
